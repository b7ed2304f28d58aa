//! The keyring file of one tenant: a clear, authenticated header and a body
//! sealed under a key derived from the KEK. Layout (all integers big-endian):
//!
//! ```text
//! file   = header ‖ u32 body-len ‖ body ‖ sha256(header ‖ u32 body-len ‖ body)
//! header = "BKKR" ‖ u16 format=1 ‖ tenant-key[32] ‖ u8 kdf=1 ‖ u32 iterations ‖ salt[16]
//!          ‖ u32 kek-version ‖ u64 generation ‖ u8 wrap-count=1 ‖ (u8 kind=1 ‖ wrapped-kek[60])
//! body   = nonce[12] ‖ AES-256-GCM(body-key, plaintext, BIND("backendenc/v1/keyring-body", header))
//! body-key = HKDF-SHA256(KEK, info = BIND("backendenc/v1/keyring-body-key", tenant-key, kek-version))
//! wrapped-kek = AES-256-GCM(MK, KEK, BIND("backendenc/v1/kek-wrap/passphrase",
//!                           tenant-key, kdf, iterations, salt, kek-version))
//! plaintext = u32 scope-count ‖ scope*
//! scope  = u16 name-len ‖ name ‖ u32 current ‖ u32 min-decryption ‖ u32 dek-count
//!          ‖ (u32 version ‖ wrapped-dek[60])*
//! wrapped-dek = AES-256-GCM(KEK, DEK, BIND("backendenc/v1/dek-wrap", tenant-key, scope, version, kek-version))
//! ```
//! The trailing SHA-256 is not a security mechanism (anyone can recompute
//! it); it tells accidental corruption apart from a wrong passphrase.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::aad::{BODY_AAD_LABEL, BODY_KEY_LABEL, DEK_WRAP_LABEL, KEK_WRAP_LABEL, bind};
use crate::error::{Error, Result};
use crate::kdf::{KDF_PBKDF2_HMAC_SHA256, KdfParams, SALT_LEN};
use crate::keys::{KeyEncryptionKey, WRAPPED_KEY_LEN, WrappedKey};
use crate::tenant::TenantKey;

/// First bytes of every keyring file.
pub const MAGIC: &[u8; 4] = b"BKKR";
/// Keyring format version written by this code.
pub const FORMAT_VERSION: u16 = 1;
/// Wrap kind: KEK under the passphrase-derived master key.
pub const WRAP_KIND_PASSPHRASE: u8 = 1;
/// Longest accepted scope name, in bytes.
pub const MAX_SCOPE_LEN: usize = 255;
/// Largest keyring file read, so a hostile file cannot exhaust memory.
pub const MAX_FILE_LEN: u64 = 16 * 1024 * 1024;
const CHECKSUM_LEN: usize = 32;

/// The clear part of the keyring. Every field is authenticated: the KDF
/// fields and tenant key by the KEK wrap's AAD, all of it by the body's AAD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Whose keyring this is.
    pub tenant: TenantKey,
    /// Passphrase KDF parameters.
    pub kdf: KdfParams,
    /// Version of the KEK (bumped by KEK rotation).
    pub kek_version: u32,
    /// Bumped by every committed write.
    pub generation: u64,
    /// The KEK wrapped under the master key.
    pub kek_wrap: WrappedKey,
}

/// The decrypted body: per scope, its data keys (still wrapped by the KEK).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Body {
    /// Scope name → keys.
    pub scopes: BTreeMap<String, ScopeKeys>,
}

/// The data keys of one scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeKeys {
    /// The version `encrypt` uses.
    pub current: u32,
    /// Versions below this do not decrypt.
    pub min_decryption: u32,
    /// Version → wrapped DEK.
    pub deks: BTreeMap<u32, WrappedKey>,
}

/// Checks a scope name: non-empty, at most [`MAX_SCOPE_LEN`] bytes.
pub fn validate_scope(scope: &str) -> Result<()> {
    if scope.is_empty() {
        return Err(Error::invalid("scope is empty"));
    }
    if scope.len() > MAX_SCOPE_LEN {
        return Err(Error::invalid(format!("scope is {} bytes; the limit is {MAX_SCOPE_LEN}", scope.len())));
    }
    Ok(())
}

/// AAD of the KEK wrapped under the master key.
pub fn kek_wrap_aad(tenant: &TenantKey, kdf: &KdfParams, kek_version: u32) -> Vec<u8> {
    bind(
        KEK_WRAP_LABEL,
        &[
            tenant.as_bytes(),
            &[KDF_PBKDF2_HMAC_SHA256],
            &kdf.iterations.to_be_bytes(),
            &kdf.salt,
            &kek_version.to_be_bytes(),
        ],
    )
}

/// AAD of a DEK wrapped under the KEK.
pub fn dek_wrap_aad(tenant: &TenantKey, scope: &str, version: u32, kek_version: u32) -> Vec<u8> {
    bind(DEK_WRAP_LABEL, &[tenant.as_bytes(), scope.as_bytes(), &version.to_be_bytes(), &kek_version.to_be_bytes()])
}

impl Header {
    /// Serialises the header (the AAD of the body).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(self.tenant.as_bytes());
        out.push(KDF_PBKDF2_HMAC_SHA256);
        out.extend_from_slice(&self.kdf.iterations.to_be_bytes());
        out.extend_from_slice(&self.kdf.salt);
        out.extend_from_slice(&self.kek_version.to_be_bytes());
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.push(1);
        out.push(WRAP_KIND_PASSPHRASE);
        out.extend_from_slice(&self.kek_wrap.0);
        out
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        if r.take(4)? != MAGIC {
            return Err(Error::integrity("not a backendenc keyring (bad magic)"));
        }
        let format = r.u16()?;
        if format != FORMAT_VERSION {
            return Err(Error::integrity(format!("unsupported keyring format version {format}")));
        }
        let tenant = TenantKey::from_bytes(r.array()?);
        let kdf_id = r.u8()?;
        if kdf_id != KDF_PBKDF2_HMAC_SHA256 {
            return Err(Error::integrity(format!("unsupported key-derivation function id {kdf_id}")));
        }
        let iterations = r.u32()?;
        let salt: [u8; SALT_LEN] = r.array()?;
        let kek_version = r.u32()?;
        let generation = r.u64()?;
        let wraps = r.u8()?;
        if wraps != 1 {
            return Err(Error::integrity(format!("keyring has {wraps} key wraps; this version reads exactly 1")));
        }
        let kind = r.u8()?;
        if kind != WRAP_KIND_PASSPHRASE {
            return Err(Error::integrity(format!("unknown key wrap kind {kind}")));
        }
        let kek_wrap = WrappedKey(r.array()?);
        Ok(Header { tenant, kdf: KdfParams { iterations, salt }, kek_version, generation, kek_wrap })
    }

    fn body_key_info(&self) -> Vec<u8> {
        bind(BODY_KEY_LABEL, &[self.tenant.as_bytes(), &self.kek_version.to_be_bytes()])
    }
}

/// A keyring file whose checksum and header have been checked, body still sealed.
#[derive(Debug)]
pub struct SealedKeyring {
    /// The parsed header.
    pub header: Header,
    header_bytes: Vec<u8>,
    sealed_body: Vec<u8>,
}

impl SealedKeyring {
    /// Parses a keyring file that must belong to `tenant`.
    pub fn decode(bytes: &[u8], tenant: &TenantKey) -> Result<Self> {
        if bytes.len() < CHECKSUM_LEN {
            return Err(Error::integrity("keyring file is truncated"));
        }
        let (content, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Sha256::digest(content).as_slice() != checksum {
            return Err(Error::integrity("keyring file is corrupted (checksum mismatch)"));
        }
        let mut r = Reader(content);
        let header = Header::decode(&mut r)?;
        let header_bytes = content[..content.len() - r.0.len()].to_vec();
        let body_len = r.u32()? as usize;
        let sealed_body = r.take(body_len)?.to_vec();
        if !r.0.is_empty() {
            return Err(Error::integrity("keyring file has trailing bytes"));
        }
        if &header.tenant != tenant {
            return Err(Error::integrity("keyring belongs to another tenant"));
        }
        Ok(SealedKeyring { header, header_bytes, sealed_body })
    }

    /// Opens the body with the KEK the header's wrap yielded.
    pub fn open(&self, kek: &KeyEncryptionKey) -> Result<Body> {
        let body_key = kek.derive_body_key(&self.header.body_key_info());
        let plain = body_key
            .open(&self.sealed_body, &bind(BODY_AAD_LABEL, &[&self.header_bytes]))
            .ok_or_else(|| Error::integrity("keyring body failed authentication"))?;
        Body::decode(&plain)
    }
}

/// Serialises and seals a whole keyring file.
pub fn encode(header: &Header, body: &Body, kek: &KeyEncryptionKey) -> Result<Vec<u8>> {
    let header_bytes = header.encode();
    let body_key = kek.derive_body_key(&header.body_key_info());
    let sealed = body_key.seal(&body.encode(), &bind(BODY_AAD_LABEL, &[&header_bytes]))?;
    let mut out = header_bytes;
    out.extend_from_slice(&u32::try_from(sealed.len()).expect("body is far below 4 GiB").to_be_bytes());
    out.extend_from_slice(&sealed);
    let checksum = Sha256::digest(&out);
    out.extend_from_slice(&checksum);
    Ok(out)
}

impl Body {
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::new());
        out.extend_from_slice(&u32::try_from(self.scopes.len()).expect("scope count fits u32").to_be_bytes());
        for (name, keys) in &self.scopes {
            out.extend_from_slice(&u16::try_from(name.len()).expect("scope names are ≤ 255 bytes").to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&keys.current.to_be_bytes());
            out.extend_from_slice(&keys.min_decryption.to_be_bytes());
            out.extend_from_slice(&u32::try_from(keys.deks.len()).expect("version count fits u32").to_be_bytes());
            for (version, wrapped) in &keys.deks {
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&wrapped.0);
            }
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader(bytes);
        let mut scopes = BTreeMap::new();
        for _ in 0..r.u32()? {
            let name_len = r.u16()? as usize;
            let name = core::str::from_utf8(r.take(name_len)?)
                .map_err(|_| Error::integrity("keyring scope name is not UTF-8"))?
                .to_owned();
            validate_scope(&name).map_err(|_| Error::integrity("keyring holds an invalid scope name"))?;
            let current = r.u32()?;
            let min_decryption = r.u32()?;
            let mut deks = BTreeMap::new();
            for _ in 0..r.u32()? {
                let version = r.u32()?;
                if deks.insert(version, WrappedKey(r.array::<WRAPPED_KEY_LEN>()?)).is_some() {
                    return Err(Error::integrity("keyring holds a key version twice"));
                }
            }
            if !deks.contains_key(&current) || min_decryption > current {
                return Err(Error::integrity("keyring scope entry is inconsistent"));
            }
            if scopes.insert(name, ScopeKeys { current, min_decryption, deks }).is_some() {
                return Err(Error::integrity("keyring holds a scope twice"));
            }
        }
        if !r.0.is_empty() {
            return Err(Error::integrity("keyring body has trailing bytes"));
        }
        Ok(Body { scopes })
    }
}

/// A bounds-checked cursor: running out of bytes is an integrity error.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::integrity("keyring file is truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("took exactly N bytes"))
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::MasterKey;

    fn sample() -> (Header, Body, KeyEncryptionKey) {
        let tenant = TenantKey::derive("u", "c").unwrap();
        let kek = KeyEncryptionKey::generate().unwrap();
        let kdf = KdfParams { iterations: 1000, salt: [9; SALT_LEN] };
        let mk = MasterKey::generate().unwrap();
        let kek_wrap = mk.wrap_kek(&kek, &kek_wrap_aad(&tenant, &kdf, 1)).unwrap();
        let mut body = Body::default();
        let dek = crate::keys::DataEncryptionKey::generate().unwrap();
        let wrapped = kek.wrap_dek(&dek, &dek_wrap_aad(&tenant, "memory", 1, 1)).unwrap();
        body.scopes
            .insert("memory".into(), ScopeKeys { current: 1, min_decryption: 1, deks: BTreeMap::from([(1, wrapped)]) });
        (Header { tenant, kdf, kek_version: 1, generation: 7, kek_wrap }, body, kek)
    }

    #[test]
    fn round_trip() {
        let (h, b, kek) = sample();
        let bytes = encode(&h, &b, &kek).unwrap();
        let sealed = SealedKeyring::decode(&bytes, &h.tenant).unwrap();
        assert_eq!(sealed.header, h);
        assert_eq!(sealed.open(&kek).unwrap(), b);
    }

    #[test]
    fn scope_names_are_not_on_disk() {
        let (h, b, kek) = sample();
        let bytes = encode(&h, &b, &kek).unwrap();
        assert!(!bytes.windows(6).any(|w| w == b"memory"));
    }

    #[test]
    fn every_bit_flip_is_an_integrity_error() {
        let (h, b, kek) = sample();
        let bytes = encode(&h, &b, &kek).unwrap();
        for bit in 0..bytes.len() * 8 {
            let mut t = bytes.clone();
            t[bit / 8] ^= 1 << (bit % 8);
            let r = SealedKeyring::decode(&t, &h.tenant).and_then(|s| s.open(&kek));
            assert!(matches!(r, Err(Error::Integrity(_))), "bit {bit}");
        }
    }

    #[test]
    fn header_change_with_fixed_checksum_fails_body_authentication() {
        let (h, b, kek) = sample();
        let mut bytes = encode(&h, &b, &kek).unwrap();
        // Bump the generation (offset: magic 4 + format 2 + tenant 32 + kdf 1 + iter 4 + salt 16 + kek-ver 4).
        bytes[4 + 2 + 32 + 1 + 4 + 16 + 4 + 7] ^= 1;
        let n = bytes.len() - CHECKSUM_LEN;
        let sum = Sha256::digest(&bytes[..n]);
        bytes[n..].copy_from_slice(&sum);
        let sealed = SealedKeyring::decode(&bytes, &h.tenant).unwrap();
        assert!(matches!(sealed.open(&kek), Err(Error::Integrity(_))));
    }

    #[test]
    fn truncation_at_every_length_fails_cleanly() {
        let (h, b, kek) = sample();
        let bytes = encode(&h, &b, &kek).unwrap();
        for n in 0..bytes.len() {
            assert!(SealedKeyring::decode(&bytes[..n], &h.tenant).is_err(), "len {n}");
        }
    }

    #[test]
    fn keyring_of_another_tenant_is_refused() {
        let (h, b, kek) = sample();
        let bytes = encode(&h, &b, &kek).unwrap();
        let other = TenantKey::derive("u", "c2").unwrap();
        assert!(matches!(SealedKeyring::decode(&bytes, &other), Err(Error::Integrity(_))));
    }
}
