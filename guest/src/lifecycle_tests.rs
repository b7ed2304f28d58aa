//! Native tests of the key lifecycle, including crash safety: every write
//! step of every lifecycle operation is made to "crash" in turn.

use crate::error::Error;
use crate::storage::fault;
use crate::vault::{InitOptions, Vault};
use crate::{Session, audit};

const OLD: &[u8] = b"old passphrase";
const NEW: &[u8] = b"new passphrase";

fn low() -> InitOptions {
    InitOptions { iterations: Some(1_000), insecure_allow_low_iterations_for_testing: true }
}

/// (scope, plaintext, aad, envelope)
type Sealed = (&'static str, Vec<u8>, Vec<u8>, Vec<u8>);

struct Fixture {
    _dir: tempfile_lite::TempDir,
    vault: Vault,
    envelopes: Vec<Sealed>,
    recovery: String,
}

/// A tenant with data under two scopes and two versions, and a recovery key.
fn fixture() -> Fixture {
    let dir = tempfile_lite::TempDir::new();
    let vault = Vault::new(dir.path());
    let mut s = vault.init("u", "c", OLD, low()).unwrap();
    let mut envelopes = Vec::new();
    for (i, scope) in ["memory", "assets", "memory"].into_iter().enumerate() {
        let pt = format!("plaintext {i}").into_bytes();
        let aad = vec![i as u8];
        envelopes.push((scope, pt.clone(), aad.clone(), s.encrypt(scope, &pt, &aad).unwrap()));
        if i == 0 {
            s.rotate("memory").unwrap();
        }
    }
    let recovery = s.add_recovery_key().unwrap().to_string();
    Fixture { _dir: dir, vault, envelopes, recovery }
}

fn check_everything_decrypts(s: &mut Session, f: &Fixture) {
    for (scope, pt, aad, env) in &f.envelopes {
        assert_eq!(&s.decrypt(scope, env, aad).unwrap()[..], &pt[..]);
    }
}

fn remove_stale_locks(f: &Fixture) {
    let dir = f.vault_dir();
    for name in ["keyring.lock", "audit.lock"] {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

impl Fixture {
    fn vault_dir(&self) -> std::path::PathBuf {
        self._dir.path().join(crate::tenant::TenantKey::derive("u", "c").unwrap().relative_dir())
    }
}

/// Runs `op` with a crash injected at write step 0, 1, 2, … until it runs
/// through; after each crash the tenant must open with the old or the new
/// passphrase, decrypt everything written before, and keep a valid audit log.
fn crash_at_every_step(name: &str, op: impl Fn(&Fixture, &mut Session) -> crate::Result<()>) {
    let mut steps = 0;
    for n in 0.. {
        let f = fixture();
        let mut s = f.vault.unlock("u", "c", OLD).unwrap();
        fault::arm(n);
        let result = op(&f, &mut s);
        let crashed = fault::disarm();
        drop(s);
        if !crashed {
            result.unwrap_or_else(|e| panic!("{name} without a crash: {e}"));
            steps = n;
            break;
        }
        assert!(result.is_err(), "{name}: a crash at step {n} must be reported");
        remove_stale_locks(&f);
        let mut s = f
            .vault
            .unlock("u", "c", OLD)
            .or_else(|_| f.vault.unlock("u", "c", NEW))
            .unwrap_or_else(|e| panic!("{name}: crash at step {n} left the tenant unopenable: {e}"));
        check_everything_decrypts(&mut s, &f);
        s.audit_log().unwrap_or_else(|e| panic!("{name}: crash at step {n} broke the audit log: {e}"));
        assert!(n < 100, "{name} never completed");
    }
    assert!(steps >= 4, "{name} has only {steps} write steps: the injection is not reaching it");
}

#[test]
fn passwd_survives_a_crash_at_every_step() {
    crash_at_every_step("passwd", |_, s| s.change_passphrase(NEW, low()));
}

#[test]
fn rotate_survives_a_crash_at_every_step() {
    crash_at_every_step("rotate", |_, s| s.rotate("memory").map(|_| ()));
}

#[test]
fn rotate_kek_survives_a_crash_at_every_step() {
    crash_at_every_step("rotate-kek", |_, s| s.rotate_kek(OLD).map(|_| ()));
}

#[test]
fn recovery_key_add_survives_a_crash_at_every_step() {
    crash_at_every_step("recovery-key add", |_, s| s.add_recovery_key().map(|_| ()));
}

#[test]
fn recover_survives_a_crash_at_every_step() {
    crash_at_every_step("recover", |f, _| f.vault.recover("u", "c", &f.recovery, NEW, low()).map(|_| ()));
}

#[test]
fn retire_and_rewrap_survive_a_crash_at_every_step() {
    crash_at_every_step("rewrap", |f, s| {
        let items: Vec<_> =
            f.envelopes.iter().filter(|e| e.0 == "memory").map(|e| (e.3.clone(), e.2.clone())).collect();
        s.rewrap("memory", &items).map(|_| ())
    });
    crash_at_every_step("retire", |_, s| s.retire("assets", 1, false).map(|_| ()));
}

#[test]
fn passwd_changes_only_the_passphrase_wrap() {
    let f = fixture();
    let mut s = f.vault.unlock("u", "c", OLD).unwrap();
    let before = s.status();
    s.change_passphrase(NEW, InitOptions { iterations: Some(2_000), ..low() }).unwrap();
    let after = s.status();
    assert_eq!(before.scopes, after.scopes, "no DEK changes");
    assert_eq!(before.kek_version, after.kek_version, "the KEK is the same");
    assert_eq!(after.iterations, 2_000);
    drop(s);
    assert_eq!(f.vault.unlock("u", "c", OLD).unwrap_err(), Error::BadPassphrase);
    check_everything_decrypts(&mut f.vault.unlock("u", "c", NEW).unwrap(), &f);
}

#[test]
fn rotation_retirement_and_destruction() {
    let f = fixture();
    let mut s = f.vault.unlock("u", "c", OLD).unwrap();
    let v1 = &f.envelopes[0].3; // memory v1
    assert_eq!(s.rotate("memory").unwrap(), 3);
    let v3 = s.encrypt("memory", b"new", b"").unwrap();
    assert_eq!(crate::envelope::Envelope::parse(&v3).unwrap().key_version, 3);
    assert_eq!(&s.decrypt("memory", v1, &[0]).unwrap()[..], b"plaintext 0");
    let r = s.retire("memory", 2, false).unwrap();
    assert_eq!((r.min_decryption_version, r.destroyed.len()), (2, 0));
    assert!(matches!(s.decrypt("memory", v1, &[0]), Err(Error::Retired(_))));
    // Lowering again is allowed while the keys exist…
    s.retire("memory", 1, false).unwrap();
    assert_eq!(&s.decrypt("memory", v1, &[0]).unwrap()[..], b"plaintext 0");
    // …but not below destroyed versions.
    let r = s.retire("memory", 2, true).unwrap();
    assert_eq!(r.destroyed, [1]);
    assert!(matches!(s.retire("memory", 1, false), Err(Error::InvalidArgument(m)) if m.contains("destroyed")));
    assert!(matches!(s.decrypt("memory", v1, &[0]), Err(Error::Retired(_))));
    assert!(matches!(s.retire("memory", 4, false), Err(Error::InvalidArgument(_))));
    assert_eq!(s.rotate("nope").unwrap_err(), Error::UnknownScope("nope".into()));
    assert_eq!(s.status().scopes.len(), 2, "rotating an unknown scope must not create it");
}

#[test]
fn rewrap_moves_envelopes_to_the_current_version() {
    let f = fixture();
    let mut s = f.vault.unlock("u", "c", OLD).unwrap();
    let items: Vec<_> = f.envelopes.iter().filter(|e| e.0 == "memory").map(|e| (e.3.clone(), e.2.clone())).collect();
    let mut bad = items[0].clone();
    bad.0[40] ^= 1;
    let mut all = items.clone();
    all.push(bad);
    let out = s.rewrap("memory", &all).unwrap();
    assert!(matches!(out[2], Err(Error::Integrity(_))));
    for (r, (_, aad)) in out.iter().take(2).zip(&items) {
        let env = r.as_ref().unwrap();
        assert_eq!(crate::envelope::Envelope::parse(env).unwrap().key_version, 2);
        s.decrypt("memory", env, aad).unwrap();
    }
}

#[test]
fn kek_rotation_rewraps_dek_and_recovery_and_locks_other_sessions() {
    let f = fixture();
    let mut a = f.vault.unlock("u", "c", OLD).unwrap();
    let mut b = f.vault.unlock("u", "c", OLD).unwrap();
    assert_eq!(a.rotate_kek(b"wrong").unwrap_err(), Error::BadPassphrase);
    assert_eq!(a.rotate_kek(OLD).unwrap(), 2);
    check_everything_decrypts(&mut a, &f);
    assert_eq!(b.rotate("memory").unwrap_err(), Error::Locked, "a session holding the old KEK cannot write");
    drop((a, b));
    let mut s = f.vault.recover("u", "c", &f.recovery, NEW, low()).unwrap();
    check_everything_decrypts(&mut s, &f);
}

#[test]
fn recovery_key_lifecycle() {
    let f = fixture();
    assert!(f.vault.recover("u", "c", &f.recovery, NEW, low()).is_ok());
    let mut s = f.vault.unlock("u", "c", NEW).unwrap();
    let replacement = s.add_recovery_key().unwrap().to_string();
    assert_eq!(f.vault.recover("u", "c", &f.recovery, OLD, low()).unwrap_err(), Error::BadRecoveryKey);
    s.remove_recovery_key().unwrap();
    assert_eq!(f.vault.recover("u", "c", &replacement, OLD, low()).unwrap_err(), Error::BadRecoveryKey);
    assert!(s.remove_recovery_key().is_err());
    // The recovery key never reaches disk.
    for entry in std::fs::read_dir(f.vault_dir()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&replacement[5..20]) && !text.contains(&f.recovery[5..20]));
    }
}

#[test]
fn usage_is_counted_in_blocks_and_auto_rotation_kicks_in() {
    let f = fixture();
    let mut s = f.vault.unlock("u", "c", OLD).unwrap();
    let g0 = s.status().generation;
    for _ in 0..10 {
        s.encrypt("assets", b"x", b"").unwrap();
    }
    let st = s.status();
    assert_eq!(st.generation, g0 + 1, "ten encryptions cost one reservation write");
    let assets = st.scopes.iter().find(|x| x.name == "assets").unwrap();
    assert!(assets.versions[0].encryptions >= 11, "{assets:?}");
    s.set_auto_rotate("assets", 5).unwrap();
    let mut versions = Vec::new();
    for _ in 0..12 {
        let env = s.encrypt("assets", b"y", b"").unwrap();
        versions.push(crate::envelope::Envelope::parse(&env).unwrap().key_version);
    }
    // Version 1 is already past 5 uses: rotate at once, then every 5.
    assert_eq!(versions, [2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4]);
}

#[test]
fn the_audit_log_records_events_and_detects_edits() {
    let f = fixture();
    let _ = f.vault.unlock("u", "c", b"wrong");
    let mut s = f.vault.unlock("u", "c", OLD).unwrap();
    s.rotate("assets").unwrap();
    let log = s.audit_log().unwrap();
    let events: Vec<&str> = log.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(events, ["init", "rotate", "recovery-key-add", "unlock-failed", "unlock", "rotate"]);
    assert!(log.iter().all(|e| e.authenticated == (e.event != "unlock-failed")));
    assert!(log[5].details.contains("scope=\"assets\""), "{:?}", log[5]);
    let path = f.vault_dir().join(audit::AUDIT_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("assets") && !text.contains("memory"), "scope names never in the log");
    // Editing a past line is detected.
    std::fs::write(&path, text.replacen("rotate", "rotatf", 1)).unwrap();
    assert!(matches!(s.audit_log(), Err(Error::Integrity(m)) if m.contains("line 2")));
    // Cutting the log short is detected through the keyring's anchor.
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&path, lines[..2].join("\n") + "\n").unwrap();
    assert!(matches!(s.audit_log(), Err(Error::Integrity(m)) if m.contains("cut short")));
    std::fs::write(&path, text).unwrap();
    assert_eq!(s.audit_log().unwrap().len(), 6);
}

/// A throwaway directory (the guest crate has no tempfile dependency).
mod tempfile_lite {
    pub struct TempDir(std::path::PathBuf);
    impl TempDir {
        pub fn new() -> Self {
            let mut r = [0u8; 8];
            crate::keys::fill_random(&mut r).unwrap();
            let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
            let p = std::env::temp_dir().join(format!("bkenc-life-{hex}"));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
