//! Data envelopes: the versioned binary format of encrypted data, and its
//! text armor for JSON and database columns.
//!
//! ```text
//! envelope = magic "BKEV" ‖ version 0x01 ‖ alg 0x01 ‖ u32be key-version ‖ nonce[24] ‖ ct ‖ tag[16]
//! armor    = "bkenc:v1:" ‖ base64url-unpadded(envelope)
//! ct ‖ tag = XAES-256-GCM(DEK, nonce, plaintext,
//!                         BIND("backendenc/v1/data", tenant-key, scope, header[0..34], caller-aad))
//! ```
//! XAES-256-GCM is specified at <https://c2sp.org/XAES-256-GCM>: 192-bit
//! random nonces, so a busy DEK has no practical message limit.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64ct::{Base64UrlUnpadded, Encoding};
use xaes_256_gcm::Xaes256Gcm;
use zeroize::Zeroizing;

use crate::aad::{DATA_LABEL, bind};
use crate::error::{Error, Result};
use crate::keys::{DataEncryptionKey, TAG_LEN, fill_random};
use crate::tenant::TenantKey;

/// First bytes of every binary envelope.
pub const MAGIC: &[u8; 4] = b"BKEV";
/// Envelope format version written by this code.
pub const FORMAT_VERSION: u8 = 1;
/// Algorithm id of XAES-256-GCM.
pub const ALG_XAES_256_GCM: u8 = 1;
/// XAES-256-GCM nonce length.
pub const NONCE_LEN: usize = 24;
/// Length of the clear, authenticated header.
pub const HEADER_LEN: usize = 4 + 1 + 1 + 4 + NONCE_LEN;
/// Shortest possible envelope (empty plaintext).
pub const MIN_LEN: usize = HEADER_LEN + TAG_LEN;
/// Prefix of the text armor.
pub const ARMOR_PREFIX: &str = "bkenc:v1:";

/// A parsed envelope borrowing its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The DEK version that sealed it.
    pub key_version: u32,
    header: &'a [u8],
    nonce: &'a [u8; NONCE_LEN],
    sealed: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Parses a binary envelope; any malformation is an integrity error.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        if !bytes.starts_with(MAGIC) {
            return Err(Error::integrity("not a backendenc envelope (bad magic)"));
        }
        if bytes.len() < MIN_LEN {
            return Err(Error::integrity(format!("envelope is {} bytes; the shortest is {MIN_LEN}", bytes.len())));
        }
        let (header, sealed) = bytes.split_at(HEADER_LEN);
        if header[4] != FORMAT_VERSION {
            return Err(Error::integrity(format!("unsupported envelope format version {}", header[4])));
        }
        if header[5] != ALG_XAES_256_GCM {
            return Err(Error::integrity(format!("unsupported envelope algorithm {}", header[5])));
        }
        let key_version = u32::from_be_bytes(header[6..10].try_into().expect("4-byte slice"));
        let nonce = header[10..HEADER_LEN].try_into().expect("24-byte slice");
        Ok(Envelope { key_version, header, nonce, sealed })
    }

    /// Decrypts and authenticates under `dek`, bound to tenant, scope and `aad`.
    pub fn open(
        &self,
        dek: &DataEncryptionKey,
        tenant: &TenantKey,
        scope: &str,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let bound = bind(DATA_LABEL, &[tenant.as_bytes(), scope.as_bytes(), self.header, aad]);
        Xaes256Gcm::new(dek.expose_secret().into())
            .decrypt(&(*self.nonce).into(), Payload { msg: self.sealed, aad: &bound })
            .map(Zeroizing::new)
            .map_err(|_| {
                Error::integrity("envelope failed authentication (wrong tenant, scope or AAD, or it was altered)")
            })
    }
}

/// Encrypts `plaintext` under `dek` (version `key_version`) into a binary envelope.
pub fn seal(
    dek: &DataEncryptionKey,
    key_version: u32,
    tenant: &TenantKey,
    scope: &str,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    let mut out = Vec::with_capacity(MIN_LEN + plaintext.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.push(ALG_XAES_256_GCM);
    out.extend_from_slice(&key_version.to_be_bytes());
    out.extend_from_slice(&nonce);
    let bound = bind(DATA_LABEL, &[tenant.as_bytes(), scope.as_bytes(), &out, aad]);
    let sealed = Xaes256Gcm::new(dek.expose_secret().into())
        .encrypt(&nonce.into(), Payload { msg: plaintext, aad: &bound })
        .map_err(|_| Error::invalid("plaintext too long for XAES-256-GCM"))?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The text armor of a binary envelope. Checks that `envelope` parses, so
/// armor never wraps garbage.
pub fn armor(envelope: &[u8]) -> Result<String> {
    Envelope::parse(envelope)?;
    Ok(format!("{ARMOR_PREFIX}{}", Base64UrlUnpadded::encode_string(envelope)))
}

/// Accepts either form: armored text (surrounding ASCII whitespace ignored)
/// or a binary envelope, and returns the binary bytes.
pub fn decode(input: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>> {
    let trimmed = input.trim_ascii();
    match trimmed.strip_prefix(ARMOR_PREFIX.as_bytes()) {
        Some(body) => {
            let text = core::str::from_utf8(body).map_err(|_| Error::integrity("armored envelope is not ASCII"))?;
            Base64UrlUnpadded::decode_vec(text)
                .map(std::borrow::Cow::Owned)
                .map_err(|_| Error::integrity("armored envelope is not valid base64url"))
        }
        None if trimmed.starts_with(b"bkenc:") => Err(Error::integrity("unsupported armor version")),
        None => Ok(std::borrow::Cow::Borrowed(input)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (DataEncryptionKey, TenantKey) {
        (DataEncryptionKey::generate().unwrap(), TenantKey::derive("u", "c").unwrap())
    }

    #[test]
    fn round_trip_binary_and_armor() {
        let (dek, t) = fixture();
        for len in [0usize, 1, 1000] {
            let pt = vec![7u8; len];
            let env = seal(&dek, 3, &t, "memory", &pt, b"ctx").unwrap();
            assert_eq!(env.len(), MIN_LEN + len);
            let parsed = Envelope::parse(&env).unwrap();
            assert_eq!(parsed.key_version, 3);
            assert_eq!(parsed.open(&dek, &t, "memory", b"ctx").unwrap().as_slice(), &pt[..]);
            let text = armor(&env).unwrap();
            assert!(text.starts_with(ARMOR_PREFIX));
            let with_newline = format!("{text}\n");
            assert_eq!(decode(with_newline.as_bytes()).unwrap().as_ref(), &env[..]);
        }
    }

    #[test]
    fn binding_to_tenant_scope_and_aad() {
        let (dek, t) = fixture();
        let env = seal(&dek, 1, &t, "memory", b"secret", b"a").unwrap();
        let p = Envelope::parse(&env).unwrap();
        let other = TenantKey::derive("u2", "c").unwrap();
        assert!(p.open(&dek, &other, "memory", b"a").is_err());
        assert!(p.open(&dek, &t, "assets", b"a").is_err());
        assert!(p.open(&dek, &t, "memory", b"b").is_err());
    }

    #[test]
    fn every_bit_flip_fails_with_integrity() {
        let (dek, t) = fixture();
        let env = seal(&dek, 1, &t, "s", b"hello", b"").unwrap();
        for bit in 0..env.len() * 8 {
            let mut e = env.clone();
            e[bit / 8] ^= 1 << (bit % 8);
            let r = Envelope::parse(&e).and_then(|p| p.open(&dek, &t, "s", b""));
            assert!(matches!(r, Err(Error::Integrity(_))), "bit {bit}");
        }
    }

    #[test]
    fn truncated_and_garbage_inputs_are_integrity_errors() {
        for bad in [&b""[..], b"BKEV", b"bkenc:v1:!!!", b"bkenc:v9:AAAA", &[0u8; 60]] {
            let r = decode(bad).and_then(|d| Envelope::parse(&d).map(|_| ()));
            assert!(matches!(r, Err(Error::Integrity(_))), "{bad:?}");
        }
    }
}
