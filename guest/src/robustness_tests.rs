//! Property tests: every parser of untrusted input returns an error, never
//! panics (a panic would trap the component), whatever the bytes.

use proptest::prelude::*;
use sha2::Digest;

use crate::envelope::{self, Envelope};
use crate::keyring::SealedKeyring;
use crate::recovery::RecoveryKey;
use crate::tenant::TenantKey;
use crate::vault::{InitOptions, Vault};

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// A real keyring file to mutate.
fn real_keyring() -> (std::path::PathBuf, Vec<u8>) {
    let mut r = [0u8; 8];
    crate::keys::fill_random(&mut r).unwrap();
    let dir = std::env::temp_dir().join(format!("bkenc-prop-{}", hex::encode(r)));
    let vault = Vault::new(&dir);
    let low = InitOptions { iterations: Some(1), insecure_allow_low_iterations_for_testing: true };
    let mut s = vault.init("u", "c", b"pw", low).unwrap();
    s.encrypt("memory", b"x", b"").unwrap();
    s.add_recovery_key().unwrap();
    let path = dir.join(TenantKey::derive("u", "c").unwrap().relative_dir()).join("keyring");
    let bytes = std::fs::read(&path).unwrap();
    (dir, bytes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn envelope_parsing_never_panics(input in bytes(200)) {
        if let Ok(b) = envelope::decode(&input) {
            let _ = Envelope::parse(&b);
        }
    }

    #[test]
    fn armored_envelope_parsing_never_panics(body in "[A-Za-z0-9_\\-=+/ \n]{0,120}") {
        let text = format!("bkenc:v1:{body}");
        if let Ok(b) = envelope::decode(text.as_bytes()) {
            let _ = Envelope::parse(&b);
        }
    }

    #[test]
    fn keyring_parsing_never_panics(input in bytes(400)) {
        let t = TenantKey::derive("u", "c").unwrap();
        let _ = SealedKeyring::decode(&input, &t);
    }

    #[test]
    fn recovery_key_parsing_never_panics(text in "\\PC{0,90}") {
        let _ = RecoveryKey::parse(&text);
        let _ = RecoveryKey::parse(&format!("BKR1-{text}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Edits of a real keyring (with the checksum recomputed, as an attacker
    /// would) never open and never panic, through the whole unlock path.
    #[test]
    fn edited_keyrings_fail_cleanly(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4), cut in any::<usize>()) {
        let (dir, good) = real_keyring();
        let mut k = good[..good.len() - 32].to_vec();
        for (at, v) in edits {
            let i = at % k.len();
            k[i] ^= v | 1;
        }
        k.truncate(k.len() - cut % 3);
        let sum = sha2::Sha256::digest(&k);
        k.extend_from_slice(&sum);
        let path = dir.join(TenantKey::derive("u", "c").unwrap().relative_dir()).join("keyring");
        std::fs::write(&path, &k).unwrap();
        let r = Vault::new(&dir).unlock("u", "c", b"pw");
        let _ = std::fs::remove_dir_all(&dir);
        prop_assert!(r.is_err());
    }

    /// Arbitrary audit logs are rejected or read, never a panic.
    #[test]
    fn audit_log_parsing_never_panics(text in "[0-9a-f \\-\nA-Za-z=]{0,400}") {
        let (dir, _) = real_keyring();
        let mut s = Vault::new(&dir).unlock("u", "c", b"pw").unwrap();
        let log = dir.join(TenantKey::derive("u", "c").unwrap().relative_dir()).join(crate::audit::AUDIT_FILE);
        std::fs::write(&log, text.as_bytes()).unwrap();
        let _ = s.audit_log();
        let _ = s.rotate("memory");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
