//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use backendenc::{InitOptions, Session, Vault};

/// Low iteration count through the clearly named test-only override: the
/// KDF's cost is measured in benchmarks, not paid in every test.
pub const TEST_ITERATIONS: u32 = 1_000;

pub fn test_init() -> InitOptions {
    InitOptions { iterations: Some(TEST_ITERATIONS), insecure_allow_low_iterations_for_testing: true }
}

/// A fresh vault in a temporary directory (removed when the guard drops).
pub fn temp_vault() -> (tempfile::TempDir, Vault) {
    let dir = tempfile::tempdir().expect("temp dir");
    let vault = Vault::open(dir.path().join("vault")).expect("open vault");
    (dir, vault)
}

pub fn init(vault: &Vault, user: &str, channel: &str, passphrase: &[u8]) -> Session {
    vault.init(user, channel, passphrase, test_init()).expect("init")
}

/// Every file below `root`, as paths relative to it, sorted.
pub fn files_below(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let p = entry.expect("entry").path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(root).expect("below root").to_path_buf());
        }
    }
    out.sort();
    out
}

/// The tenant's keyring file.
pub fn keyring_path(vault: &Vault, user: &str, channel: &str) -> PathBuf {
    vault.path().join("tenants").join(Vault::tenant_key(user, channel).unwrap()).join("keyring")
}

/// Parses the `key = value` records (blank-line separated, `#` comments) of a vector file.
pub fn vectors(text: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut cur = std::collections::BTreeMap::new();
    for line in text.lines().chain(std::iter::once("")) {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let (k, v) = line.split_once('=').expect("key = value");
        cur.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    out
}

pub fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

/// Runs the CLI as tenant ("u", "c") with a vault and a passphrase file,
/// detached from any terminal, feeding `stdin`.
pub fn run_cli(vault: &Path, pw: &Path, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut c = Command::new("setsid");
    c.arg("-w").arg(env!("CARGO_BIN_EXE_backendenc")).arg("--vault").arg(vault).args(args);
    c.args(["--user", "u", "--channel", "c", "--passphrase-file"]).arg(pw);
    c.env_remove("BACKENDENC_PASSPHRASE").env_remove("BACKENDENC_VAULT");
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawning the CLI");
    child.stdin.take().expect("piped stdin").write_all(stdin).expect("writing stdin");
    child.wait_with_output().expect("waiting for the CLI")
}
