//! Freezes the on-disk formats: a vault written by backendenc 0.1.0 (format
//! v1) is committed under `tests/fixtures/vault-v1/`, and every later
//! version must open it and decrypt its envelopes. The fixture was produced
//! once by the ignored generator below, with a low iteration count.

mod common;

use std::path::{Path, PathBuf};

use backendenc::{InitOptions, Vault};
use common::{unhex, vectors};

const USER: &str = "alice";
const CHANNEL: &str = "general";
const PASSPHRASE: &str = "correct horse battery staple";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vault-v1")
}

/// Regenerates the fixture. Run only when the format version is bumped:
/// `cargo test -p backendenc --test format -- --ignored generate`.
#[test]
#[ignore = "writes the committed fixture"]
fn generate_v1_fixture() {
    let dir = fixture();
    let _ = std::fs::remove_dir_all(&dir);
    let vault = Vault::open(dir.join("vault")).unwrap();
    let opts = InitOptions { iterations: Some(1_000), insecure_allow_low_iterations_for_testing: true };
    let s = vault.init(USER, CHANNEL, PASSPHRASE.as_bytes(), opts).unwrap();
    let mut out = String::from("# Envelopes written by backendenc 0.1.0 into vault/ (format v1).\n\n");
    for (scope, pt, aad) in
        [("memory", "[user] remind me to call Bob at 5", ""), ("assets", "Vertrag – Zeile 2", "contract")]
    {
        let env = s.encrypt(scope, pt.as_bytes(), aad.as_bytes()).unwrap();
        let armor = backendenc::armor(&env).unwrap();
        out += &format!(
            "scope = {scope}\nplaintext = {}\naad = {}\nenvelope = {}\narmor = {armor}\n\n",
            hex::encode(pt),
            hex::encode(aad),
            hex::encode(&env)
        );
    }
    std::fs::write(dir.join("envelopes.txt"), out).unwrap();
    for entry in std::fs::read_dir(dir.join("vault/tenants")).unwrap() {
        assert!(!entry.unwrap().file_name().to_string_lossy().starts_with(".init-"));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dst = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dst);
        } else {
            std::fs::copy(entry.path(), dst).unwrap();
        }
    }
}

#[test]
fn a_v1_vault_still_opens_and_decrypts() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture().join("vault"), tmp.path());
    let vault = Vault::open(tmp.path()).unwrap();
    let s = vault.unlock(USER, CHANNEL, PASSPHRASE.as_bytes()).unwrap();
    let records = vectors(&std::fs::read_to_string(fixture().join("envelopes.txt")).unwrap());
    assert_eq!(records.len(), 2);
    for r in records {
        let (pt, aad) = (unhex(&r["plaintext"]), unhex(&r["aad"]));
        assert_eq!(&s.decrypt(&r["scope"], &unhex(&r["envelope"]), &aad).unwrap()[..], &pt[..]);
        assert_eq!(&s.decrypt(&r["scope"], r["armor"].as_bytes(), &aad).unwrap()[..], &pt[..]);
    }
    let st = s.status().unwrap();
    // Unlocking rewrote the format-1 keyring as the current format.
    assert_eq!((st.format_version, st.iterations, st.kek_version), (2, 1_000, 1));
    let key = Vault::tenant_key(USER, CHANNEL).unwrap();
    let upgraded = std::fs::read(tmp.path().join("tenants").join(&key).join("keyring")).unwrap();
    assert_eq!(&upgraded[4..6], &[0, 2]);
    // The audit log starts with the upgrade's unlock.
    let log = s.audit_log().unwrap();
    assert_eq!(log.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(), ["unlock"]);
    assert_eq!(st.scopes.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["assets", "memory"]);
}

#[test]
fn the_v1_keyring_layout_is_as_documented() {
    let key = Vault::tenant_key(USER, CHANNEL).unwrap();
    let bytes = std::fs::read(fixture().join("vault/tenants").join(&key).join("keyring")).unwrap();
    assert_eq!(&bytes[0..4], b"BKKR");
    assert_eq!(&bytes[4..6], &[0, 1]);
    assert_eq!(hex::encode(&bytes[6..38]), key);
    assert_eq!(bytes[38], 1, "kdf id");
    assert_eq!(u32::from_be_bytes(bytes[39..43].try_into().unwrap()), 1_000);
    assert_eq!(u32::from_be_bytes(bytes[59..63].try_into().unwrap()), 1, "kek version");
    assert_eq!(u64::from_be_bytes(bytes[63..71].try_into().unwrap()), 3, "generation: init + two scopes");
    assert_eq!(&bytes[71..73], &[1, 1], "one passphrase wrap");
    let body_len = u32::from_be_bytes(bytes[133..137].try_into().unwrap()) as usize;
    assert_eq!(bytes.len(), 137 + body_len + 32);
    use sha2::Digest;
    assert_eq!(&bytes[bytes.len() - 32..], &sha2::Sha256::digest(&bytes[..bytes.len() - 32])[..]);
}

#[test]
fn a_keyring_rewritten_by_an_older_version_under_an_open_session_is_an_error_not_a_trap() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture().join("vault"), tmp.path());
    let vault = Vault::open(tmp.path()).unwrap();
    let s = vault.unlock(USER, CHANNEL, PASSPHRASE.as_bytes()).unwrap();
    // An old 0.1.0 process writes its (format 1) keyring back.
    let key = Vault::tenant_key(USER, CHANNEL).unwrap();
    let v1 = std::fs::read(fixture().join("vault/tenants").join(&key).join("keyring")).unwrap();
    std::fs::write(tmp.path().join("tenants").join(&key).join("keyring"), v1).unwrap();
    let err = s.audit_log().unwrap_err();
    assert!(matches!(&err, backendenc::Error::Integrity(m) if m.contains("older backendenc")), "{err}");
    assert!(!s.is_locked(), "an error, not a trap: the session lives on");
    let records = vectors(&std::fs::read_to_string(fixture().join("envelopes.txt")).unwrap());
    let r = &records[0];
    assert_eq!(
        &s.decrypt(&r["scope"], &unhex(&r["envelope"]), &unhex(&r["aad"])).unwrap()[..],
        &unhex(&r["plaintext"])[..]
    );
}
