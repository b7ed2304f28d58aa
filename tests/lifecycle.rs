//! The key lifecycle through the public host API and the CLI: passphrase
//! change, rotation, retirement, rewrap, KEK rotation, recovery, usage
//! counters and the audit log.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use backendenc::{Error, Vault};
use common::{init, temp_vault, test_init};

const BIN: &str = env!("CARGO_BIN_EXE_backendenc");

fn scopes_and_versions(s: &backendenc::Session) -> Vec<(String, u32, Vec<u32>)> {
    let st = s.status().unwrap();
    st.scopes
        .into_iter()
        .map(|sc| (sc.name, sc.current_version, sc.versions.iter().map(|v| v.version).collect()))
        .collect()
}

/// Every file below `dir` except the keyring and the audit log, with its bytes.
fn data_files(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    common::files_below(dir)
        .into_iter()
        .filter(|p| dir.join(p).is_file() && !p.ends_with("keyring") && !p.ends_with("audit.log"))
        .map(|p| (p.clone(), std::fs::read(dir.join(p)).unwrap()))
        .collect()
}

#[test]
fn passwd_keeps_every_key_and_ciphertext() {
    let (_d, vault) = temp_vault();
    let s = init(&vault, "u", "c", b"old");
    let a = s.encrypt("memory", b"a", b"1").unwrap();
    let b = s.encrypt("assets", b"b", b"2").unwrap();
    // Data kept where an application would keep it: files inside the vault directory.
    let tenant_dir = vault.path().join("tenants").join(s.tenant_key());
    std::fs::write(tenant_dir.join("memory.bin"), &a).unwrap();
    std::fs::write(vault.path().join("assets.bin"), &b).unwrap();
    let files_before = data_files(vault.path());
    assert_eq!(files_before.len(), 2);
    let before = scopes_and_versions(&s);
    let kek_before = s.status().unwrap().kek_version;
    s.change_passphrase(b"new", backendenc::InitOptions { iterations: Some(2_000), ..test_init() }).unwrap();
    assert_eq!(scopes_and_versions(&s), before);
    assert_eq!(s.status().unwrap().kek_version, kek_before, "the same KEK, rewrapped");
    assert_eq!(s.status().unwrap().iterations, 2_000);
    assert_eq!(data_files(vault.path()), files_before, "data files are byte-identical after passwd");
    vault.lock_all();
    assert_eq!(vault.unlock("u", "c", b"old").unwrap_err(), Error::BadPassphrase);
    let s = vault.unlock("u", "c", b"new").unwrap();
    assert_eq!(&s.decrypt("memory", &a, b"1").unwrap()[..], b"a");
    assert_eq!(&s.decrypt("assets", &b, b"2").unwrap()[..], b"b");
}

#[test]
fn rotation_retirement_and_rewrap() {
    let (_d, vault) = temp_vault();
    let s = init(&vault, "u", "c", b"pw");
    let v1 = s.encrypt("memory", b"old data", b"r1").unwrap();
    assert_eq!(s.rotate("memory").unwrap(), 2);
    let v2 = s.encrypt("memory", b"new data", b"r2").unwrap();
    assert_eq!(&s.decrypt("memory", &v1, b"r1").unwrap()[..], b"old data", "old versions still decrypt");
    let rewrapped = s.rewrap("memory", &[(&v1[..], &b"r1"[..]), (&v2[..], &b"wrong-aad"[..])]).unwrap();
    assert!(matches!(rewrapped[1], Err(Error::Integrity(_))));
    let v1_now_v2 = rewrapped[0].as_ref().unwrap();
    let r = s.retire("memory", 2, false).unwrap();
    assert_eq!((r.min_decryption_version, r.destroyed.len()), (2, 0));
    assert!(matches!(s.decrypt("memory", &v1, b"r1"), Err(Error::Retired(_))));
    assert_eq!(&s.decrypt("memory", v1_now_v2, b"r1").unwrap()[..], b"old data");
    assert_eq!(s.rotate("nope").unwrap_err(), Error::UnknownScope("nope".into()));
    let r = s.retire("memory", 2, true).unwrap();
    assert_eq!(r.destroyed, [1]);
    assert!(matches!(s.retire("memory", 1, false), Err(Error::InvalidArgument(_))));
}

#[test]
fn kek_rotation_locks_other_sessions_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (Vault::open(dir.path()).unwrap(), Vault::open(dir.path()).unwrap());
    let a = init(&v1, "u", "c", b"pw");
    let env = a.encrypt("memory", b"kept", b"").unwrap();
    let b = v2.unlock("u", "c", b"pw").unwrap();
    assert_eq!(a.rotate_kek(b"not the passphrase").unwrap_err(), Error::BadPassphrase);
    assert_eq!(a.rotate_kek(b"pw").unwrap(), 2);
    assert_eq!(b.rotate("memory").unwrap_err(), Error::Locked);
    assert!(b.is_locked());
    let b = v2.unlock("u", "c", b"pw").unwrap();
    assert_eq!(&b.decrypt("memory", &env, b"").unwrap()[..], b"kept");
    assert_eq!(b.status().unwrap().kek_version, 2);
}

#[test]
fn recovery_key_resets_the_passphrase_across_a_kek_rotation() {
    let (_d, vault) = temp_vault();
    let s = init(&vault, "u", "c", b"forgotten");
    let env = s.encrypt("memory", b"precious", b"").unwrap();
    let key = s.add_recovery_key().unwrap();
    assert!(key.starts_with("BKR1-"));
    assert!(s.status().unwrap().recovery_key);
    s.rotate_kek(b"forgotten").unwrap();
    vault.lock_all();
    let mut typo = key.to_string();
    typo.replace_range(6..7, if &typo[6..7] == "A" { "B" } else { "A" });
    assert!(matches!(vault.recover("u", "c", &typo, b"x", test_init()), Err(Error::InvalidArgument(_))));
    let s = vault.recover("u", "c", &key, b"fresh", test_init()).unwrap();
    assert_eq!(&s.decrypt("memory", &env, b"").unwrap()[..], b"precious");
    vault.lock_all();
    assert_eq!(vault.unlock("u", "c", b"forgotten").unwrap_err(), Error::BadPassphrase);
    let s = vault.unlock("u", "c", b"fresh").unwrap();
    s.remove_recovery_key().unwrap();
    assert_eq!(vault.recover("u", "c", &key, b"again", test_init()).unwrap_err(), Error::BadRecoveryKey);
    for entry in std::fs::read_dir(vault.path().join("tenants").join(s.tenant_key())).unwrap() {
        let text = String::from_utf8_lossy(&std::fs::read(entry.unwrap().path()).unwrap()).to_string();
        assert!(!text.contains(&key[5..25]), "the recovery key must never reach disk");
    }
}

#[test]
fn usage_counters_and_auto_rotation() {
    let (_d, vault) = temp_vault();
    let s = init(&vault, "u", "c", b"pw");
    s.encrypt("memory", b"x", b"").unwrap();
    s.set_auto_rotate("memory", 3).unwrap();
    let versions: Vec<u32> = (0..7)
        .map(|_| {
            let env = s.encrypt("memory", b"x", b"").unwrap();
            u32::from_be_bytes(env[6..10].try_into().unwrap())
        })
        .collect();
    assert_eq!(versions, [2, 2, 2, 3, 3, 3, 4]);
    let st = s.status().unwrap();
    let memory = &st.scopes[0];
    assert_eq!(memory.auto_rotate_after, 3);
    assert!(memory.versions.iter().all(|v| v.encryptions <= 1024));
    assert_eq!(memory.versions.iter().find(|v| v.version == 2).unwrap().encryptions, 3);
    let log = s.audit_log().unwrap();
    assert_eq!(log.iter().filter(|e| e.event == "rotate" && e.details.contains("auto=1")).count(), 3);
}

// ----- the CLI ----------------------------------------------------------

struct Cli {
    _dir: tempfile::TempDir,
    root: PathBuf,
    vault: PathBuf,
}

fn cli() -> Cli {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::fs::write(root.join("pw"), "old-pw\n").unwrap();
    std::fs::write(root.join("new-pw"), "new-pw\n").unwrap();
    Cli { vault: root.join("vault"), root, _dir: dir }
}

impl Cli {
    fn run(&self, pwfile: &str, args: &[&str], stdin: &[u8]) -> Output {
        let mut c = Command::new("setsid");
        c.arg("-w").arg(BIN).arg("--vault").arg(&self.vault).args(args);
        c.args(["--user", "alice", "--channel", "general"]);
        if !pwfile.is_empty() {
            c.arg("--passphrase-file").arg(self.root.join(pwfile));
        }
        c.env_remove("BACKENDENC_PASSPHRASE").env_remove("BACKENDENC_NEW_PASSPHRASE").env_remove("BACKENDENC_VAULT");
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, pwfile: &str, args: &[&str], stdin: &[u8]) -> Output {
        let o = self.run(pwfile, args, stdin);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        o
    }

    fn path(&self, name: &str) -> String {
        self.root.join(name).to_str().unwrap().to_owned()
    }

    fn keyring(&self) -> Vec<u8> {
        std::fs::read(self.vault.join("tenants").join(Vault::tenant_key("alice", "general").unwrap()).join("keyring"))
            .unwrap()
    }
}

const LOW: [&str; 3] = ["--iterations", "1000", "--insecure-low-iterations-for-tests"];

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn cli_passwd_wrong_old_passphrase_changes_nothing() {
    let c = cli();
    c.ok("pw", &[&["init"][..], &LOW].concat(), b"");
    let env = c.ok("pw", &["encrypt", "--scope", "memory", "--armor"], b"secret").stdout;
    let before = c.keyring();
    let nf = c.path("new-pw");
    let o = c.run("new-pw", &[&["passwd", "--new-passphrase-file", &nf][..], &LOW].concat(), b"");
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(c.keyring(), before, "a wrong old passphrase changes nothing");
    let o = c.ok("pw", &[&["passwd", "--new-passphrase-file", &nf][..], &LOW].concat(), b"");
    assert!(stderr(&o).starts_with("passphrase changed (1000 PBKDF2 iterations)"), "{}", stderr(&o));
    assert_eq!(c.run("pw", &["decrypt", "--scope", "memory"], &env).status.code(), Some(3));
    assert_eq!(c.ok("new-pw", &["decrypt", "--scope", "memory"], &env).stdout, b"secret");
}

#[test]
fn cli_rotate_retire_rewrap() {
    let c = cli();
    c.ok("pw", &[&["init"][..], &LOW].concat(), b"");
    let old = c.ok("pw", &["encrypt", "--scope", "memory", "--armor", "--aad", "r"], b"one").stdout;
    let old2 = c.ok("pw", &["encrypt", "--scope", "memory", "--armor", "--aad", "r"], b"two").stdout;
    let o = c.ok("pw", &["rotate", "--scope", "memory"], b"");
    assert_eq!(stderr(&o), "scope \"memory\" now encrypts under key version 2\n");
    let batch = [old.clone(), old2.clone()].concat();
    let rewrapped = c.ok("pw", &["rewrap", "--scope", "memory", "--aad", "r"], &batch).stdout;
    let lines: Vec<&[u8]> = rewrapped.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 2);
    let o = c.ok("pw", &["retire", "--scope", "memory", "--below", "2"], b"");
    assert_eq!(stderr(&o), "scope \"memory\" decrypts from version 2\n");
    let o = c.run("pw", &["decrypt", "--scope", "memory", "--aad", "r"], &old);
    assert_eq!(o.status.code(), Some(4));
    assert!(stderr(&o).starts_with("backendenc: key retired: the envelope is under key version 1"), "{}", stderr(&o));
    assert_eq!(c.ok("pw", &["decrypt", "--scope", "memory", "--aad", "r"], lines[0]).stdout, b"one");
    assert_eq!(c.ok("pw", &["decrypt", "--scope", "memory", "--aad", "r"], lines[1]).stdout, b"two");
    let o = c.run("pw", &["rewrap", "--scope", "memory", "--aad", "r"], &old);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("envelope 1 of 1: key retired"), "{}", stderr(&o));
    let o = c.ok("pw", &["retire", "--scope", "memory", "--below", "2", "--destroy"], b"");
    assert_eq!(stderr(&o), "scope \"memory\" decrypts from version 2; destroyed the keys of versions [1]\n");
}

#[test]
fn cli_concurrent_rotations_from_two_processes_never_lose_a_version() {
    let c = std::sync::Arc::new(cli());
    c.ok("pw", &[&["init"][..], &LOW].concat(), b"");
    c.ok("pw", &["encrypt", "--scope", "memory"], b"x");
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let c = std::sync::Arc::clone(&c);
            std::thread::spawn(move || {
                for _ in 0..5 {
                    c.ok("pw", &["rotate", "--scope", "memory"], b"");
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().unwrap());
    let status = c.ok("pw", &["status", "--json"], b"").stdout;
    let v: serde_json::Value = serde_json::from_slice(&status).unwrap();
    let versions: Vec<u64> =
        v["scopes"][0]["versions"].as_array().unwrap().iter().map(|x| x["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, (1..=11).collect::<Vec<u64>>());
    assert_eq!(v["scopes"][0]["current_version"], 11);
}

#[test]
fn cli_init_can_create_the_recovery_key() {
    let c = cli();
    let o = c.ok("pw", &[&["init", "--recovery-key"][..], &LOW].concat(), b"");
    let key = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(key.starts_with("BKR1-"), "{key}");
    assert!(stderr(&o).contains("shown once and stored nowhere"), "{}", stderr(&o));
    let status = c.ok("pw", &["status", "--json"], b"").stdout;
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&status).unwrap()["recovery_key"], true);
}

#[test]
fn cli_recovery_and_rotate_kek() {
    let c = cli();
    c.ok("pw", &[&["init"][..], &LOW].concat(), b"");
    let env = c.ok("pw", &["encrypt", "--scope", "memory", "--armor"], b"data").stdout;
    let o = c.ok("pw", &["recovery-key", "add"], b"");
    let key = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(key.starts_with("BKR1-") && key.ends_with('\n'), "{key}");
    assert!(stderr(&o).contains("shown once and stored nowhere"));
    let o = c.ok("pw", &["rotate-kek"], b"");
    assert!(stderr(&o).starts_with("key-encryption key replaced (now version 2)"), "{}", stderr(&o));
    std::fs::write(c.root.join("rk"), &key).unwrap();
    let (rk, nf) = (c.path("rk"), c.path("new-pw"));
    let o = c.ok("", &[&["recover", "--recovery-key-file", &rk, "--new-passphrase-file", &nf][..], &LOW].concat(), b"");
    assert!(stderr(&o).starts_with("passphrase reset with the recovery key"), "{}", stderr(&o));
    assert_eq!(c.ok("new-pw", &["decrypt", "--scope", "memory"], &env).stdout, b"data");
    std::fs::write(c.root.join("bad"), "BKR1-AAAAA").unwrap();
    let bad = c.path("bad");
    let o =
        c.run("", &[&["recover", "--recovery-key-file", &bad, "--new-passphrase-file", &nf][..], &LOW].concat(), b"");
    assert_eq!(stderr(&o), "backendenc: invalid argument: recovery key has the wrong length\n");
    c.ok("new-pw", &["recovery-key", "remove"], b"");
    let o =
        c.run("", &[&["recover", "--recovery-key-file", &rk, "--new-passphrase-file", &nf][..], &LOW].concat(), b"");
    assert_eq!(
        (o.status.code(), stderr(&o)),
        (Some(3), "backendenc: wrong recovery key (or this tenant has none)\n".into())
    );
}

#[test]
fn cli_audit_lists_events_and_detects_tampering() {
    let c = cli();
    c.ok("pw", &[&["init"][..], &LOW].concat(), b"");
    c.ok("pw", &["encrypt", "--scope", "memory"], b"x");
    assert_eq!(c.run("new-pw", &["status"], b"").status.code(), Some(3));
    c.ok("pw", &["rotate", "--scope", "memory"], b"");
    let out = String::from_utf8(c.ok("pw", &["audit"], b"").stdout).unwrap();
    let events: Vec<&str> = out.lines().map(|l| l.split_whitespace().nth(2).unwrap()).collect();
    assert_eq!(
        events,
        ["init", "lock", "unlock", "lock", "unlock-failed", "unlock", "rotate", "lock", "unlock"],
        "{out}"
    );
    assert!(out.contains("rotate scope=\"memory\" version=2"), "{out}");
    assert!(out.lines().nth(4).unwrap().ends_with("(unauthenticated: written without the key)"), "{out}");
    let log = c.vault.join("tenants").join(Vault::tenant_key("alice", "general").unwrap()).join("audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("memory"));
    std::fs::write(&log, text.replacen(" unlock ", " unlocq ", 1)).unwrap();
    let o = c.run("pw", &["audit"], b"");
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(stderr(&o), "backendenc: integrity check failed: audit log line 3 was altered\n");
}
