//! The sandbox, structurally: the component imports no network, the host's
//! linker provides none, and a tenant's instance reaches only its own
//! directory (no other tenant, nothing outside the vault, no env/args/stdin).

mod common;

use backendenc::{Error, Runtime, Vault, VaultOptions, sandbox};
use common::{init, temp_vault};

#[test]
fn the_embedded_component_imports_no_network() {
    let imports = Runtime::shared().unwrap().component_imports();
    assert!(imports.iter().any(|i| i.starts_with("wasi:filesystem/")), "{imports:?}");
    assert!(imports.iter().any(|i| i.starts_with("wasi:random/random")), "{imports:?}");
    let network: Vec<_> =
        imports.iter().filter(|i| i.starts_with("wasi:sockets") || i.starts_with("wasi:http")).collect();
    assert!(network.is_empty(), "network imports: {network:?}");
    // And the embedded bytes agree, independently of wasmtime's reading.
    let bytes = backendenc::runtime::GUEST_WASM;
    assert!(!bytes.windows(12).any(|w| w == b"wasi:sockets"));
    assert!(!bytes.windows(9).any(|w| w == b"wasi:http"));
}

const RANDOM_IMPORTER: &str = r#"(component
  (import "wasi:random/random@0.2.6" (instance
    (export "get-random-u64" (func (result u64)))))
)"#;

const SOCKETS_IMPORTER: &str = r#"(component
  (import "wasi:sockets/instance-network@0.2.6" (instance
    (export "network" (type (sub resource)))))
)"#;

const HTTP_IMPORTER: &str = r#"(component
  (import "wasi:http/outgoing-handler@0.2.6" (instance
    (export "future-incoming-response" (type (sub resource)))))
)"#;

#[test]
fn a_component_that_imports_network_cannot_be_linked() {
    let rt = Runtime::shared().unwrap();
    // Control: the same check passes a component that imports what the sandbox offers.
    sandbox::link_check(&rt, &wat::parse_str(RANDOM_IMPORTER).unwrap()).unwrap();
    for (wat, name) in [(SOCKETS_IMPORTER, "wasi:sockets"), (HTTP_IMPORTER, "wasi:http")] {
        let err = sandbox::link_check(&rt, &wat::parse_str(wat).unwrap()).unwrap_err();
        assert!(matches!(&err, Error::Runtime(m) if m.contains(name)), "{err}");
    }
}

#[test]
fn the_embedded_component_links() {
    sandbox::link_check(&Runtime::shared().unwrap(), backendenc::runtime::GUEST_WASM).unwrap();
}

fn probe_vault(vault_dir: &std::path::Path) -> Vault {
    let wasm = std::fs::read(env!("BACKENDENC_TEST_PROBE_WASM")).expect("probe component is built by build.rs");
    let rt = Runtime::with_component(&wasm, None).unwrap();
    Vault::open_with(vault_dir, rt, VaultOptions::default()).unwrap()
}

fn report(result: backendenc::Result<backendenc::Session>) -> String {
    match result {
        Err(Error::Storage(report)) => report,
        other => panic!("the probe reports through a storage error, got {other:?}"),
    }
}

#[test]
fn a_tenant_reaches_only_its_own_directory() {
    let (outer, vault) = temp_vault();
    init(&vault, "alice", "general", b"pw-a");
    init(&vault, "bob", "general", b"pw-b");
    vault.lock_all();
    let a = Vault::tenant_key("alice", "general").unwrap();
    let b = Vault::tenant_key("bob", "general").unwrap();
    let host_b = vault.path().join("tenants").join(&b).join("keyring");
    std::fs::write(outer.path().join("outside.txt"), b"outside").unwrap();
    // A symlink planted in alice's directory that points at bob's keyring.
    std::os::unix::fs::symlink(&host_b, vault.path().join("tenants").join(&a).join("link-to-bob")).unwrap();
    let script = [
        format!("read /vault/tenants/{a}/keyring"),
        format!("list /vault/tenants/{a}"),
        format!("read /vault/tenants/{b}/keyring"),
        format!("read /vault/tenants/{a}/../{b}/keyring"),
        format!("read /vault/tenants/{a}/link-to-bob"),
        format!("write /vault/tenants/{b}/pwned"),
        format!("write /vault/tenants/{a}/../../pwned"),
        "list /vault/tenants".to_owned(),
        "list /vault".to_owned(),
        "list /".to_owned(),
        "read /etc/passwd".to_owned(),
        format!("read {}", host_b.display()),
        format!("read {}", outer.path().join("outside.txt").display()),
        "env".to_owned(),
        "args".to_owned(),
        "stdin".to_owned(),
    ]
    .join("\n");
    // The probe runs as alice, in alice's real directory (the unlock path).
    let report = report(probe_vault(vault.path()).unlock("alice", "general", script.as_bytes()));
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 16, "{report}");
    // Its own directory is reachable: the probe really can read.
    assert!(lines[0].ends_with("ok") || lines[0].contains("=> ok"), "{report}");
    assert!(lines[1].contains("=> ok"), "{report}");
    for line in &lines[2..13] {
        assert!(line.contains("=> denied"), "escaped the sandbox: {line}\n{report}");
    }
    assert!(lines[13].ends_with("=> ok 0 vars"), "{report}");
    assert!(lines[14].ends_with("=> ok 0 args"), "{report}");
    assert!(lines[15].ends_with("=> ok 0 bytes"), "{report}");
    assert!(!vault.path().join("tenants").join(&b).join("pwned").exists());
    assert!(!vault.path().join("pwned").exists());
    // Bob's keyring is untouched and still opens.
    assert!(vault.unlock("bob", "general", b"pw-b").is_ok());
}

#[test]
fn an_enrolment_reaches_only_its_staging_directory() {
    let (_outer, vault) = temp_vault();
    init(&vault, "alice", "general", b"pw-a");
    vault.lock_all();
    let a = Vault::tenant_key("alice", "general").unwrap();
    let n = Vault::tenant_key("newcomer", "general").unwrap();
    let script = [
        format!("write /vault/tenants/{n}/scratch"),
        format!("read /vault/tenants/{n}/scratch"),
        format!("read /vault/tenants/{a}/keyring"),
        format!("read /vault/tenants/{n}/../{a}/keyring"),
        "list /vault/tenants".to_owned(),
    ]
    .join("\n");
    let probe = probe_vault(vault.path());
    let report = report(probe.init("newcomer", "general", script.as_bytes(), backendenc::InitOptions::default()));
    let lines: Vec<&str> = report.lines().collect();
    assert!(lines[0].ends_with("=> ok written") && lines[1].ends_with("=> ok 5 bytes"), "{report}");
    for line in &lines[2..] {
        assert!(line.contains("=> denied"), "escaped the sandbox: {line}\n{report}");
    }
    // The failed enrolment left nothing: no tenant, no staging directory.
    let names: Vec<_> =
        std::fs::read_dir(vault.path().join("tenants")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, [std::ffi::OsString::from(&a)]);
}

fn cached_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "cwasm")).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn the_compiled_component_cache_is_private_and_reused() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let outer = tempfile::tempdir().unwrap();
    let cache = outer.path().join("cache");
    Runtime::new(Some(&cache)).unwrap();
    assert_eq!(std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777, 0o700);
    let files = cached_files(&cache);
    assert_eq!(files.len(), 1, "{files:?}");
    let before = std::fs::metadata(&files[0]).unwrap();
    assert_eq!(before.permissions().mode() & 0o022, 0);
    // A second runtime loads the artifact instead of writing a new one.
    let rt = Runtime::new(Some(&cache)).unwrap();
    let after = std::fs::metadata(&files[0]).unwrap();
    assert_eq!((before.ino(), before.mtime_nsec()), (after.ino(), after.mtime_nsec()));
    assert!(!rt.component_imports().is_empty());
    // A corrupt artifact is not trusted: the component is compiled again and works.
    std::fs::write(&files[0], b"not a compiled component").unwrap();
    let rt = Runtime::new(Some(&cache)).unwrap();
    let vault_dir = tempfile::tempdir().unwrap();
    let vault = Vault::open_with(vault_dir.path(), rt, VaultOptions::default()).unwrap();
    let s = vault.init("u", "c", b"pw", common::test_init()).unwrap();
    assert_eq!(&s.decrypt("m", &s.encrypt("m", b"ok", b"").unwrap(), b"").unwrap()[..], b"ok");
}

#[test]
fn a_cache_directory_open_to_others_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let outer = tempfile::tempdir().unwrap();
    let cache = outer.path().join("shared-cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let rt = Runtime::new(Some(&cache)).unwrap();
    assert!(cached_files(&cache).is_empty(), "nothing may be cached in (or loaded from) a world-writable directory");
    assert!(!rt.component_imports().is_empty());
}

#[test]
fn an_existing_cache_directory_that_only_we_can_write_is_used() {
    use std::os::unix::fs::PermissionsExt;
    let outer = tempfile::tempdir().unwrap();
    let cache = outer.path().join("readable-cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    Runtime::new(Some(&cache)).unwrap();
    assert_eq!(cached_files(&cache).len(), 1, "a 0755 directory of ours is safe to cache in");
    // A cached file that others could have written is not loaded, but replaced.
    let file = &cached_files(&cache)[0];
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o666)).unwrap();
    Runtime::new(Some(&cache)).unwrap();
    assert_eq!(std::fs::metadata(file).unwrap().permissions().mode() & 0o022, 0);
}
