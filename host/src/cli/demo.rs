//! `backendenc demo`: a tour in a temporary vault that shows what the vault
//! guarantees, printing each step and its outcome.

use std::time::Instant;

use backendenc::{Error, InitOptions, Runtime, Vault, VaultOptions};

use super::CliError;

pub fn run() -> Result<(), CliError> {
    let tmp = tempfile::Builder::new()
        .prefix("backendenc-demo-")
        .tempdir()
        .map_err(|e| CliError::msg(format!("cannot create a temporary vault: {e}")))?;
    let t0 = Instant::now();
    let runtime = Runtime::shared()?;
    let vault = Vault::open_with(tmp.path().join("vault"), runtime.clone(), VaultOptions::default())?;
    println!("backendenc demo: a temporary vault at {}", vault.path().display());
    println!("  component loaded in {:.2} s; its imports:", t0.elapsed().as_secs_f64());
    let imports = runtime.component_imports();
    for group in imports.iter().map(|i| i.split('/').next().unwrap_or(i)).collect::<std::collections::BTreeSet<_>>() {
        println!("    {group}/…");
    }
    let net = imports.iter().any(|i| i.starts_with("wasi:sockets") || i.starts_with("wasi:http"));
    println!("  network imports: {}", if net { "PRESENT (this build is broken)" } else { "none" });

    let alice_pw = b"correct horse battery staple";
    let bob_pw = "hunter2-ñ-密码".as_bytes();
    step("enrol alice/general and bob/support", || {
        let t = Instant::now();
        vault.init("alice", "general", alice_pw, InitOptions::default())?;
        vault.init("bob", "support", bob_pw, InitOptions::default())?;
        Ok(format!(
            "two keyrings, {} PBKDF2-HMAC-SHA256 iterations each ({:.2} s for both)",
            backendenc::DEFAULT_ITERATIONS,
            t.elapsed().as_secs_f64()
        ))
    })?;

    let message = b"[user] remind me to call Bob at 5";
    let alice = vault.unlock("alice", "general", alice_pw)?;
    let envelope = alice.encrypt("memory", message, b"")?;
    let armored = backendenc::armor(&envelope)?;
    println!("- alice encrypts {:?} in scope \"memory\"", String::from_utf8_lossy(message));
    println!("    → {} bytes; armored: {}…", envelope.len(), &armored[..armored.len().min(60)]);
    let back = alice.decrypt("memory", armored.as_bytes(), b"")?;
    println!("- alice decrypts it: {:?}", String::from_utf8_lossy(&back));

    outcome("unlock alice with a wrong passphrase", vault.unlock("alice", "general", b"Tr0ub4dor&3").map(|_| ()));
    let bob = vault.unlock("bob", "support", bob_pw)?;
    bob.encrypt("memory", b"bob's own memory", b"")?;
    println!("- bob stores his own \"memory\" too (his own key, in his own instance)");
    outcome("bob decrypts alice's envelope (cross-tenant)", bob.decrypt("memory", &envelope, b"").map(|_| ()));
    outcome("alice decrypts it under another scope", alice.decrypt("notes", &envelope, b"").map(|_| ()));
    let mut tampered = envelope.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    outcome("alice decrypts a tampered copy", alice.decrypt("memory", &tampered, b"").map(|_| ()));
    outcome("unlock a tenant that was never enrolled", vault.unlock("mallory", "general", b"x").map(|_| ()));

    let v2 = alice.rotate("memory")?;
    let newer = alice.encrypt("memory", b"[agent] Reminder set.", b"")?;
    let old_still = alice.decrypt("memory", &envelope, b"").is_ok();
    println!(
        "- alice rotates \"memory\" to key version {v2}: new data uses it, old envelopes still decrypt: {old_still}"
    );
    let recovery = alice.add_recovery_key()?;
    println!("- alice adds a recovery key, shown once and stored nowhere: {}-…", &recovery[..10]);
    alice.change_passphrase(b"a much better passphrase", InitOptions::default())?;
    println!("- alice changes her passphrase (only the KEK is rewrapped; no data key or ciphertext changes)");
    outcome("unlock alice with her old passphrase", vault.unlock("alice", "general", alice_pw).map(|_| ()));
    let alice = vault.unlock("alice", "general", b"a much better passphrase")?;
    let both = alice.decrypt("memory", &envelope, b"").is_ok() && alice.decrypt("memory", &newer, b"").is_ok();
    println!("- alice unlocks with the new one; both envelopes decrypt: {both}");
    println!("- alice's audit log (chained and MAC'd; scope names never written):");
    for e in alice.audit_log()? {
        let mark = if e.authenticated { "" } else { "  (unauthenticated)" };
        println!("    {:>2} {:<17} {}{mark}", e.seq, e.event, e.details);
    }

    println!("- what is on disk (ids and scope names never appear):");
    let mut files: Vec<_> = walk(vault.path());
    files.sort();
    for f in files {
        println!("    {f}");
    }
    vault.lock_all();
    println!("- locked every session; the temporary vault is removed on exit");
    Ok(())
}

fn step(what: &str, f: impl FnOnce() -> Result<String, Error>) -> Result<(), CliError> {
    let result = f()?;
    println!("- {what}: {result}");
    Ok(())
}

fn outcome(what: &str, r: Result<(), Error>) {
    match r {
        Ok(()) => println!("- {what}: succeeded (unexpected!)"),
        Err(e) => println!("- {what}: refused: {e}"),
    }
}

fn walk(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                out.push(format!("{} ({size} bytes)", p.strip_prefix(root).unwrap_or(&p).display()));
            }
        }
    }
    out
}
