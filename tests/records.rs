//! Named records through the host API and the CLI: round trips, names
//! hidden on disk, records bound to their name and scope, and concurrent
//! writers from two processes.

mod common;

use backendenc::Error;
use common::{files_below, init, run_cli as cli, temp_vault};

#[test]
fn put_get_overwrite_delete_list() {
    let (_d, vault) = temp_vault();
    let s = init(&vault, "alice", "general", b"pw");
    s.put_record("memory", "history", b"[user] hi").unwrap();
    s.put_record("memory", "history", b"[user] hi\n[agent] hello").unwrap();
    s.put_record("memory", "profile", "{\"tz\":\"Europe/Berlin\"} ü".as_bytes()).unwrap();
    s.put_record("notes", "todo", b"").unwrap();
    assert_eq!(&s.get_record("memory", "history").unwrap()[..], b"[user] hi\n[agent] hello");
    assert_eq!(&s.get_record("notes", "todo").unwrap()[..], b"");
    assert_eq!(s.list_records("memory").unwrap(), ["history", "profile"]);
    s.delete_record("memory", "history").unwrap();
    assert_eq!(s.list_records("memory").unwrap(), ["profile"]);
    assert!(matches!(s.get_record("memory", "history"), Err(Error::NotFound(_))));
    // A fresh session (a restart) reads the same.
    vault.lock_all();
    let s = vault.unlock("alice", "general", b"pw").unwrap();
    assert_eq!(&s.get_record("memory", "profile").unwrap()[..], "{\"tz\":\"Europe/Berlin\"} ü".as_bytes());
    // Names, scopes and values never appear on disk.
    for p in files_below(vault.path()) {
        let path = vault.path().join(&p);
        assert!(!p.to_string_lossy().contains("profile") && !p.to_string_lossy().contains("memory"), "{p:?}");
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            for word in [&b"profile"[..], b"history", b"Berlin"] {
                assert!(!bytes.windows(word.len()).any(|w| w == word), "{p:?}");
            }
        }
    }
}

#[test]
fn records_are_separated_between_tenants() {
    let (_d, vault) = temp_vault();
    let a = init(&vault, "a:b", "c", b"pw");
    let b = init(&vault, "a", "b:c", b"pw");
    a.put_record("memory", "history", b"a's").unwrap();
    assert!(matches!(b.get_record("memory", "history"), Err(Error::NotFound(_))));
    assert!(b.list_records("memory").unwrap().is_empty());
}

#[test]
fn a_record_copied_over_another_fails_to_decrypt() {
    let (_d, vault) = temp_vault();
    let s = init(&vault, "u", "c", b"pw");
    s.put_record("memory", "a", b"value a").unwrap();
    let dir = vault.path().join("tenants").join(s.tenant_key()).join("records");
    let before: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    s.put_record("memory", "b", b"value b").unwrap();
    let new: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !before.contains(p) && p.extension().is_none())
        .collect();
    assert_eq!(new.len(), 1);
    let a = before.iter().find(|p| p.extension().is_none()).unwrap();
    std::fs::copy(a, &new[0]).unwrap();
    assert!(matches!(s.get_record("memory", "b"), Err(Error::Integrity(_))));
}

#[test]
fn cli_put_get_rm_ls_and_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, pw) = (dir.path().join("vault"), dir.path().join("pw"));
    std::fs::write(&pw, "pw\n").unwrap();
    assert!(
        cli(&vault, &pw, &["init", "--iterations", "1000", "--insecure-low-iterations-for-tests"], b"")
            .status
            .success()
    );
    assert!(
        cli(&vault, &pw, &["put", "--scope", "memory", "history", "--value", "from an argument"], b"").status.success()
    );
    let file = dir.path().join("v.txt");
    std::fs::write(&file, "from a file").unwrap();
    assert!(cli(&vault, &pw, &["put", "--scope", "memory", "profile", file.to_str().unwrap()], b"").status.success());
    assert!(cli(&vault, &pw, &["put", "--scope", "memory", "stdin"], b"from stdin").status.success());
    assert_eq!(cli(&vault, &pw, &["get", "--scope", "memory", "history"], b"").stdout, b"from an argument");
    assert_eq!(cli(&vault, &pw, &["get", "--scope", "memory", "profile"], b"").stdout, b"from a file");
    assert_eq!(cli(&vault, &pw, &["get", "--scope", "memory", "stdin"], b"").stdout, b"from stdin");
    let o = cli(&vault, &pw, &["get", "--scope", "memory", "missing"], b"");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(o.stderr, b"backendenc: not found: no record \"missing\" in scope \"memory\"\n");
    assert!(cli(&vault, &pw, &["rm", "--scope", "memory", "stdin"], b"").status.success());
    // Two processes writing different records at once: both land.
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (vault, pw) = (vault.clone(), pw.clone());
            std::thread::spawn(move || {
                for i in 0..5 {
                    let name = format!("w{w}-{i}");
                    let o = cli(&vault, &pw, &["put", "--scope", "memory", &name, "--value", &name], b"");
                    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().unwrap());
    let listed = String::from_utf8(cli(&vault, &pw, &["ls", "--scope", "memory"], b"").stdout).unwrap();
    let mut expected: Vec<String> = (0..2).flat_map(|w| (0..5).map(move |i| format!("w{w}-{i}"))).collect();
    expected.extend(["history".to_owned(), "profile".to_owned()]);
    expected.sort();
    assert_eq!(listed.lines().collect::<Vec<_>>(), expected);
    for name in &expected[..10] {
        if name.starts_with('w') {
            assert_eq!(cli(&vault, &pw, &["get", "--scope", "memory", name], b"").stdout, name.as_bytes());
        }
    }
}

#[test]
fn stored_assets_through_the_host_api() {
    let (_d, vault) = temp_vault();
    let s = init(&vault, "u", "c", b"pw");
    let data: Vec<u8> = (0..(3 << 20) + 1).map(|i: usize| (i % 249) as u8).collect();
    let mut seen = 0;
    assert_eq!(s.put_asset("assets", "avatar.png", &mut &data[..], &mut |n| seen = n).unwrap(), data.len() as u64);
    assert_eq!(seen, data.len() as u64, "progress reaches the total");
    let mut out = Vec::new();
    assert_eq!(s.get_asset("assets", "avatar.png", &mut out, &mut |_| {}).unwrap(), data.len() as u64);
    assert_eq!(out, data);
    s.put_asset("assets", "contract.pdf", &mut &b"pdf"[..], &mut |_| {}).unwrap();
    assert_eq!(s.list_assets("assets").unwrap(), ["avatar.png", "contract.pdf"]);
    s.delete_asset("assets", "contract.pdf").unwrap();
    assert!(matches!(s.get_asset("assets", "contract.pdf", &mut Vec::new(), &mut |_| {}), Err(Error::NotFound(_))));
    // Tampering is caught while reading.
    let dir = vault.path().join("tenants").join(s.tenant_key()).join("assets");
    let file = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_none()).unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1 << 20] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    assert!(matches!(s.get_asset("assets", "avatar.png", &mut Vec::new(), &mut |_| {}), Err(Error::Integrity(_))));
    assert!(!s.is_locked());
}

#[test]
fn cli_put_and_get_assets() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, pw) = (dir.path().join("vault"), dir.path().join("pw"));
    std::fs::write(&pw, "pw\n").unwrap();
    assert!(
        cli(&vault, &pw, &["init", "--iterations", "1000", "--insecure-low-iterations-for-tests"], b"")
            .status
            .success()
    );
    let photo = dir.path().join("photo.png");
    let data: Vec<u8> = (0..700_001usize).map(|i| (i * 3) as u8).collect();
    std::fs::write(&photo, &data).unwrap();
    let o = cli(&vault, &pw, &["put", "--asset", "avatar.png", photo.to_str().unwrap()], b"");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(cli(&vault, &pw, &["put", "--asset", "notes.txt"], b"from stdin").status.success());
    let out = dir.path().join("out.png");
    let o = cli(&vault, &pw, &["get", "--asset", "avatar.png", "-o", out.to_str().unwrap()], b"");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), data);
    assert_eq!(cli(&vault, &pw, &["get", "--asset", "notes.txt"], b"").stdout, b"from stdin");
    assert_eq!(cli(&vault, &pw, &["ls", "--assets"], b"").stdout, b"avatar.png\nnotes.txt\n");
    assert!(cli(&vault, &pw, &["rm", "--asset", "notes.txt"], b"").status.success());
    assert_eq!(cli(&vault, &pw, &["ls", "--assets"], b"").stdout, b"avatar.png\n");
    let o = cli(&vault, &pw, &["get", "missing"], b"");
    assert_eq!(o.stderr, b"backendenc: records need --scope\n");
}
