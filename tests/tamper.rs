//! Tampering and corruption: every bit of an envelope and of a keyring is
//! authenticated, and a hostile keyring cannot weaken or hang unlock.

mod common;

use backendenc::Error;
use common::{init, keyring_path, temp_vault};
use sha2::Digest;

/// Offset of the iteration count in the keyring header:
/// magic 4 ‖ format 2 ‖ tenant 32 ‖ kdf 1.
const ITERATIONS_AT: usize = 4 + 2 + 32 + 1;

fn fix_checksum(bytes: &mut [u8]) {
    let n = bytes.len() - 32;
    let sum = sha2::Sha256::digest(&bytes[..n]);
    bytes[n..].copy_from_slice(&sum);
}

#[test]
fn every_bit_flip_of_an_envelope_is_an_integrity_error() {
    let (_d, vault) = temp_vault();
    let s = init(&vault, "u", "c", b"pw");
    let env = s.encrypt("memory", b"attack at dawn", b"aad").unwrap();
    for bit in 0..env.len() * 8 {
        let mut t = env.clone();
        t[bit / 8] ^= 1 << (bit % 8);
        let err = s.decrypt("memory", &t, b"aad").unwrap_err();
        assert!(matches!(err, Error::Integrity(_)), "bit {bit}: {err}");
    }
    // Truncation at every length, and garbage armor, too.
    for n in 0..env.len() {
        assert!(matches!(s.decrypt("memory", &env[..n], b"aad"), Err(Error::Integrity(_))), "len {n}");
    }
    let armored = backendenc::armor(&env).unwrap();
    let mut bad = armored.into_bytes();
    let i = bad.len() / 2;
    bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
    assert!(matches!(s.decrypt("memory", &bad, b"aad"), Err(Error::Integrity(_))));
    assert!(!s.is_locked(), "bad input must not kill the session");
    assert_eq!(&s.decrypt("memory", &env, b"aad").unwrap()[..], b"attack at dawn");
}

#[test]
fn every_bit_flip_of_the_keyring_is_an_integrity_error() {
    let (_d, vault) = temp_vault();
    let s = init(&vault, "u", "c", b"pw");
    let env = s.encrypt("memory", b"kept", b"").unwrap();
    vault.lock_all();
    let path = keyring_path(&vault, "u", "c");
    let good = std::fs::read(&path).unwrap();
    for bit in 0..good.len() * 8 {
        let mut t = good.clone();
        t[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&path, &t).unwrap();
        let err = vault.unlock("u", "c", b"pw").unwrap_err();
        assert!(matches!(err, Error::Integrity(_)), "bit {bit}: {err}");
    }
    std::fs::write(&path, &good).unwrap();
    let s = vault.unlock("u", "c", b"pw").unwrap();
    assert_eq!(&s.decrypt("memory", &env, b"").unwrap()[..], b"kept");
}

#[test]
fn deliberate_tampering_with_a_recomputed_checksum_never_opens() {
    let (_d, vault) = temp_vault();
    init(&vault, "u", "c", b"pw").encrypt("memory", b"x", b"").unwrap();
    vault.lock_all();
    let path = keyring_path(&vault, "u", "c");
    let good = std::fs::read(&path).unwrap();
    for byte in 0..good.len() - 32 {
        let mut t = good.clone();
        t[byte] ^= 0x80;
        fix_checksum(&mut t);
        std::fs::write(&path, &t).unwrap();
        let err = vault.unlock("u", "c", b"pw").unwrap_err();
        assert!(matches!(err, Error::Integrity(_) | Error::BadPassphrase), "byte {byte}: {err}");
    }
}

#[test]
fn a_lowered_iteration_count_makes_unlock_fail() {
    let (_d, vault) = temp_vault();
    init(&vault, "u", "c", b"pw");
    vault.lock_all();
    let path = keyring_path(&vault, "u", "c");
    let good = std::fs::read(&path).unwrap();
    assert_eq!(u32::from_be_bytes(good[ITERATIONS_AT..ITERATIONS_AT + 4].try_into().unwrap()), common::TEST_ITERATIONS);
    let mut lowered = good.clone();
    lowered[ITERATIONS_AT..ITERATIONS_AT + 4].copy_from_slice(&1u32.to_be_bytes());
    std::fs::write(&path, &lowered).unwrap();
    assert!(matches!(vault.unlock("u", "c", b"pw"), Err(Error::Integrity(_))));
    // An attacker who also fixes the checksum still fails: the count is
    // bound into the KEK wrap's AAD.
    fix_checksum(&mut lowered);
    std::fs::write(&path, &lowered).unwrap();
    assert_eq!(vault.unlock("u", "c", b"pw").unwrap_err(), Error::BadPassphrase);
    // A count above the ceiling is refused before any work (no hang).
    let mut huge = good.clone();
    huge[ITERATIONS_AT..ITERATIONS_AT + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    fix_checksum(&mut huge);
    std::fs::write(&path, &huge).unwrap();
    assert!(matches!(vault.unlock("u", "c", b"pw"), Err(Error::Integrity(m)) if m.contains("maximum")));
    std::fs::write(&path, &good).unwrap();
    assert!(vault.unlock("u", "c", b"pw").is_ok());
}

#[test]
fn a_keyring_copied_to_another_tenant_does_not_open_there() {
    let (_d, vault) = temp_vault();
    init(&vault, "alice", "c", b"same");
    init(&vault, "bob", "c", b"same");
    vault.lock_all();
    std::fs::copy(keyring_path(&vault, "alice", "c"), keyring_path(&vault, "bob", "c")).unwrap();
    assert!(matches!(vault.unlock("bob", "c", b"same"), Err(Error::Integrity(m)) if m.contains("another tenant")));
}

#[test]
fn truncated_empty_and_oversized_keyrings_fail_cleanly() {
    let (_d, vault) = temp_vault();
    init(&vault, "u", "c", b"pw");
    vault.lock_all();
    let path = keyring_path(&vault, "u", "c");
    let good = std::fs::read(&path).unwrap();
    for n in [0, 1, 31, 32, 33, good.len() / 2, good.len() - 1] {
        std::fs::write(&path, &good[..n]).unwrap();
        assert!(matches!(vault.unlock("u", "c", b"pw"), Err(Error::Integrity(_))), "len {n}");
    }
    std::fs::write(&path, vec![0u8; 17 << 20]).unwrap();
    assert!(matches!(vault.unlock("u", "c", b"pw"), Err(Error::Integrity(m)) if m.contains("larger")));
}

#[test]
fn a_stale_lock_is_reported_by_name_and_never_broken() {
    let (_d, vault) = temp_vault();
    let s = init(&vault, "u", "c", b"pw");
    let env = s.encrypt("memory", b"before", b"").unwrap();
    let path = keyring_path(&vault, "u", "c");
    let lock = path.with_file_name("keyring.lock");
    std::fs::write(&lock, b"").unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = s.encrypt("new-scope", b"x", b"").unwrap_err();
    assert!(matches!(&err, Error::Busy(m) if m.contains("keyring.lock")), "{err}");
    assert!(lock.exists(), "the lock must not be broken");
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing written under a foreign lock");
    // Reads and encryption under existing scopes need no lock.
    assert_eq!(&s.decrypt("memory", &env, b"").unwrap()[..], b"before");
    s.encrypt("memory", b"still fine", b"").unwrap();
    std::fs::remove_file(&lock).unwrap();
    s.encrypt("new-scope", b"x", b"").unwrap();
    assert!(!lock.exists(), "our own lock is released");
}

#[test]
fn a_crashed_writers_temp_file_is_harmless() {
    let (_d, vault) = temp_vault();
    let s = init(&vault, "u", "c", b"pw");
    let env = s.encrypt("memory", b"v", b"").unwrap();
    vault.lock_all();
    let path = keyring_path(&vault, "u", "c");
    std::fs::write(path.with_file_name("keyring.tmp"), b"half-written garbage").unwrap();
    let s = vault.unlock("u", "c", b"pw").unwrap();
    assert_eq!(&s.decrypt("memory", &env, b"").unwrap()[..], b"v");
    s.encrypt("other", b"w", b"").unwrap();
    assert!(!path.with_file_name("keyring.tmp").exists());
}
