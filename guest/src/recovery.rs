//! The recovery key: a random X25519 key shown to the user once, whose
//! public half seals a copy of the KEK in the keyring header.
//!
//! ```text
//! eph        = random X25519 key (per wrap)
//! shared     = X25519(eph, recovery-public)
//! wrap-key   = HKDF-SHA256(shared, info = BIND("backendenc/v1/recovery-wrap-key", tenant-key, recovery-public, eph-public))
//! wrapped    = AES-256-GCM(wrap-key, KEK, BIND("backendenc/v1/kek-wrap/recovery", tenant-key, recovery-public, eph-public, kek-version))
//! ```
//! Sealing needs only the public half, so KEK rotation re-seals the new KEK
//! without the recovery key; the secret half never reaches disk.
//!
//! Display form: `BKR1-` then base32 (RFC 4648, no padding) of
//! `secret[32] ‖ check[2]`, in groups of five; `check` is the first two
//! bytes of `SHA-256("backendenc/v1/recovery-check" ‖ secret)` and catches typos.

use data_encoding::BASE32_NOPAD;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::aad::{RECOVERY_CHECK_LABEL, RECOVERY_WRAP_KEY_LABEL, RECOVERY_WRAP_LABEL, bind};
use crate::error::{Error, Result};
use crate::keys::{KeyEncryptionKey, RecoveryWrapKey, WrappedKey, fill_random};
use crate::tenant::TenantKey;

/// Prefix of the display form.
pub const DISPLAY_PREFIX: &str = "BKR1-";

/// The KEK sealed to a recovery key's public half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryWrap {
    /// The recovery key's public half.
    pub public: [u8; 32],
    /// The per-wrap ephemeral public key.
    pub ephemeral: [u8; 32],
    /// The KEK, wrapped.
    pub wrapped: WrappedKey,
}

/// The secret recovery key. Zeroized on drop; no `Debug` that prints it.
pub struct RecoveryKey(StaticSecret);

impl core::fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RecoveryKey(…)")
    }
}

impl RecoveryKey {
    /// A fresh random recovery key.
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        fill_random(bytes.as_mut())?;
        Ok(RecoveryKey(StaticSecret::from(*bytes)))
    }

    /// The public half, stored in the keyring header.
    pub fn public(&self) -> [u8; 32] {
        PublicKey::from(&self.0).to_bytes()
    }

    /// The form shown once to the user, e.g. `BKR1-ABCDE-FGHIJ-…`.
    pub fn to_display(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new([0u8; 34]);
        raw[..32].copy_from_slice(self.0.as_bytes());
        raw[32..].copy_from_slice(&check(self.0.as_bytes()));
        let b32 = Zeroizing::new(BASE32_NOPAD.encode(raw.as_ref()));
        let groups: Vec<&str> =
            b32.as_bytes().chunks(5).map(|c| core::str::from_utf8(c).expect("base32 is ASCII")).collect();
        Zeroizing::new(format!("{DISPLAY_PREFIX}{}", groups.join("-")))
    }

    /// Parses the display form: case, spaces and dashes are ignored.
    pub fn parse(text: &str) -> Result<Self> {
        let cleaned: Zeroizing<String> = Zeroizing::new(
            text.trim().chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_uppercase()).collect(),
        );
        let body = cleaned
            .strip_prefix("BKR1")
            .ok_or_else(|| Error::invalid("not a backendenc recovery key (it starts with BKR1-)"))?;
        let mut raw = Zeroizing::new(
            BASE32_NOPAD
                .decode(body.as_bytes())
                .map_err(|_| Error::invalid("recovery key has a character that is not base32"))?,
        );
        if raw.len() != 34 {
            raw.zeroize();
            return Err(Error::invalid("recovery key has the wrong length"));
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&raw[..32]);
        if check(&secret) != raw[32..] {
            return Err(Error::invalid("recovery key has a typo (its check digits do not match)"));
        }
        Ok(RecoveryKey(StaticSecret::from(*secret)))
    }

    /// Opens the KEK sealed in `wrap`.
    pub fn open_kek(&self, wrap: &RecoveryWrap, tenant: &TenantKey, kek_version: u32) -> Result<KeyEncryptionKey> {
        if self.public() != wrap.public {
            return Err(Error::BadRecoveryKey);
        }
        let shared = self.0.diffie_hellman(&PublicKey::from(wrap.ephemeral));
        wrap_key(shared.as_bytes(), tenant, &wrap.public, &wrap.ephemeral)
            .unwrap_kek(&wrap.wrapped, &wrap_aad(tenant, &wrap.public, &wrap.ephemeral, kek_version))
    }
}

/// Seals `kek` to the recovery public key `public`.
pub fn seal_kek(
    public: &[u8; 32],
    kek: &KeyEncryptionKey,
    tenant: &TenantKey,
    kek_version: u32,
) -> Result<RecoveryWrap> {
    let eph = RecoveryKey::generate()?;
    let ephemeral = eph.public();
    let shared = eph.0.diffie_hellman(&PublicKey::from(*public));
    if !shared.was_contributory() {
        return Err(Error::integrity("the recovery public key is a low-order point"));
    }
    let wrapped = wrap_key(shared.as_bytes(), tenant, public, &ephemeral)
        .wrap_kek(kek, &wrap_aad(tenant, public, &ephemeral, kek_version))?;
    Ok(RecoveryWrap { public: *public, ephemeral, wrapped })
}

fn wrap_key(shared: &[u8; 32], tenant: &TenantKey, public: &[u8; 32], ephemeral: &[u8; 32]) -> RecoveryWrapKey {
    RecoveryWrapKey::derive(shared, &bind(RECOVERY_WRAP_KEY_LABEL, &[tenant.as_bytes(), public, ephemeral]))
}

fn wrap_aad(tenant: &TenantKey, public: &[u8; 32], ephemeral: &[u8; 32], kek_version: u32) -> Vec<u8> {
    bind(RECOVERY_WRAP_LABEL, &[tenant.as_bytes(), public, ephemeral, &kek_version.to_be_bytes()])
}

fn check(secret: &[u8; 32]) -> [u8; 2] {
    let digest = Sha256::digest([RECOVERY_CHECK_LABEL, secret].concat());
    [digest[0], digest[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_round_trips_and_catches_typos() {
        let k = RecoveryKey::generate().unwrap();
        let shown = k.to_display();
        assert!(shown.starts_with(DISPLAY_PREFIX));
        assert_eq!(shown.len(), 5 + 55 + 10);
        let back = RecoveryKey::parse(&shown.to_lowercase().replace('-', " ")).unwrap();
        assert_eq!(back.public(), k.public());
        let mut typo: Vec<char> = shown.chars().collect();
        let i = 11; // a base32 digit (index 10 is a dash)
        typo[i] = if typo[i] == 'A' { 'B' } else { 'A' };
        let typo: String = typo.into_iter().collect();
        assert!(matches!(RecoveryKey::parse(&typo), Err(Error::InvalidArgument(m)) if m.contains("typo")));
        assert!(RecoveryKey::parse("hello").is_err());
        assert!(format!("{k:?}") == "RecoveryKey(…)");
    }

    #[test]
    fn seal_and_open() {
        let k = RecoveryKey::generate().unwrap();
        let kek = KeyEncryptionKey::generate().unwrap();
        let t = TenantKey::derive("u", "c").unwrap();
        let w = seal_kek(&k.public(), &kek, &t, 3).unwrap();
        assert_eq!(k.open_kek(&w, &t, 3).unwrap().expose_secret(), kek.expose_secret());
        assert!(k.open_kek(&w, &t, 4).is_err());
        assert!(k.open_kek(&w, &TenantKey::derive("u", "d").unwrap(), 3).is_err());
        let other = RecoveryKey::generate().unwrap();
        assert_eq!(other.open_kek(&w, &t, 3).unwrap_err(), Error::BadRecoveryKey);
        assert!(seal_kek(&[0; 32], &kek, &t, 3).is_err(), "low-order point refused");
    }
}
