//! Passphrase → master key.
//!
//! `MK = PBKDF2-HMAC-SHA256[salt, c](passphrase)`, 32 bytes (RFC 8018 §5.2).
//! The iteration count is bounded both ways: new vaults refuse fewer than
//! [`MIN_ITERATIONS`] (OWASP's floor), and no keyring may demand more than
//! [`MAX_ITERATIONS`], so a tampered file cannot make unlock hang.

use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::keys::MasterKey;

/// Default PBKDF2 iterations for new vaults (OWASP 2023, PBKDF2-HMAC-SHA256).
pub const DEFAULT_ITERATIONS: u32 = 600_000;
/// Fewest iterations a new vault accepts without the test-only override.
pub const MIN_ITERATIONS: u32 = 100_000;
/// Most iterations any keyring may demand.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Salt length in bytes.
pub const SALT_LEN: usize = 16;
/// Longest accepted passphrase, in bytes.
pub const MAX_PASSPHRASE_LEN: usize = 64 * 1024;
/// Algorithm id of PBKDF2-HMAC-SHA256 in the keyring header.
pub const KDF_PBKDF2_HMAC_SHA256: u8 = 1;

/// The stored, authenticated parameters of the passphrase KDF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// Random per-tenant salt.
    pub salt: [u8; SALT_LEN],
}

/// How strictly to check an iteration count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IterationPolicy {
    /// New vaults: at least [`MIN_ITERATIONS`].
    Enrol,
    /// Tests only: any count from 1. Makes offline guessing cheap.
    InsecureAllowLowForTesting,
    /// Opening an existing keyring: the count is authenticated by the KEK
    /// wrap, so only the ceiling is checked.
    Unlock,
}

impl KdfParams {
    /// Fresh parameters with a random salt.
    pub fn generate(iterations: u32, policy: IterationPolicy) -> Result<Self> {
        check_iterations(iterations, policy)?;
        let mut salt = [0u8; SALT_LEN];
        crate::keys::fill_random(&mut salt)?;
        Ok(KdfParams { iterations, salt })
    }

    /// `PBKDF2-HMAC-SHA256[salt, c](passphrase)`.
    pub fn derive_master_key(&self, passphrase: &[u8], policy: IterationPolicy) -> Result<MasterKey> {
        check_iterations(self.iterations, policy)?;
        if passphrase.len() > MAX_PASSPHRASE_LEN {
            return Err(Error::invalid(format!("passphrase is longer than {MAX_PASSPHRASE_LEN} bytes")));
        }
        let mut out = Zeroizing::new([0u8; 32]);
        pbkdf2::pbkdf2_hmac::<Sha256>(passphrase, &self.salt, self.iterations, out.as_mut());
        Ok(MasterKey::from_bytes(*out))
    }
}

/// Checks `iterations` against the floor (per policy) and the ceiling.
pub fn check_iterations(iterations: u32, policy: IterationPolicy) -> Result<()> {
    if iterations > MAX_ITERATIONS {
        let msg = format!("refusing {iterations} PBKDF2 iterations: more than the maximum of {MAX_ITERATIONS}");
        return Err(match policy {
            IterationPolicy::Unlock => Error::Integrity(msg),
            _ => Error::InvalidArgument(msg),
        });
    }
    let floor = match policy {
        IterationPolicy::Enrol => MIN_ITERATIONS,
        IterationPolicy::InsecureAllowLowForTesting | IterationPolicy::Unlock => 1,
    };
    if iterations < floor {
        let msg = format!("refusing {iterations} PBKDF2 iterations: fewer than the minimum of {floor}");
        return Err(match policy {
            IterationPolicy::Unlock => Error::Integrity(msg),
            _ => Error::InvalidArgument(msg),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_and_ceiling() {
        assert!(check_iterations(MIN_ITERATIONS - 1, IterationPolicy::Enrol).is_err());
        assert!(check_iterations(MIN_ITERATIONS, IterationPolicy::Enrol).is_ok());
        assert!(check_iterations(1, IterationPolicy::InsecureAllowLowForTesting).is_ok());
        assert!(check_iterations(0, IterationPolicy::InsecureAllowLowForTesting).is_err());
        assert!(matches!(check_iterations(MAX_ITERATIONS + 1, IterationPolicy::Unlock), Err(Error::Integrity(_))));
        assert!(matches!(check_iterations(0, IterationPolicy::Unlock), Err(Error::Integrity(_))));
    }

    #[test]
    fn salts_are_random() {
        let a = KdfParams::generate(MIN_ITERATIONS, IterationPolicy::Enrol).unwrap();
        let b = KdfParams::generate(MIN_ITERATIONS, IterationPolicy::Enrol).unwrap();
        assert_ne!(a.salt, b.salt);
    }
}
