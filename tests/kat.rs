//! Known-answer tests of the primitives the key hierarchy is built from,
//! with vectors as data files in `tests/vectors/`.

mod common;

use aes::cipher::{BlockCipherEncrypt, KeyInit as _};
use aes_gcm::aead::{Aead, Payload};
use backendenc_guest::envelope::{self, Envelope};
use backendenc_guest::kdf::{IterationPolicy, KdfParams};
use backendenc_guest::keys::{DataEncryptionKey, KeyEncryptionKey, MasterKey};
use backendenc_guest::tenant::TenantKey;
use common::{unhex, vectors};

#[test]
fn pbkdf2_hmac_sha256_vectors() {
    let file = vectors(include_str!("vectors/pbkdf2-hmac-sha256.txt"));
    assert_eq!(file.len(), 8);
    for v in file {
        let (pw, salt, dk) = (unhex(&v["passphrase"]), unhex(&v["salt"]), unhex(&v["dk"]));
        let iterations: u32 = v["iterations"].parse().unwrap();
        let mut out = vec![0u8; dk.len()];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(&pw, &salt, iterations, &mut out);
        assert_eq!(hex::encode(&out), v["dk"], "{v:?}");
        if v["source"] == "openssl" {
            // The same derivation through backendenc's own KDF entry point.
            let params = KdfParams { iterations, salt: salt.try_into().unwrap() };
            let mk = params.derive_master_key(&pw, IterationPolicy::Unlock).unwrap();
            assert_eq!(hex::encode(mk.expose_secret()), v["dk"]);
        }
    }
}

#[test]
fn aes_256_gcm_vectors() {
    let file = vectors(include_str!("vectors/aes-256-gcm.txt"));
    assert_eq!(file.len(), 3);
    for v in file {
        let key = unhex(&v["key"]);
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(&key).unwrap();
        let nonce: [u8; 12] = unhex(&v["nonce"]).try_into().unwrap();
        let (pt, aad) = (unhex(&v["plaintext"]), unhex(&v["aad"]));
        let ct = cipher.encrypt(&nonce.into(), Payload { msg: &pt, aad: &aad }).unwrap();
        assert_eq!(hex::encode(&ct), v["ct"], "{}", v["source"]);
        assert_eq!(cipher.decrypt(&nonce.into(), Payload { msg: &ct, aad: &aad }).unwrap(), pt);
    }
}

#[test]
fn aes_256_gcm_key_wrap_round_trip() {
    let mk = MasterKey::from_bytes([0x11; 32]);
    let kek = KeyEncryptionKey::generate().unwrap();
    let wrapped = mk.wrap_kek(&kek, b"place").unwrap();
    assert_ne!(&wrapped.0[12..44], kek.expose_secret(), "wrapped key must not be the key");
    assert_eq!(mk.unwrap_kek(&wrapped, b"place").unwrap().expose_secret(), kek.expose_secret());
    assert!(mk.unwrap_kek(&wrapped, b"elsewhere").is_err());
    let dek = DataEncryptionKey::generate().unwrap();
    let wd = kek.wrap_dek(&dek, b"scope").unwrap();
    assert_eq!(kek.unwrap_dek(&wd, b"scope").unwrap().expose_secret(), dek.expose_secret());
}

/// XAES-256-GCM derived by hand from the C2SP spec with plain AES-256 and
/// AES-256-GCM: `K1` from `L = AES(K, 0¹²⁸)`, `Kx = AES(K, M1⊕K1) ‖ AES(K, M2⊕K1)`,
/// then AES-256-GCM under `Kx` with the nonce's last 12 bytes.
fn xaes_by_hand(key: &[u8; 32], nonce: &[u8; 24], pt: &[u8], aad: &[u8]) -> Vec<u8> {
    let aes = aes::Aes256::new(key.into());
    let mut l = aes::Block::default();
    aes.encrypt_block(&mut l);
    let l = u128::from_be_bytes(l.into());
    let k1 = (l << 1) ^ if l >> 127 == 1 { 0x87 } else { 0 };
    let mut kx = [0u8; 32];
    for (i, half) in kx.chunks_mut(16).enumerate() {
        let mut m = [0u8; 16];
        m[..4].copy_from_slice(&[0, i as u8 + 1, b'X', 0]);
        m[4..].copy_from_slice(&nonce[..12]);
        let mut block = aes::Block::from((u128::from_be_bytes(m) ^ k1).to_be_bytes());
        aes.encrypt_block(&mut block);
        half.copy_from_slice(&block);
    }
    let gcm_nonce: [u8; 12] = nonce[12..].try_into().unwrap();
    aes_gcm::Aes256Gcm::new(&kx.into()).encrypt(&gcm_nonce.into(), Payload { msg: pt, aad }).unwrap()
}

#[test]
fn xaes_256_gcm_c2sp_vectors_via_crate_and_by_hand() {
    let file = vectors(include_str!("vectors/xaes-256-gcm.txt"));
    assert_eq!(file.len(), 2);
    for v in file {
        let key: [u8; 32] = unhex(&v["key"]).try_into().unwrap();
        let nonce: [u8; 24] = unhex(&v["nonce"]).try_into().unwrap();
        let (pt, aad) = (unhex(&v["plaintext"]), unhex(&v["aad"]));
        let by_crate =
            xaes_256_gcm::Xaes256Gcm::new(&key.into()).encrypt(&nonce.into(), Payload { msg: &pt, aad: &aad }).unwrap();
        assert_eq!(hex::encode(&by_crate), v["ct"]);
        assert_eq!(hex::encode(xaes_by_hand(&key, &nonce, &pt, &aad)), v["ct"]);
    }
}

/// Freezes the envelope construction: an envelope from backendenc opens
/// with the hand-made XAES-256-GCM under exactly the AAD FORMAT.md documents.
#[test]
fn envelope_is_xaes_256_gcm_over_the_documented_aad() {
    let dek = DataEncryptionKey::from_bytes([0x42; 32]);
    let tenant = TenantKey::derive("alice", "general").unwrap();
    let env = envelope::seal(&dek, 7, &tenant, "memory", b"hello", b"caller-aad").unwrap();
    assert_eq!(&env[..6], b"BKEV\x01\x01");
    assert_eq!(&env[6..10], &7u32.to_be_bytes());
    let nonce: [u8; 24] = env[10..34].try_into().unwrap();
    let lp = |x: &[u8]| [&(x.len() as u64).to_be_bytes()[..], x].concat();
    let aad =
        [lp(b"backendenc/v1/data"), lp(tenant.as_bytes()), lp(b"memory"), lp(&env[..34]), lp(b"caller-aad")].concat();
    assert_eq!(xaes_by_hand(dek.expose_secret(), &nonce, b"hello", &aad), &env[34..]);
    assert_eq!(
        Envelope::parse(&env).unwrap().open(&dek, &tenant, "memory", b"caller-aad").unwrap().as_slice(),
        b"hello"
    );
}

/// The tenant key is SHA-256 over the length-prefixed ids, as documented.
#[test]
fn tenant_key_derivation_is_as_documented() {
    use sha2::Digest;
    let lp = |x: &[u8]| [&(x.len() as u64).to_be_bytes()[..], x].concat();
    let expected = sha2::Sha256::digest([lp(b"backendenc/v1/tenant"), lp(b"alice"), lp(b"general")].concat());
    assert_eq!(TenantKey::derive("alice", "general").unwrap().as_bytes()[..], expected[..]);
}
