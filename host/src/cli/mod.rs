//! Subcommands of the CLI.

mod demo;
mod io;

use std::path::PathBuf;

use backendenc::{InitOptions, Vault};
use clap::{Args, Parser, Subcommand};

pub use io::CliError;
use io::{Input, Output, Passphrases};

/// Passphrase-protected key hierarchy for AI-agent backends, run as a
/// sandboxed WebAssembly component with no network access.
#[derive(Parser, Debug)]
#[command(name = "backendenc", version, about, long_about = None)]
pub struct Cli {
    /// Vault directory [default: $BACKENDENC_VAULT, else ./.backendenc]
    #[arg(long, global = true, value_name = "DIR")]
    vault: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Enrol a tenant: create its keyring under a new passphrase (asked twice).
    Init(InitArgs),
    /// Encrypt IN (default stdin) under a scope's key; write the envelope to OUT.
    Encrypt(EncryptArgs),
    /// Decrypt a binary or armored envelope from IN; write the plaintext to OUT.
    Decrypt(DecryptArgs),
    /// Show a tenant's keyring: KDF, generation, scopes and key versions.
    Status(StatusArgs),
    /// A self-contained tour in a temporary vault.
    Demo,
}

/// Which tenant, and where its passphrase comes from.
#[derive(Args, Debug)]
struct TenantArgs {
    /// User id (any non-empty UTF-8, at most 1024 bytes)
    #[arg(long)]
    user: String,
    /// Channel id (any non-empty UTF-8, at most 1024 bytes)
    #[arg(long)]
    channel: String,
    /// Read the passphrase from this file (one trailing newline is dropped)
    /// [default: $BACKENDENC_PASSPHRASE, else a prompt on the terminal]
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct InitArgs {
    #[command(flatten)]
    tenant: TenantArgs,
    /// PBKDF2-HMAC-SHA256 iterations (at least 100000)
    #[arg(long, default_value_t = backendenc::DEFAULT_ITERATIONS)]
    iterations: u32,
    /// Tests only: allow fewer than 100000 iterations.
    #[arg(long, hide = true)]
    insecure_low_iterations_for_tests: bool,
}

#[derive(Args, Debug)]
struct EncryptArgs {
    #[command(flatten)]
    tenant: TenantArgs,
    /// Scope whose key encrypts (created on first use)
    #[arg(long)]
    scope: String,
    /// Associated data the envelope is bound to (needed again to decrypt)
    #[arg(long, value_name = "TEXT", default_value = "")]
    aad: String,
    /// Write the text armor (bkenc:v1:…) instead of binary
    #[arg(long)]
    armor: bool,
    /// Output file, replaced atomically [default: stdout]
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// Input file [default: stdin]
    #[arg(value_name = "IN")]
    input: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct DecryptArgs {
    #[command(flatten)]
    tenant: TenantArgs,
    /// Scope the envelope was encrypted under
    #[arg(long)]
    scope: String,
    /// Associated data given at encryption
    #[arg(long, value_name = "TEXT", default_value = "")]
    aad: String,
    /// Output file, replaced atomically [default: stdout]
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// Input file, binary or armored [default: stdin]
    #[arg(value_name = "IN")]
    input: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct StatusArgs {
    #[command(flatten)]
    tenant: TenantArgs,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let vault_dir = || {
        cli.vault
            .clone()
            .or_else(|| std::env::var_os("BACKENDENC_VAULT").filter(|v| !v.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(".backendenc"))
    };
    match cli.command {
        Command::Init(a) => {
            // Read everything the user must supply before the slow parts.
            let passphrase = Passphrases::new(a.tenant.passphrase_file.as_deref())
                .new_passphrase(&a.tenant.user, &a.tenant.channel)?;
            let vault = Vault::open(vault_dir())?;
            let options = InitOptions {
                iterations: Some(a.iterations),
                insecure_allow_low_iterations_for_testing: a.insecure_low_iterations_for_tests,
            };
            let session = vault.init(&a.tenant.user, &a.tenant.channel, &passphrase, options)?;
            eprintln!("initialized tenant {} ({} PBKDF2 iterations)", session.tenant_key(), a.iterations);
            Ok(())
        }
        Command::Encrypt(a) => {
            let output = Output::new(a.output.as_deref(), !a.armor)?;
            let plaintext = Input::new(a.input.as_deref()).read_all()?;
            let session = unlock(&vault_dir(), &a.tenant)?;
            let envelope = session.encrypt(&a.scope, &plaintext, a.aad.as_bytes())?;
            if a.armor {
                let mut text = backendenc::armor(&envelope)?;
                text.push('\n');
                output.write(text.as_bytes())
            } else {
                output.write(&envelope)
            }
        }
        Command::Decrypt(a) => {
            let output = Output::new(a.output.as_deref(), false)?;
            let envelope = Input::new(a.input.as_deref()).read_all()?;
            let session = unlock(&vault_dir(), &a.tenant)?;
            let plaintext = session.decrypt(&a.scope, &envelope, a.aad.as_bytes())?;
            output.write(&plaintext)
        }
        Command::Status(a) => {
            let session = unlock(&vault_dir(), &a.tenant)?;
            let status = session.status()?;
            let text = if a.json {
                serde_json::to_string_pretty(&status).expect("status serialises to JSON") + "\n"
            } else {
                format_status(&status)
            };
            Output::new(None, false)?.write(text.as_bytes())
        }
        Command::Demo => demo::run(),
    }
}

fn unlock(vault_dir: &std::path::Path, t: &TenantArgs) -> Result<backendenc::Session, CliError> {
    let passphrase = Passphrases::new(t.passphrase_file.as_deref()).passphrase(&t.user, &t.channel)?;
    if !vault_dir.is_dir() {
        return Err(CliError::msg(format!("no vault at {} (set --vault or BACKENDENC_VAULT)", vault_dir.display())));
    }
    let vault = Vault::open(vault_dir)?;
    Ok(vault.unlock(&t.user, &t.channel, &passphrase)?)
}

fn format_status(s: &backendenc::TenantStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "tenant:      {}", s.tenant_key);
    let _ = writeln!(out, "format:      keyring v{}", s.format_version);
    let _ = writeln!(out, "kdf:         {} ({} iterations)", s.kdf, s.iterations);
    let _ = writeln!(out, "kek version: {}", s.kek_version);
    let _ = writeln!(out, "generation:  {}", s.generation);
    if s.scopes.is_empty() {
        let _ = writeln!(out, "scopes:      (none)");
    }
    for sc in &s.scopes {
        let versions: Vec<String> = sc.versions.iter().map(u32::to_string).collect();
        let _ = writeln!(
            out,
            "scope {:?}: current v{}, decrypts from v{}, versions [{}]",
            sc.name,
            sc.current_version,
            sc.min_decryption_version,
            versions.join(", ")
        );
    }
    out
}
