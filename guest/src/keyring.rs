//! The keyring file of one tenant: a clear, authenticated header and a body
//! sealed under a key derived from the KEK. Layout (all integers big-endian;
//! docs/FORMAT.md has the full description; format 2 is written, 1 and 2 read):
//!
//! ```text
//! file   = header ‖ u32 body-len ‖ body ‖ sha256(header ‖ u32 body-len ‖ body)
//! header = "BKKR" ‖ u16 format ‖ tenant-key[32] ‖ u8 kdf=1 ‖ u32 iterations ‖ salt[16]
//!          ‖ u32 kek-version ‖ u64 generation ‖ u8 wrap-count ‖ wrap*
//! wrap   = u8 kind=1 ‖ wrapped-kek[60]                              (passphrase, always first)
//!        | u8 kind=2 ‖ recovery-public[32] ‖ ephemeral[32] ‖ wrapped-kek[60]   (format 2)
//! body   = nonce[12] ‖ AES-256-GCM(body-key, plaintext, BIND("backendenc/v1/keyring-body", header))
//! body-key = HKDF-SHA256(KEK, info = BIND("backendenc/v1/keyring-body-key", tenant-key, kek-version))
//! plaintext (format 2) = u32 scope-count ‖ scope* ‖ audit-key[32] ‖ u64 audit-seq ‖ audit-head[32]
//! scope  = u16 name-len ‖ name ‖ u32 current ‖ u32 min-decryption ‖ u64 auto-rotate-after
//!          ‖ u32 dek-count ‖ (u32 version ‖ wrapped-dek[60] ‖ u64 uses)*
//! (format 1 bodies have no auto-rotate-after, no uses and no audit fields)
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
use crate::recovery::RecoveryWrap;
use crate::tenant::TenantKey;

/// First bytes of every keyring file.
pub const MAGIC: &[u8; 4] = b"BKKR";
/// Keyring format version written by this code.
pub const FORMAT_VERSION: u16 = 2;
/// Oldest keyring format this code reads.
pub const OLDEST_FORMAT_VERSION: u16 = 1;
/// Wrap kind: KEK under the passphrase-derived master key.
pub const WRAP_KIND_PASSPHRASE: u8 = 1;
/// Wrap kind: KEK sealed to the recovery key's public half.
pub const WRAP_KIND_RECOVERY: u8 = 2;
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
    /// The KEK sealed to the recovery key, if one is set.
    pub recovery: Option<RecoveryWrap>,
}

/// The decrypted body: per scope, its data keys (still wrapped by the KEK),
/// and the audit log's key and anchor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Body {
    /// Scope name → keys.
    pub scopes: BTreeMap<String, ScopeKeys>,
    /// The audit log's MAC key, random per tenant (absent in format-1 bodies
    /// until their first write).
    pub audit_key: Option<AuditKeyBytes>,
    /// Sequence number of the last audit line anchored in the keyring.
    pub audit_seq: u64,
    /// Chain hash of that line (all zero when none).
    pub audit_head: [u8; 32],
}

/// The audit key as stored in the body; zeroized on drop.
#[derive(Clone, PartialEq, Eq, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct AuditKeyBytes(pub [u8; 32]);

impl core::fmt::Debug for AuditKeyBytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AuditKeyBytes(…)")
    }
}

/// The data keys of one scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeKeys {
    /// The version `encrypt` uses.
    pub current: u32,
    /// Versions below this do not decrypt.
    pub min_decryption: u32,
    /// Rotate automatically once the current version has this many uses (0: never).
    pub auto_rotate_after: u64,
    /// Version → wrapped DEK and its usage counter.
    pub deks: BTreeMap<u32, DekEntry>,
}

/// One DEK version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DekEntry {
    /// The DEK wrapped under the KEK.
    pub wrapped: WrappedKey,
    /// Encryptions reserved under this version: an upper bound of the
    /// encryptions made with it (sessions reserve blocks ahead of use).
    pub uses: u64,
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
        out.push(if self.recovery.is_some() { 2 } else { 1 });
        out.push(WRAP_KIND_PASSPHRASE);
        out.extend_from_slice(&self.kek_wrap.0);
        if let Some(r) = &self.recovery {
            out.push(WRAP_KIND_RECOVERY);
            out.extend_from_slice(&r.public);
            out.extend_from_slice(&r.ephemeral);
            out.extend_from_slice(&r.wrapped.0);
        }
        out
    }

    fn decode(r: &mut Reader<'_>) -> Result<(Self, u16)> {
        if r.take(4)? != MAGIC {
            return Err(Error::integrity("not a backendenc keyring (bad magic)"));
        }
        let format = r.u16()?;
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&format) {
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
        let max_wraps = if format == 1 { 1 } else { 2 };
        if wraps == 0 || wraps > max_wraps {
            return Err(Error::integrity(format!(
                "keyring has {wraps} key wraps; format {format} allows 1 to {max_wraps}"
            )));
        }
        let kind = r.u8()?;
        if kind != WRAP_KIND_PASSPHRASE {
            return Err(Error::integrity(format!("the first key wrap has kind {kind}, not the passphrase wrap")));
        }
        let kek_wrap = WrappedKey(r.array()?);
        let recovery = if wraps == 2 {
            let kind = r.u8()?;
            if kind != WRAP_KIND_RECOVERY {
                return Err(Error::integrity(format!("unknown key wrap kind {kind}")));
            }
            Some(RecoveryWrap { public: r.array()?, ephemeral: r.array()?, wrapped: WrappedKey(r.array()?) })
        } else {
            None
        };
        let header =
            Header { tenant, kdf: KdfParams { iterations, salt }, kek_version, generation, kek_wrap, recovery };
        Ok((header, format))
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
    /// The format version of the file (older formats are rewritten as the
    /// current one on the next write).
    pub format: u16,
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
        let (header, format) = Header::decode(&mut r)?;
        let header_bytes = content[..content.len() - r.0.len()].to_vec();
        let body_len = r.u32()? as usize;
        let sealed_body = r.take(body_len)?.to_vec();
        if !r.0.is_empty() {
            return Err(Error::integrity("keyring file has trailing bytes"));
        }
        if &header.tenant != tenant {
            return Err(Error::integrity("keyring belongs to another tenant"));
        }
        Ok(SealedKeyring { header, format, header_bytes, sealed_body })
    }

    /// Opens the body with the KEK the header's wrap yielded.
    pub fn open(&self, kek: &KeyEncryptionKey) -> Result<Body> {
        let body_key = kek.derive_body_key(&self.header.body_key_info());
        let plain = body_key
            .open(&self.sealed_body, &bind(BODY_AAD_LABEL, &[&self.header_bytes]))
            .ok_or_else(|| Error::integrity("keyring body failed authentication"))?;
        Body::decode(&plain, self.format)
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
            out.extend_from_slice(&keys.auto_rotate_after.to_be_bytes());
            out.extend_from_slice(&u32::try_from(keys.deks.len()).expect("version count fits u32").to_be_bytes());
            for (version, dek) in &keys.deks {
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&dek.wrapped.0);
                out.extend_from_slice(&dek.uses.to_be_bytes());
            }
        }
        let audit_key = self.audit_key.as_ref().expect("the audit key is set before every write");
        out.extend_from_slice(&audit_key.0);
        out.extend_from_slice(&self.audit_seq.to_be_bytes());
        out.extend_from_slice(&self.audit_head);
        out
    }

    fn decode(bytes: &[u8], format: u16) -> Result<Self> {
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
            let auto_rotate_after = if format >= 2 { r.u64()? } else { 0 };
            let mut deks = BTreeMap::new();
            for _ in 0..r.u32()? {
                let version = r.u32()?;
                let wrapped = WrappedKey(r.array::<WRAPPED_KEY_LEN>()?);
                let uses = if format >= 2 { r.u64()? } else { 0 };
                if deks.insert(version, DekEntry { wrapped, uses }).is_some() {
                    return Err(Error::integrity("keyring holds a key version twice"));
                }
            }
            if !deks.contains_key(&current) || min_decryption > current {
                return Err(Error::integrity("keyring scope entry is inconsistent"));
            }
            if scopes.insert(name, ScopeKeys { current, min_decryption, auto_rotate_after, deks }).is_some() {
                return Err(Error::integrity("keyring holds a scope twice"));
            }
        }
        let (audit_key, audit_seq, audit_head) =
            if format >= 2 { (Some(AuditKeyBytes(r.array()?)), r.u64()?, r.array()?) } else { (None, 0, [0; 32]) };
        if !r.0.is_empty() {
            return Err(Error::integrity("keyring body has trailing bytes"));
        }
        Ok(Body { scopes, audit_key, audit_seq, audit_head })
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
        let mut body = Body { audit_key: Some(AuditKeyBytes([3; 32])), audit_seq: 4, ..Body::default() };
        let dek = crate::keys::DataEncryptionKey::generate().unwrap();
        let wrapped = kek.wrap_dek(&dek, &dek_wrap_aad(&tenant, "memory", 1, 1)).unwrap();
        let deks = BTreeMap::from([(1, DekEntry { wrapped, uses: 1024 })]);
        body.scopes.insert("memory".into(), ScopeKeys { current: 1, min_decryption: 1, auto_rotate_after: 0, deks });
        let recovery =
            Some(RecoveryWrap { public: [5; 32], ephemeral: [6; 32], wrapped: WrappedKey([7; WRAPPED_KEY_LEN]) });
        (Header { tenant, kdf, kek_version: 1, generation: 7, kek_wrap, recovery }, body, kek)
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

    proptest::proptest! {
        /// The body parser (reached only after authentication, but still
        /// the parser of a file) never panics, whatever the bytes.
        #[test]
        fn body_decode_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), format in 1u16..=2) {
            let _ = Body::decode(&bytes, format);
        }

        /// Well-formed bodies with random field values either parse back or fail cleanly.
        #[test]
        fn body_decode_of_edited_bodies_never_panics(edits in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 1..8)) {
            let (_, b, _) = sample();
            let mut bytes = b.encode().to_vec();
            for (at, v) in edits {
                let i = at % bytes.len();
                bytes[i] = v;
            }
            let _ = Body::decode(&bytes, FORMAT_VERSION);
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
