//! The key schedule's types: one type per role, so that an API that takes a
//! KEK cannot be handed a DEK.
//!
//! ```text
//! MK  ──AES-256-GCM──▶ KEK ──AES-256-GCM──▶ DEK ──XAES-256-GCM──▶ data
//!                       └─HKDF-SHA256──▶ body key (seals the keyring body)
//! ```
//! **Invariants:** key bytes never leave the component; a KEK only ever
//! encrypts other keys; every key is zeroized on drop and has no `Debug`
//! that prints it.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};

/// Length of every key in the hierarchy.
pub const KEY_LEN: usize = 32;
/// AES-256-GCM nonce length.
pub const GCM_NONCE_LEN: usize = 12;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// Length of a wrapped key: nonce ‖ ciphertext ‖ tag.
pub const WRAPPED_KEY_LEN: usize = GCM_NONCE_LEN + KEY_LEN + TAG_LEN;

/// Fills `buf` from the platform CSPRNG (`wasi:random` inside the component).
pub fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::Storage(format!("random source failed: {e}")))
}

macro_rules! secret_key {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Zeroize, ZeroizeOnDrop)]
        pub struct $name(Box<[u8; KEY_LEN]>);

        impl $name {
            /// Takes ownership of key bytes (the caller's copy is zeroized).
            pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
                let mut b = bytes;
                let key = $name(Box::new(b));
                b.zeroize();
                key
            }

            /// A fresh random key.
            pub fn generate() -> Result<Self> {
                let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
                fill_random(bytes.as_mut())?;
                Ok(Self::from_bytes(*bytes))
            }

            /// The key bytes. Every call site is a place where the key is used.
            pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
                &self.0
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(concat!(stringify!($name), "(…)"))
            }
        }
    };
}

secret_key!(
    /// Derived from the passphrase; only ever wraps the KEK; never stored.
    MasterKey
);
secret_key!(
    /// Random per tenant; wraps DEKs and derives the keyring body key.
    KeyEncryptionKey
);
secret_key!(
    /// Random per scope and version; encrypts data with XAES-256-GCM.
    DataEncryptionKey
);
secret_key!(
    /// `HKDF-SHA256(KEK, info)`: seals the keyring body, so the KEK itself
    /// only ever encrypts keys.
    BodyKey
);

secret_key!(
    /// `HKDF-SHA256(X25519 shared secret, info)`: wraps the KEK for the recovery key.
    RecoveryWrapKey
);

/// A key sealed under another: `nonce ‖ AES-256-GCM(key, aad)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WrappedKey(pub [u8; WRAPPED_KEY_LEN]);

impl MasterKey {
    /// Wraps the KEK; `aad` binds it to the tenant and the KDF parameters.
    pub fn wrap_kek(&self, kek: &KeyEncryptionKey, aad: &[u8]) -> Result<WrappedKey> {
        wrap(self.expose_secret(), kek.expose_secret(), aad)
    }

    /// Unwraps the KEK; any failure means a wrong passphrase or an altered wrap.
    pub fn unwrap_kek(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<KeyEncryptionKey> {
        unwrap(self.expose_secret(), wrapped, aad).map(KeyEncryptionKey::from_bytes).ok_or(Error::BadPassphrase)
    }
}

impl KeyEncryptionKey {
    /// Wraps a DEK; `aad` binds it to tenant, scope and version.
    pub fn wrap_dek(&self, dek: &DataEncryptionKey, aad: &[u8]) -> Result<WrappedKey> {
        wrap(self.expose_secret(), dek.expose_secret(), aad)
    }

    /// Unwraps a DEK.
    pub fn unwrap_dek(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<DataEncryptionKey> {
        unwrap(self.expose_secret(), wrapped, aad)
            .map(DataEncryptionKey::from_bytes)
            .ok_or_else(|| Error::integrity("a wrapped data key failed authentication"))
    }

    /// `HKDF-SHA256(ikm = KEK, salt = none, info)` (RFC 5869).
    pub fn derive_body_key(&self, info: &[u8]) -> BodyKey {
        let mut okm = Zeroizing::new([0u8; KEY_LEN]);
        Hkdf::<Sha256>::new(None, self.expose_secret())
            .expand(info, okm.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        BodyKey::from_bytes(*okm)
    }
}

impl RecoveryWrapKey {
    /// `HKDF-SHA256(ikm = shared, salt = none, info)`.
    pub fn derive(shared: &[u8; KEY_LEN], info: &[u8]) -> Self {
        let mut okm = Zeroizing::new([0u8; KEY_LEN]);
        Hkdf::<Sha256>::new(None, shared)
            .expand(info, okm.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        RecoveryWrapKey::from_bytes(*okm)
    }

    /// Wraps the KEK for the recovery key.
    pub fn wrap_kek(&self, kek: &KeyEncryptionKey, aad: &[u8]) -> Result<WrappedKey> {
        wrap(self.expose_secret(), kek.expose_secret(), aad)
    }

    /// Unwraps the KEK; failure means the wrong recovery key or an altered wrap.
    pub fn unwrap_kek(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<KeyEncryptionKey> {
        unwrap(self.expose_secret(), wrapped, aad).map(KeyEncryptionKey::from_bytes).ok_or(Error::BadRecoveryKey)
    }
}

impl BodyKey {
    /// `nonce ‖ AES-256-GCM(body, aad)`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        seal(self.expose_secret(), plaintext, aad)
    }

    /// Opens what [`BodyKey::seal`] produced; `None` if it fails authentication.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        open(self.expose_secret(), sealed, aad)
    }
}

fn wrap(wrapping: &[u8; KEY_LEN], key: &[u8; KEY_LEN], aad: &[u8]) -> Result<WrappedKey> {
    let sealed = seal(wrapping, key, aad)?;
    Ok(WrappedKey(sealed.try_into().expect("nonce ‖ 32-byte key ‖ tag is WRAPPED_KEY_LEN bytes")))
}

fn unwrap(wrapping: &[u8; KEY_LEN], wrapped: &WrappedKey, aad: &[u8]) -> Option<[u8; KEY_LEN]> {
    let opened = open(wrapping, &wrapped.0, aad)?;
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&opened);
    Some(key)
}

/// AES-256-GCM with a fresh random 96-bit nonce, returned as `nonce ‖ ct ‖ tag`.
/// Random nonces are safe here: a key wraps a handful of messages, far below
/// the 2^32 bound of NIST SP 800-38D §8.3.
pub(crate) fn seal(key: &[u8; KEY_LEN], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; GCM_NONCE_LEN];
    fill_random(&mut nonce)?;
    let cipher = Aes256Gcm::new(key.into());
    let ct = cipher
        .encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad })
        .map_err(|_| Error::invalid("message too long for AES-256-GCM"))?;
    let mut out = Vec::with_capacity(GCM_NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

pub(crate) fn open(key: &[u8; KEY_LEN], sealed: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < GCM_NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, ct) = sealed.split_at(GCM_NONCE_LEN);
    let nonce: [u8; GCM_NONCE_LEN] = nonce.try_into().expect("split at GCM_NONCE_LEN");
    let cipher = Aes256Gcm::new(key.into());
    cipher.decrypt(&Nonce::from(nonce), Payload { msg: ct, aad }).ok().map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_zeroize_on_drop<T: ZeroizeOnDrop>(_: &T) {}

    #[test]
    fn keys_zeroize_on_drop_and_debug_hides_bytes() {
        let kek = KeyEncryptionKey::generate().unwrap();
        assert_zeroize_on_drop(&kek);
        assert_zeroize_on_drop(&MasterKey::generate().unwrap());
        assert_zeroize_on_drop(&DataEncryptionKey::generate().unwrap());
        let shown = format!("{kek:?}");
        assert_eq!(shown, "KeyEncryptionKey(…)");
    }

    #[test]
    fn wrap_round_trip_and_aad_binding() {
        let mk = MasterKey::generate().unwrap();
        let kek = KeyEncryptionKey::generate().unwrap();
        let w = mk.wrap_kek(&kek, b"aad-1").unwrap();
        let back = mk.unwrap_kek(&w, b"aad-1").unwrap();
        assert_eq!(back.expose_secret(), kek.expose_secret());
        assert!(matches!(mk.unwrap_kek(&w, b"aad-2"), Err(Error::BadPassphrase)));
        let other = MasterKey::generate().unwrap();
        assert!(matches!(other.unwrap_kek(&w, b"aad-1"), Err(Error::BadPassphrase)));
    }

    #[test]
    fn every_bit_flip_of_a_wrapped_key_fails() {
        let kek = KeyEncryptionKey::generate().unwrap();
        let dek = DataEncryptionKey::generate().unwrap();
        let w = kek.wrap_dek(&dek, b"x").unwrap();
        for bit in 0..WRAPPED_KEY_LEN * 8 {
            let mut t = w;
            t.0[bit / 8] ^= 1 << (bit % 8);
            assert!(kek.unwrap_dek(&t, b"x").is_err(), "bit {bit}");
        }
    }

    #[test]
    fn body_key_is_derived_deterministically_and_per_info() {
        let kek = KeyEncryptionKey::generate().unwrap();
        let a = kek.derive_body_key(b"one");
        assert_eq!(a.expose_secret(), kek.derive_body_key(b"one").expose_secret());
        assert_ne!(a.expose_secret(), kek.derive_body_key(b"two").expose_secret());
        assert_ne!(a.expose_secret(), kek.expose_secret());
        let sealed = a.seal(b"body", b"aad").unwrap();
        assert_eq!(a.open(&sealed, b"aad").unwrap().as_slice(), b"body");
        assert!(a.open(&sealed, b"aaD").is_none());
        assert!(a.open(&sealed[..10], b"aad").is_none());
    }
}
