//! The vault through the public host API: round trips, tenant separation,
//! enrolment rules, hostile ids, concurrency and auto-lock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use backendenc::{Error, InitOptions, Runtime, Vault, VaultOptions};
use common::{files_below, init, temp_vault, test_init};

#[test]
fn round_trips_empty_small_and_one_mebibyte() {
    let (_d, vault) = temp_vault();
    let s = init(&vault, "alice", "general", b"pw");
    let big: Vec<u8> = (0..1 << 20).map(|i| (i * 31 % 251) as u8).collect();
    for pt in [&b""[..], b"x", &big] {
        let env = s.encrypt("memory", pt, b"").unwrap();
        assert_eq!(env.len(), pt.len() + 50);
        assert_eq!(&s.decrypt("memory", &env, b"").unwrap()[..], pt);
        let armored = backendenc::armor(&env).unwrap();
        assert_eq!(&s.decrypt("memory", armored.as_bytes(), b"").unwrap()[..], pt);
    }
}

#[test]
fn unicode_ids_and_passphrases() {
    let (_d, vault) = temp_vault();
    let pw = "hunter2-ñ-密码-🚀".as_bytes();
    let s = init(&vault, "ユーザー", "канал 🚀", pw);
    let env = s.encrypt("mémoire", "Bob fragt – ä ö ü ß".as_bytes(), "ctx-ü".as_bytes()).unwrap();
    drop(s);
    vault.lock_all();
    let s = vault.unlock("ユーザー", "канал 🚀", pw).unwrap();
    assert_eq!(&s.decrypt("mémoire", &env, "ctx-ü".as_bytes()).unwrap()[..], "Bob fragt – ä ö ü ß".as_bytes());
}

#[test]
fn a_new_session_after_restart_decrypts_what_an_old_one_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let env = {
        let vault = Vault::open(dir.path()).unwrap();
        let s = init(&vault, "u", "c", b"pw");
        s.encrypt("memory", b"persisted", b"").unwrap()
    };
    let vault = Vault::open(dir.path()).unwrap();
    let s = vault.unlock("u", "c", b"pw").unwrap();
    assert_eq!(&s.decrypt("memory", &env, b"").unwrap()[..], b"persisted");
}

#[test]
fn wrong_passphrase_is_bad_passphrase() {
    let (_d, vault) = temp_vault();
    init(&vault, "u", "c", b"right");
    assert_eq!(vault.unlock("u", "c", b"wrong").unwrap_err(), Error::BadPassphrase);
    assert_eq!(vault.unlock("u", "c", b"").unwrap_err(), Error::BadPassphrase);
    assert!(vault.unlock("u", "c", b"right").is_ok());
}

#[test]
fn init_and_unlock_are_separate() {
    let (_d, vault) = temp_vault();
    assert_eq!(vault.unlock("u", "c", b"pw").unwrap_err(), Error::NotInitialized);
    assert!(files_below(&vault.path().join("tenants")).is_empty(), "unlock must not create anything");
    init(&vault, "u", "c", b"pw");
    assert_eq!(vault.init("u", "c", b"other", test_init()).unwrap_err(), Error::AlreadyInitialized);
    // The failed second init changed nothing: the first passphrase still works.
    assert!(vault.unlock("u", "c", b"pw").is_ok());
    assert_eq!(vault.unlock("u", "c", b"other").unwrap_err(), Error::BadPassphrase);
}

#[test]
fn concurrent_enrolments_of_one_tenant_have_exactly_one_winner() {
    let (_d, vault) = temp_vault();
    let handles: Vec<_> = (0..6u8)
        .map(|i| {
            let vault = vault.clone();
            std::thread::spawn(move || (i, vault.init("u", "c", &[b'p', i], test_init())))
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners: Vec<u8> = results.iter().filter(|(_, r)| r.is_ok()).map(|(i, _)| *i).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (_, r) in &results {
        if let Err(e) = r {
            assert_eq!(e, &Error::AlreadyInitialized);
        }
    }
    vault.lock_all();
    assert!(vault.unlock("u", "c", &[b'p', winners[0]]).is_ok());
    let names = files_below(&vault.path().join("tenants"));
    assert_eq!(names.iter().filter(|p| p.components().count() == 1).count(), 1, "no staging left: {names:?}");
}

#[test]
fn a_tenant_directory_without_a_keyring_is_reported_not_clobbered() {
    let (_d, vault) = temp_vault();
    let dir = vault.path().join("tenants").join(Vault::tenant_key("u", "c").unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keyring.lock"), b"").unwrap();
    let err = vault.init("u", "c", b"pw", test_init()).unwrap_err();
    assert!(matches!(&err, Error::Storage(m) if m.contains(dir.to_str().unwrap())), "{err}");
    assert!(dir.join("keyring.lock").exists());
    // An empty leftover directory is simply taken over.
    std::fs::remove_file(dir.join("keyring.lock")).unwrap();
    assert!(vault.init("u", "c", b"pw", test_init()).is_ok());
}

#[test]
fn weak_kdf_is_refused_without_the_test_override() {
    let (_d, vault) = temp_vault();
    let weak = InitOptions { iterations: Some(99_999), insecure_allow_low_iterations_for_testing: false };
    assert!(matches!(vault.init("u", "c", b"pw", weak), Err(Error::InvalidArgument(m)) if m.contains("99999")));
    let huge = InitOptions { iterations: Some(50_000_000), insecure_allow_low_iterations_for_testing: true };
    assert!(matches!(vault.init("u", "c", b"pw", huge), Err(Error::InvalidArgument(m)) if m.contains("maximum")));
    assert!(matches!(vault.init("u", "c", b"", test_init()), Err(Error::InvalidArgument(_))));
    assert!(files_below(&vault.path().join("tenants")).is_empty(), "failed init must leave nothing behind");
    let ok = InitOptions { iterations: Some(100_000), insecure_allow_low_iterations_for_testing: false };
    let s = vault.init("u", "c", b"pw", ok).unwrap();
    assert_eq!(s.status().unwrap().iterations, 100_000);
}

#[test]
fn decrypt_never_creates_keys() {
    let (_d, vault) = temp_vault();
    let alice = init(&vault, "alice", "general", b"pw");
    let bob = init(&vault, "bob", "general", b"pw");
    let env = alice.encrypt("memory", b"m", b"").unwrap();
    let before = std::fs::read(common::keyring_path(&vault, "bob", "general")).unwrap();
    assert_eq!(bob.decrypt("memory", &env, b"").unwrap_err(), Error::UnknownScope("memory".into()));
    assert_eq!(std::fs::read(common::keyring_path(&vault, "bob", "general")).unwrap(), before);
    assert!(bob.status().unwrap().scopes.is_empty());
}

#[test]
fn encrypt_creates_a_scope_on_first_use_and_status_reports_it() {
    let (_d, vault) = temp_vault();
    let s = init(&vault, "u", "c", b"pw");
    let g0 = s.status().unwrap().generation;
    s.encrypt("memory", b"a", b"").unwrap();
    s.encrypt("memory", b"b", b"").unwrap();
    s.encrypt("assets", b"c", b"").unwrap();
    let st = s.status().unwrap();
    assert_eq!(st.generation, g0 + 2, "one keyring write per new scope, none per encryption");
    let names: Vec<_> = st.scopes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["assets", "memory"]);
    assert!(st.scopes.iter().all(|s| s.current_version == 1 && s.versions.len() == 1 && s.versions[0].version == 1));
    let memory = st.scopes.iter().find(|s| s.name == "memory").unwrap();
    assert!(memory.versions[0].encryptions >= 2, "usage is counted (as an upper bound)");
    assert_eq!(st.kdf, "pbkdf2-hmac-sha256");
    assert_eq!(st.tenant_key, Vault::tenant_key("u", "c").unwrap());
}

#[test]
fn ciphertexts_do_not_move_between_tenants_scopes_or_aad() {
    let (_d, vault) = temp_vault();
    let a = init(&vault, "a", "c", b"pw");
    let b = init(&vault, "b", "c", b"pw");
    let env = a.encrypt("memory", b"secret", b"record-1").unwrap();
    a.encrypt("notes", b"n", b"").unwrap();
    b.encrypt("memory", b"b's", b"").unwrap();
    assert!(matches!(b.decrypt("memory", &env, b"record-1"), Err(Error::Integrity(_))));
    assert!(matches!(a.decrypt("notes", &env, b"record-1"), Err(Error::Integrity(_))));
    assert!(matches!(a.decrypt("memory", &env, b"record-2"), Err(Error::Integrity(_))));
    assert!(matches!(a.decrypt("memory", &env, b""), Err(Error::Integrity(_))));
    assert_eq!(&a.decrypt("memory", &env, b"record-1").unwrap()[..], b"secret");
}

#[test]
fn colon_tenants_are_distinct() {
    let (_d, vault) = temp_vault();
    let one = init(&vault, "a:b", "c", b"pw");
    let two = init(&vault, "a", "b:c", b"pw");
    assert_ne!(one.tenant_key(), two.tenant_key());
    let env = one.encrypt("memory", b"one's", b"").unwrap();
    two.encrypt("memory", b"two's", b"").unwrap();
    assert!(matches!(two.decrypt("memory", &env, b""), Err(Error::Integrity(_))));
    assert_eq!(files_below(&vault.path().join("tenants")).iter().filter(|p| p.components().count() == 1).count(), 2);
}

#[test]
fn hostile_ids_stay_inside_the_vault_and_never_reach_disk() {
    let outer = tempfile::tempdir().unwrap();
    let vault = Vault::open(outer.path().join("vault")).unwrap();
    let long = "x".repeat(1024);
    let ids = ["../x", "../../etc/passwd", "/", "/tmp/abs", "a/b", ".", "..", "nul\0byte", "\u{202e}rtl", &long];
    for id in ids {
        let s = init(&vault, id, id, b"pw");
        let env = s.encrypt("memory", b"v", b"").unwrap();
        assert_eq!(&s.decrypt("memory", &env, b"").unwrap()[..], b"v");
    }
    // Everything is below vault/tenants/<64 hex>/, and no id appears in a name.
    assert_eq!(files_below(outer.path()).iter().filter(|p| p.components().count() == 1).count(), 1);
    for p in files_below(&vault.path().join("tenants")) {
        let first = p.components().next().unwrap().as_os_str().to_str().unwrap().to_owned();
        assert_eq!(first.len(), 64, "{p:?}");
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(p.components().count() <= 2);
    }
    let too_long = "x".repeat(1025);
    for (u, c) in [("", "c"), ("u", ""), (too_long.as_str(), "c"), ("u", too_long.as_str())] {
        assert!(matches!(vault.init(u, c, b"pw", test_init()), Err(Error::InvalidArgument(_))));
        assert!(matches!(vault.unlock(u, c, b"pw"), Err(Error::InvalidArgument(_))));
    }
    assert!(matches!(Vault::tenant_key("", "c"), Err(Error::InvalidArgument(_))));
}

#[test]
fn scope_names_are_checked_and_never_on_disk() {
    let (_d, vault) = temp_vault();
    let s = init(&vault, "u", "c", b"pw");
    assert!(matches!(s.encrypt("", b"x", b""), Err(Error::InvalidArgument(_))));
    assert!(matches!(s.encrypt(&"s".repeat(256), b"x", b""), Err(Error::InvalidArgument(_))));
    s.encrypt("a-very-visible-scope-name", b"x", b"").unwrap();
    let bytes = std::fs::read(common::keyring_path(&vault, "u", "c")).unwrap();
    assert!(!bytes.windows(10).any(|w| w == b"a-very-vis"));
}

#[test]
fn a_scope_added_by_another_session_is_seen_without_unlocking_again() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = Vault::open(dir.path()).unwrap();
    let v2 = Vault::open(dir.path()).unwrap();
    let s1 = init(&v1, "u", "c", b"pw");
    let s2 = v2.unlock("u", "c", b"pw").unwrap();
    let env = s1.encrypt("late-scope", b"hello", b"").unwrap();
    assert_eq!(&s2.decrypt("late-scope", &env, b"").unwrap()[..], b"hello");
    // And both sessions creating the same scope converge on one key.
    let e1 = s1.encrypt("shared", b"1", b"").unwrap();
    let e2 = s2.encrypt("shared", b"2", b"").unwrap();
    assert_eq!(&s2.decrypt("shared", &e1, b"").unwrap()[..], b"1");
    assert_eq!(&s1.decrypt("shared", &e2, b"").unwrap()[..], b"2");
}

#[test]
fn many_threads_on_many_tenants() {
    let (_d, vault) = temp_vault();
    let tenants: Vec<String> = (0..6).map(|i| format!("user-{i}")).collect();
    for t in &tenants {
        init(&vault, t, "chan", t.as_bytes());
    }
    let vault = Arc::new(vault);
    let handles: Vec<_> = (0..12)
        .map(|i| {
            let vault = Arc::clone(&vault);
            let user = tenants[i % tenants.len()].clone();
            std::thread::spawn(move || {
                let s = vault.session(&user, "chan").unwrap().expect("unlocked by init");
                let mut out = Vec::new();
                for j in 0..20 {
                    let pt = format!("{user} thread {i} message {j}");
                    let scope = if j % 2 == 0 { "memory" } else { "assets" };
                    out.push((scope, pt.clone(), s.encrypt(scope, pt.as_bytes(), &[i as u8]).unwrap(), i));
                }
                (user, out)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // Everything decrypts, from fresh sessions (a restart), under the right tenant only.
    vault.lock_all();
    for (user, items) in results {
        let s = vault.unlock(&user, "chan", user.as_bytes()).unwrap();
        for (scope, pt, env, i) in items {
            assert_eq!(&s.decrypt(scope, &env, &[i as u8]).unwrap()[..], pt.as_bytes());
        }
    }
}

#[test]
fn different_tenants_run_in_parallel() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (_d, vault) = temp_vault();
    let slow = InitOptions { iterations: Some(3_000_000), insecure_allow_low_iterations_for_testing: false };
    vault.init("slow", "c", b"pw", slow).unwrap();
    let fast = init(&vault, "fast", "c", b"pw");
    let done = Arc::new(AtomicBool::new(false));
    let (v, d) = (vault.clone(), Arc::clone(&done));
    let started = Arc::new(std::sync::Barrier::new(2));
    let s2 = Arc::clone(&started);
    let slow_thread = std::thread::spawn(move || {
        s2.wait();
        v.unlock("slow", "c", b"pw").unwrap();
        d.store(true, Ordering::SeqCst);
    });
    started.wait();
    std::thread::sleep(Duration::from_millis(50));
    // While the slow tenant derives its key, the fast one works normally.
    for i in 0..20u8 {
        let env = fast.encrypt("memory", &[i], b"").unwrap();
        assert_eq!(&fast.decrypt("memory", &env, b"").unwrap()[..], &[i]);
    }
    assert!(!done.load(Ordering::SeqCst), "the fast tenant had to wait for the slow one");
    slow_thread.join().unwrap();
    assert!(done.load(Ordering::SeqCst));
}

#[test]
fn sessions_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Vault>();
    assert_send_sync::<backendenc::Session>();
}

#[test]
fn lock_zeroizes_and_later_calls_fail() {
    let (_d, vault) = temp_vault();
    let s = init(&vault, "u", "c", b"pw");
    let env = s.encrypt("memory", b"x", b"").unwrap();
    assert!(vault.session("u", "c").unwrap().is_some());
    s.lock();
    assert!(s.is_locked());
    assert_eq!(s.decrypt("memory", &env, b"").unwrap_err(), Error::Locked);
    assert_eq!(s.encrypt("memory", b"x", b"").unwrap_err(), Error::Locked);
    assert!(vault.session("u", "c").unwrap().is_none());
}

#[test]
fn unlocking_again_replaces_the_previous_session() {
    let (_d, vault) = temp_vault();
    let first = init(&vault, "u", "c", b"pw");
    let second = vault.unlock("u", "c", b"pw").unwrap();
    assert!(first.is_locked());
    assert!(!second.is_locked());
}

#[test]
fn idle_sessions_lock_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let options = VaultOptions { idle_timeout: Some(Duration::from_millis(200)), ..VaultOptions::default() };
    let vault = Vault::open_with(dir.path(), Runtime::shared().unwrap(), options).unwrap();
    let idle = init(&vault, "idle", "c", b"pw");
    let busy = init(&vault, "busy", "c", b"pw");
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(50));
        busy.encrypt("memory", b"keep alive", b"").unwrap();
    }
    assert!(idle.is_locked(), "a session unused for 600 ms must be locked by a 200 ms idle timeout");
    assert!(!busy.is_locked());
    assert_eq!(idle.encrypt("memory", b"x", b"").unwrap_err(), Error::Locked);
    assert!(vault.session("idle", "c").unwrap().is_none());
}

#[test]
fn a_runaway_call_is_stopped_by_the_cpu_bound() {
    let dir = tempfile::tempdir().unwrap();
    let options = VaultOptions { call_timeout: Duration::from_millis(100), ..VaultOptions::default() };
    let vault = Vault::open_with(dir.path(), Runtime::shared().unwrap(), options).unwrap();
    // 10 million PBKDF2 iterations take seconds in the component.
    let slow = InitOptions { iterations: Some(10_000_000), insecure_allow_low_iterations_for_testing: false };
    assert!(matches!(vault.init("u", "c", b"pw", slow), Err(Error::Timeout(_))));
    assert!(files_below(&vault.path().join("tenants")).is_empty(), "an interrupted init leaves nothing");
}

#[test]
fn the_memory_limit_bounds_an_instance() {
    let dir = tempfile::tempdir().unwrap();
    let options = VaultOptions { memory_limit: 4 << 20, ..VaultOptions::default() };
    let vault = Vault::open_with(dir.path(), Runtime::shared().unwrap(), options).unwrap();
    let s = init(&vault, "u", "c", b"pw");
    s.encrypt("memory", b"small is fine", b"").unwrap();
    let err = s.encrypt("memory", &vec![0u8; 8 << 20], b"").unwrap_err();
    assert!(matches!(err, Error::Runtime(_)), "{err}");
    assert!(s.is_locked(), "a trapped instance is dropped");
    // The vault is intact: a new session works.
    let s = vault.unlock("u", "c", b"pw").unwrap();
    s.encrypt("memory", b"after", b"").unwrap();
}
