//! The `backendenc` CLI as a user runs it: exit codes, exact one-line
//! errors, passphrase sources, stdin/stdout and files, armor, status, demo.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_backendenc");

struct Env {
    _dir: tempfile::TempDir,
    vault: PathBuf,
    pwfile: PathBuf,
    root: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let pwfile = root.join("pw");
    std::fs::write(&pwfile, "correct horse battery staple\n").unwrap();
    Env { vault: root.join("vault"), pwfile, root, _dir: dir }
}

/// The binary, detached from any terminal (so a prompt can never block),
/// with none of the caller's BACKENDENC_* settings.
fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new("setsid");
    c.arg("-w").arg(BIN).args(args);
    c.env_remove("BACKENDENC_PASSPHRASE").env_remove("BACKENDENC_VAULT").stdin(Stdio::null());
    c
}

fn run(mut c: Command, stdin: &[u8]) -> Output {
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Asserts failure with `code` and exactly one stderr line equal to `line`.
fn assert_fails(o: &Output, code: i32, line: &str) {
    assert_eq!(o.status.code(), Some(code), "stderr: {}", stderr(o));
    assert_eq!(stderr(o), format!("{line}\n"));
}

impl Env {
    fn args<'a>(&'a self, sub: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["--vault", self.vault.to_str().unwrap(), sub, "--user", "alice", "--channel", "general"];
        v.extend_from_slice(&["--passphrase-file", self.pwfile.to_str().unwrap()]);
        v.extend_from_slice(extra);
        v
    }

    fn init(&self) {
        let o = run(cmd(&self.args("init", &["--iterations", "1000", "--insecure-low-iterations-for-tests"])), b"");
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).starts_with("initialized tenant "), "{}", stderr(&o));
    }
}

#[test]
fn encrypt_decrypt_round_trip_through_pipes() {
    let e = env();
    e.init();
    let enc = run(cmd(&e.args("encrypt", &["--scope", "memory"])), b"hello\0world");
    assert!(enc.status.success(), "{}", stderr(&enc));
    assert_eq!(&enc.stdout[..4], b"BKEV");
    assert_eq!(stderr(&enc), "");
    let dec = run(cmd(&e.args("decrypt", &["--scope", "memory"])), &enc.stdout);
    assert!(dec.status.success(), "{}", stderr(&dec));
    assert_eq!(dec.stdout, b"hello\0world");
}

#[test]
fn armor_files_aad_and_env_passphrase() {
    let e = env();
    e.init();
    let input = e.root.join("plain.txt");
    std::fs::write(&input, "Bob fragt – ä ö ü ß 🚀").unwrap();
    let out = e.root.join("sealed.txt");
    let enc = run(
        cmd(&e.args(
            "encrypt",
            &[
                "--scope",
                "memory",
                "--aad",
                "record-7",
                "--armor",
                "-o",
                out.to_str().unwrap(),
                input.to_str().unwrap(),
            ],
        )),
        b"",
    );
    assert!(enc.status.success(), "{}", stderr(&enc));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("bkenc:v1:") && text.ends_with('\n'), "{text}");
    // Passphrase and vault from the environment this time.
    let mut c = cmd(&[
        "decrypt",
        "--user",
        "alice",
        "--channel",
        "general",
        "--scope",
        "memory",
        "--aad",
        "record-7",
        out.to_str().unwrap(),
    ]);
    c.env("BACKENDENC_PASSPHRASE", "correct horse battery staple").env("BACKENDENC_VAULT", &e.vault);
    let dec = run(c, b"");
    assert!(dec.status.success(), "{}", stderr(&dec));
    assert_eq!(String::from_utf8(dec.stdout).unwrap(), "Bob fragt – ä ö ü ß 🚀");
    // The AAD is part of the binding.
    let wrong = run(cmd(&e.args("decrypt", &["--scope", "memory", "--aad", "record-8", out.to_str().unwrap()])), b"");
    assert_fails(
        &wrong,
        4,
        "backendenc: integrity check failed: envelope failed authentication (wrong tenant, scope or AAD, or it was altered)",
    );
}

#[test]
fn wrong_passphrase_exits_3_with_one_line() {
    let e = env();
    e.init();
    std::fs::write(&e.pwfile, "not it").unwrap();
    let o = run(cmd(&e.args("encrypt", &["--scope", "memory"])), b"x");
    assert_fails(&o, 3, "backendenc: wrong passphrase (or the keyring's wrapped key was altered)");
    assert!(o.stdout.is_empty());
}

#[test]
fn a_failed_decrypt_writes_no_output_file() {
    let e = env();
    e.init();
    let enc = run(cmd(&e.args("encrypt", &["--scope", "memory"])), b"payload");
    let mut tampered = enc.stdout.clone();
    *tampered.last_mut().unwrap() ^= 1;
    let out = e.root.join("out.bin");
    std::fs::write(&out, b"previous contents").unwrap();
    let o = run(cmd(&e.args("decrypt", &["--scope", "memory", "-o", out.to_str().unwrap()])), &tampered);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(std::fs::read(&out).unwrap(), b"previous contents", "a failed command leaves OUT as it was");
    let o = run(cmd(&e.args("decrypt", &["--scope", "memory", "-o", out.to_str().unwrap()])), &enc.stdout);
    assert!(o.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), b"payload");
}

#[test]
fn usage_errors_and_missing_state_are_one_line() {
    let e = env();
    let o = run(cmd(&e.args("encrypt", &["--scope", "memory"])), b"x");
    assert_fails(&o, 1, &format!("backendenc: no vault at {} (set --vault or BACKENDENC_VAULT)", e.vault.display()));
    std::fs::create_dir_all(&e.vault).unwrap();
    let o = run(cmd(&e.args("encrypt", &["--scope", "memory"])), b"x");
    assert_fails(&o, 1, "backendenc: tenant is not initialized: run init first");
    let o = run(cmd(&e.args("init", &["--iterations", "50000"])), b"");
    assert_fails(
        &o,
        1,
        "backendenc: invalid argument: refusing 50000 PBKDF2 iterations: fewer than the minimum of 100000",
    );
    e.init();
    let o = run(cmd(&e.args("init", &["--iterations", "1000", "--insecure-low-iterations-for-tests"])), b"");
    assert_fails(&o, 1, "backendenc: tenant is already initialized");
    let o = run(cmd(&e.args("decrypt", &["--scope", "memory"])), b"not an envelope at all, just some text here");
    assert_fails(&o, 4, "backendenc: integrity check failed: not a backendenc envelope (bad magic)");
    let o = run(cmd(&e.args("encrypt", &["--scope", ""])), b"x");
    assert_fails(&o, 1, "backendenc: invalid argument: scope is empty");
    let missing = e.root.join("missing-pw");
    let mut args = e.args("status", &[]);
    let i = args.iter().position(|a| *a == e.pwfile.to_str().unwrap()).unwrap();
    args[i] = missing.to_str().unwrap();
    let o = run(cmd(&args), b"");
    assert_fails(
        &o,
        1,
        &format!(
            "backendenc: cannot read passphrase file {}: No such file or directory (os error 2)",
            missing.display()
        ),
    );
}

#[test]
fn no_passphrase_source_and_no_terminal_is_a_clear_error() {
    let e = env();
    e.init();
    let o = run(cmd(&["--vault", e.vault.to_str().unwrap(), "status", "--user", "alice", "--channel", "general"]), b"");
    assert_fails(
        &o,
        1,
        "backendenc: no passphrase: use --passphrase-file, set BACKENDENC_PASSPHRASE, or run on a terminal",
    );
}

#[test]
fn passphrase_is_never_an_argument() {
    let o = run(cmd(&["status", "--user", "u", "--channel", "c", "--passphrase", "x"]), b"");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unexpected argument '--passphrase'"), "{}", stderr(&o));
}

#[test]
fn a_stale_lock_names_the_file() {
    let e = env();
    e.init();
    let key = backendenc::Vault::tenant_key("alice", "general").unwrap();
    let lock = e.vault.join("tenants").join(&key).join("keyring.lock");
    std::fs::write(&lock, b"").unwrap();
    let o = run(cmd(&e.args("encrypt", &["--scope", "memory"])), b"x");
    let canonical = std::fs::canonicalize(&lock).unwrap();
    let guest_path = format!("/vault/tenants/{key}/keyring.lock");
    assert_eq!(o.status.code(), Some(1));
    let line = stderr(&o);
    assert!(
        line.starts_with("backendenc: busy: ") && line.contains(&guest_path) && line.lines().count() == 1,
        "{line}"
    );
    assert!(canonical.exists());
}

#[test]
fn status_text_and_json() {
    let e = env();
    e.init();
    run(cmd(&e.args("encrypt", &["--scope", "memory"])), b"x");
    run(cmd(&e.args("encrypt", &["--scope", "assets"])), b"y");
    let o = run(cmd(&e.args("status", &["--json"])), b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["tenant_key"], backendenc::Vault::tenant_key("alice", "general").unwrap());
    assert_eq!(v["iterations"], 1000);
    assert_eq!(v["kdf"], "pbkdf2-hmac-sha256");
    assert_eq!(v["scopes"].as_array().unwrap().len(), 2);
    assert_eq!(v["scopes"][1]["name"], "memory");
    assert_eq!(v["scopes"][1]["versions"][0]["version"], 1);
    assert!(v["scopes"][1]["versions"][0]["encryptions"].as_u64().unwrap() >= 1);
    assert_eq!(v["recovery_key"], false);
    let o = run(cmd(&e.args("status", &[])), b"");
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("kdf:          pbkdf2-hmac-sha256 (1000 iterations)"), "{text}");
    assert!(
        text.contains(
            "scope \"memory\": current v1, decrypts from v1, auto-rotate off\n  v1: at most 1024 encryptions"
        ),
        "{text}"
    );
}

#[test]
fn passphrase_file_trailing_newline_is_dropped_once() {
    let e = env();
    e.init();
    std::fs::write(&e.pwfile, "correct horse battery staple").unwrap();
    assert!(run(cmd(&e.args("status", &[])), b"").status.success());
    std::fs::write(&e.pwfile, "correct horse battery staple\r\n").unwrap();
    assert!(run(cmd(&e.args("status", &[])), b"").status.success());
    std::fs::write(&e.pwfile, "correct horse battery staple\n\n").unwrap();
    assert_eq!(run(cmd(&e.args("status", &[])), b"").status.code(), Some(3));
}

#[test]
fn the_default_vault_is_dot_backendenc_in_the_working_directory() {
    let e = env();
    let pw = e.pwfile.to_str().unwrap();
    let mut c = cmd(&[
        "init",
        "--user",
        "u",
        "--channel",
        "c",
        "--passphrase-file",
        pw,
        "--iterations",
        "1000",
        "--insecure-low-iterations-for-tests",
    ]);
    c.current_dir(&e.root);
    assert!(run(c, b"").status.success());
    assert!(
        Path::new(&e.root)
            .join(".backendenc/tenants")
            .join(backendenc::Vault::tenant_key("u", "c").unwrap())
            .join("keyring")
            .exists()
    );
}

#[test]
fn demo_runs_the_tour() {
    let o = run(cmd(&["demo"]), b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("network imports: none"), "{out}");
    assert!(out.contains("alice decrypts it: \"[user] remind me to call Bob at 5\""), "{out}");
    assert!(out.contains("unlock alice with a wrong passphrase: refused: wrong passphrase"), "{out}");
    assert!(out.contains("(cross-tenant): refused: integrity check failed"), "{out}");
    assert!(out.contains("old envelopes still decrypt: true"), "{out}");
    assert!(out.contains("unlock alice with her old passphrase: refused: wrong passphrase"), "{out}");
    assert!(out.contains("both envelopes decrypt: true"), "{out}");
    assert!(out.contains("unlock-failed") && out.contains("(unauthenticated)"), "{out}");
    assert!(!out.contains("unexpected!"), "{out}");
}

/// Runs the binary on a pseudo-terminal (util-linux `script`), typing `lines`
/// one by one after it has had time to show its prompt.
fn on_terminal(args: &[&str], lines: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let command = std::iter::once(BIN).chain(args.iter().copied()).map(shell_quote).collect::<Vec<_>>().join(" ");
    let mut c = Command::new("script");
    c.args(["-qec", &command, "/dev/null"]).env_remove("BACKENDENC_PASSPHRASE").env_remove("BACKENDENC_VAULT");
    c.envs(env.iter().copied());
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in lines {
        std::thread::sleep(std::time::Duration::from_millis(700));
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n"))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn init_on_a_terminal_asks_twice_without_echo() {
    let e = env();
    let v = e.vault.to_str().unwrap();
    let init = ["--vault", v, "init", "--user", "alice", "--channel", "general", "--iterations", "1000"];
    let init = [&init[..], &["--insecure-low-iterations-for-tests"]].concat();
    let (code, out) = on_terminal(&init, &["typed-secret", "typed-secrex"], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("New passphrase for alice/general: "), "{out}");
    assert!(out.contains("Repeat the passphrase: "), "{out}");
    assert!(out.contains("backendenc: the two passphrases differ; nothing was changed"), "{out}");
    let (code, out) = on_terminal(&init, &["typed-secret", "typed-secret"], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("typed-secret"), "the passphrase was echoed: {out}");
    // The typed passphrase is the tenant's passphrase.
    let mut c = cmd(&["--vault", v, "status", "--user", "alice", "--channel", "general"]);
    c.env("BACKENDENC_PASSPHRASE", "typed-secret");
    assert!(run(c, b"").status.success());
    // Unlock prompts once, on the terminal.
    let status = ["--vault", v, "status", "--user", "alice", "--channel", "general"];
    let (code, out) = on_terminal(&status, &["typed-secret"], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Passphrase for alice/general: ") && out.contains("kdf:"), "{out}");
}

#[test]
fn binary_envelopes_are_not_written_to_a_terminal() {
    let e = env();
    e.init();
    let v = e.vault.to_str().unwrap();
    let pw = e.pwfile.to_str().unwrap();
    let args = ["--vault", v, "encrypt", "--user", "alice", "--channel", "general", "--passphrase-file", pw];
    let (code, out) = on_terminal(&[&args[..], &["--scope", "memory", pw]].concat(), &[], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("backendenc: refusing to write a binary envelope to a terminal; use --armor or -o FILE"),
        "{out}"
    );
    let (code, out) = on_terminal(&[&args[..], &["--scope", "memory", "--armor", pw]].concat(), &[], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("bkenc:v1:"), "{out}");
}

#[test]
fn passwd_on_a_terminal_asks_for_the_old_passphrase_once_and_the_new_one_twice() {
    let e = env();
    e.init();
    let v = e.vault.to_str().unwrap();
    let passwd = ["--vault", v, "passwd", "--user", "alice", "--channel", "general", "--iterations", "1000"];
    let passwd = [&passwd[..], &["--insecure-low-iterations-for-tests"]].concat();
    let typed = ["correct horse battery staple", "brand-new", "brand-new"];
    let (code, out) = on_terminal(&passwd, &typed, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Passphrase for alice/general: "), "{out}");
    assert!(out.contains("New passphrase for alice/general: ") && out.contains("Repeat the new passphrase: "), "{out}");
    assert!(!out.contains("brand-new"), "echoed: {out}");
    let mut c = cmd(&["--vault", v, "status", "--user", "alice", "--channel", "general"]);
    c.env("BACKENDENC_PASSPHRASE", "brand-new");
    assert!(run(c, b"").status.success());
}

#[test]
fn seal_shows_progress_on_a_terminal_for_large_files_only() {
    let e = env();
    e.init();
    let v = e.vault.to_str().unwrap();
    let pw = e.pwfile.to_str().unwrap();
    let big = e.root.join("big.bin");
    std::fs::write(&big, vec![1u8; 24 << 20]).unwrap();
    let small = e.root.join("small.bin");
    std::fs::write(&small, b"tiny").unwrap();
    let args = |input: &str, out: &str| {
        ["--vault", v, "seal", "--user", "alice", "--channel", "general", "--passphrase-file", pw, "-o", out, input]
            .map(str::to_owned)
    };
    let (o1, o2) = (e.root.join("big.sealed"), e.root.join("small.sealed"));
    let big_args = args(big.to_str().unwrap(), o1.to_str().unwrap());
    let (code, out) = on_terminal(&big_args.iter().map(String::as_str).collect::<Vec<_>>(), &[], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("MiB"), "a progress bar with byte counts: {out:?}");
    let small_args = args(small.to_str().unwrap(), o2.to_str().unwrap());
    let (code, out) = on_terminal(&small_args.iter().map(String::as_str).collect::<Vec<_>>(), &[], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("MiB") && !out.contains("KiB"), "no bar for a small file: {out:?}");
}
