//! Tenants: the pair (user id, channel id), named on disk only by a hash.
//!
//! `TENANT-KEY = SHA-256(BIND("backendenc/v1/tenant", user, channel))`; the
//! tenant's directory is `tenants/<hex(TENANT-KEY)>`. Ids never reach a path.

use sha2::{Digest, Sha256};

use crate::aad::{TENANT_LABEL, bind};
use crate::error::{Error, Result};

/// Longest accepted user or channel id, in bytes.
pub const MAX_ID_LEN: usize = 1024;

/// The 32-byte hash that names a tenant.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantKey([u8; 32]);

impl TenantKey {
    /// Derives the tenant key of (user, channel) after validating both ids:
    /// non-empty, at most [`MAX_ID_LEN`] bytes. Any UTF-8 is accepted
    /// (including `/`, `..` and NUL), since ids are only ever hashed.
    pub fn derive(user: &str, channel: &str) -> Result<Self> {
        validate_id("user id", user)?;
        validate_id("channel id", channel)?;
        let digest = Sha256::digest(bind(TENANT_LABEL, &[user.as_bytes(), channel.as_bytes()]));
        Ok(TenantKey(digest.into()))
    }

    /// Parses the 64-character lowercase hex form.
    pub fn from_hex(hex_key: &str) -> Result<Self> {
        let mut out = [0u8; 32];
        if hex_key.len() != 64 || !hex_key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::invalid("tenant key must be 64 lowercase hex digits"));
        }
        for (i, chunk) in hex_key.as_bytes().chunks(2).enumerate() {
            let s = core::str::from_utf8(chunk).expect("checked ASCII above");
            out[i] = u8::from_str_radix(s, 16).expect("checked hex digits above");
        }
        Ok(TenantKey(out))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        TenantKey(bytes)
    }

    /// Lowercase hex: the tenant's directory name.
    pub fn to_hex(&self) -> String {
        use core::fmt::Write;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            write!(s, "{b:02x}").expect("writing to a String cannot fail");
            s
        })
    }

    /// The tenant's directory relative to the vault root.
    pub fn relative_dir(&self) -> std::path::PathBuf {
        std::path::Path::new("tenants").join(self.to_hex())
    }
}

impl core::fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "TenantKey({})", self.to_hex())
    }
}

fn validate_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid(format!("{what} is empty")));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Error::invalid(format!("{what} is {} bytes; the limit is {MAX_ID_LEN}", id.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colon_ambiguity_of_the_legacy_context_is_gone() {
        let a = TenantKey::derive("a:b", "c").unwrap();
        let b = TenantKey::derive("a", "b:c").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn hex_round_trips_and_is_a_single_path_segment() {
        let k = TenantKey::derive("../../etc", "/passwd\0").unwrap();
        let hex = k.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(TenantKey::from_hex(&hex).unwrap(), k);
        assert_eq!(k.relative_dir().components().count(), 2);
    }

    #[test]
    fn empty_and_oversized_ids_are_invalid() {
        assert!(matches!(TenantKey::derive("", "c"), Err(Error::InvalidArgument(_))));
        assert!(matches!(TenantKey::derive("u", ""), Err(Error::InvalidArgument(_))));
        let long = "x".repeat(MAX_ID_LEN + 1);
        assert!(matches!(TenantKey::derive(&long, "c"), Err(Error::InvalidArgument(_))));
        assert!(TenantKey::derive(&long[1..], "c").is_ok());
    }

    #[test]
    fn from_hex_rejects_non_hex() {
        assert!(TenantKey::from_hex("zz").is_err());
        assert!(TenantKey::from_hex(&"A".repeat(64)).is_err());
    }
}
