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
    /// Store a named record (value from --value, a file, or stdin), or a file as an asset (--asset).
    Put(PutArgs),
    /// Print a named record, or write out an asset (--asset).
    Get(RecordArgs),
    /// Delete a named record or asset.
    Rm(RecordArgs),
    /// List the record (or, with --assets, asset) names of a scope.
    Ls(ScopeArgs),
    /// Encrypt a file of any size in constant memory (streamed in 64 KiB segments).
    Seal(StreamArgs),
    /// Decrypt a sealed file; OUT appears only if the whole stream authenticates.
    Open(StreamArgs),
    /// Show a tenant's keyring: KDF, generation, scopes, key versions and usage.
    Status(StatusArgs),
    /// Change the passphrase (rewraps only the KEK; no data changes).
    Passwd(PasswdArgs),
    /// Add a key version to a scope and make it current.
    Rotate(RotateArgs),
    /// Stop decrypting envelopes under versions below N (--destroy deletes those keys).
    Retire(RetireArgs),
    /// Rotate a scope automatically after N encryptions per version (0: never).
    AutoRotate(AutoRotateArgs),
    /// Re-encrypt envelopes under the scope's current version (plaintext stays in the component).
    Rewrap(RewrapArgs),
    /// Replace the key-encryption key; every data key is rewrapped.
    RotateKek(TenantOnly),
    /// Add, replace or remove the recovery key.
    #[command(subcommand)]
    RecoveryKey(RecoveryKeyCommand),
    /// Set a new passphrase with the recovery key.
    Recover(RecoverArgs),
    /// Print the tenant's audit log, verified.
    Audit(StatusArgs),
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
    /// Also create a recovery key and print it (once) on stdout
    #[arg(long)]
    recovery_key: bool,
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
struct RecordArgs {
    #[command(flatten)]
    tenant: TenantArgs,
    /// Scope [default for --asset: assets]
    #[arg(long)]
    scope: Option<String>,
    /// The stored asset NAME instead of a record
    #[arg(long, value_name = "NAME", conflicts_with = "name")]
    asset: Option<String>,
    /// Record name (any non-empty UTF-8, at most 1024 bytes)
    #[arg(required_unless_present = "asset")]
    name: Option<String>,
    /// Output file for `get`, replaced atomically [default: stdout]
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct PutArgs {
    #[command(flatten)]
    tenant: TenantArgs,
    /// Scope [default for --asset: assets]
    #[arg(long)]
    scope: Option<String>,
    /// Store FILE (or stdin) as the asset NAME: streamed, any size
    #[arg(long, value_name = "NAME")]
    asset: Option<String>,
    /// A record's value as an argument (else FILE, else stdin)
    #[arg(long, conflicts_with = "asset")]
    value: Option<String>,
    /// NAME [FILE] for a record; [FILE] with --asset
    #[arg(value_name = "NAME|FILE", num_args = 0..=2)]
    args: Vec<String>,
}

#[derive(Args, Debug)]
struct ScopeArgs {
    #[command(flatten)]
    tenant: TenantArgs,
    /// Scope to list [default with --assets: assets]
    #[arg(long)]
    scope: Option<String>,
    /// List stored assets instead of records
    #[arg(long)]
    assets: bool,
}

/// What a record/asset command names: (scope, name, is-asset).
fn target(
    scope: &Option<String>,
    asset: &Option<String>,
    name: Option<&str>,
) -> Result<(String, String, bool), CliError> {
    match (asset, name) {
        (Some(a), _) => Ok((scope.clone().unwrap_or_else(|| "assets".into()), a.clone(), true)),
        (None, Some(n)) => {
            let scope = scope.clone().ok_or_else(|| CliError::msg("records need --scope"))?;
            Ok((scope, n.to_owned(), false))
        }
        (None, None) => Err(CliError::msg("name a record (NAME) or an asset (--asset NAME)")),
    }
}

#[derive(Args, Debug)]
struct StreamArgs {
    #[command(flatten)]
    tenant: TenantArgs,
    /// Scope whose key seals the file
    #[arg(long, default_value = "assets")]
    scope: String,
    /// Associated data the stream is bound to (needed again to open it)
    #[arg(long, value_name = "TEXT", default_value = "")]
    aad: String,
    /// Output file, replaced atomically once complete [default: stdout]
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// Input file [default: stdin]
    #[arg(value_name = "IN")]
    input: Option<PathBuf>,
}

/// Where a new passphrase comes from, and its KDF cost.
#[derive(Args, Debug)]
struct NewPassphraseArgs {
    /// Read the new passphrase from this file [default: $BACKENDENC_NEW_PASSPHRASE, else a prompt, asked twice]
    #[arg(long, value_name = "FILE")]
    new_passphrase_file: Option<PathBuf>,
    /// PBKDF2-HMAC-SHA256 iterations for the new passphrase (at least 100000)
    #[arg(long, default_value_t = backendenc::DEFAULT_ITERATIONS)]
    iterations: u32,
    /// Tests only: allow fewer than 100000 iterations.
    #[arg(long, hide = true)]
    insecure_low_iterations_for_tests: bool,
}

impl NewPassphraseArgs {
    fn options(&self) -> InitOptions {
        InitOptions {
            iterations: Some(self.iterations),
            insecure_allow_low_iterations_for_testing: self.insecure_low_iterations_for_tests,
        }
    }
}

#[derive(Args, Debug)]
struct TenantOnly {
    #[command(flatten)]
    tenant: TenantArgs,
}

#[derive(Args, Debug)]
struct PasswdArgs {
    #[command(flatten)]
    tenant: TenantArgs,
    #[command(flatten)]
    new: NewPassphraseArgs,
}

#[derive(Args, Debug)]
struct RotateArgs {
    #[command(flatten)]
    tenant: TenantArgs,
    /// Scope to rotate
    #[arg(long)]
    scope: String,
}

#[derive(Args, Debug)]
struct RetireArgs {
    #[command(flatten)]
    tenant: TenantArgs,
    /// Scope whose old versions to retire
    #[arg(long)]
    scope: String,
    /// Lowest version that still decrypts
    #[arg(long, value_name = "N")]
    below: u32,
    /// Also delete the keys of the retired versions (irreversible)
    #[arg(long)]
    destroy: bool,
}

#[derive(Args, Debug)]
struct AutoRotateArgs {
    #[command(flatten)]
    tenant: TenantArgs,
    /// Scope to configure
    #[arg(long)]
    scope: String,
    /// Encryptions per key version before rotating (0: never)
    #[arg(long, value_name = "N")]
    after: u64,
}

#[derive(Args, Debug)]
struct RewrapArgs {
    #[command(flatten)]
    tenant: TenantArgs,
    /// Scope of the envelopes
    #[arg(long)]
    scope: String,
    /// Associated data the envelopes were sealed with (kept for the new ones)
    #[arg(long, value_name = "TEXT", default_value = "")]
    aad: String,
    /// Output file, replaced atomically [default: stdout]
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// One binary envelope, or armored envelopes one per line [default: stdin]
    #[arg(value_name = "IN")]
    input: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum RecoveryKeyCommand {
    /// Create (or replace) the recovery key and print it once.
    Add(TenantOnly),
    /// Remove the recovery key.
    Remove(TenantOnly),
}

#[derive(Args, Debug)]
struct RecoverArgs {
    /// User id
    #[arg(long)]
    user: String,
    /// Channel id
    #[arg(long)]
    channel: String,
    /// Read the recovery key from this file [default: a prompt on the terminal]
    #[arg(long, value_name = "FILE")]
    recovery_key_file: Option<PathBuf>,
    #[command(flatten)]
    new: NewPassphraseArgs,
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
            if a.recovery_key {
                print_recovery_key(&session)?;
            }
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
        Command::Put(a) => {
            let (name, file) = match (&a.asset, a.args.as_slice()) {
                (Some(_), [file]) => (None, Some(file.as_str())),
                (Some(_), []) => (None, None),
                (None, [name]) => (Some(name.as_str()), None),
                (None, [name, file]) => (Some(name.as_str()), Some(file.as_str())),
                _ => return Err(CliError::msg("put takes NAME [FILE], or --asset NAME [FILE]")),
            };
            let (scope, name, asset) = target(&a.scope, &a.asset, name)?;
            if asset {
                let mut input = Input::new(file.map(std::path::Path::new)).open()?;
                let session = unlock(&vault_dir(), &a.tenant)?;
                let progress = io::progress_bar(input.len());
                let size = session.put_asset(&scope, &name, &mut input, &mut |n| progress.set_position(n));
                progress.finish_and_clear();
                size?;
                return Ok(());
            }
            let value = match &a.value {
                Some(v) => zeroize::Zeroizing::new(v.clone().into_bytes()),
                None => Input::new(file.map(std::path::Path::new)).read_all()?,
            };
            unlock(&vault_dir(), &a.tenant)?.put_record(&scope, &name, &value)?;
            Ok(())
        }
        Command::Get(a) => {
            let (scope, name, asset) = target(&a.scope, &a.asset, a.name.as_deref())?;
            let output = Output::new(a.output.as_deref(), false)?;
            let session = unlock(&vault_dir(), &a.tenant)?;
            if asset {
                return output.stream(|out| session.get_asset(&scope, &name, out, &mut |_| {})).map(|_| ());
            }
            output.write(&session.get_record(&scope, &name)?)
        }
        Command::Rm(a) => {
            let (scope, name, asset) = target(&a.scope, &a.asset, a.name.as_deref())?;
            let session = unlock(&vault_dir(), &a.tenant)?;
            if asset {
                session.delete_asset(&scope, &name)?
            } else {
                session.delete_record(&scope, &name)?
            }
            Ok(())
        }
        Command::Ls(a) => {
            let session = unlock(&vault_dir(), &a.tenant)?;
            let names = if a.assets {
                session.list_assets(a.scope.as_deref().unwrap_or("assets"))?
            } else {
                session.list_records(a.scope.as_deref().ok_or_else(|| CliError::msg("records need --scope"))?)?
            };
            let text: String = names.iter().map(|n| format!("{n}\n")).collect();
            Output::new(None, false)?.write(text.as_bytes())
        }
        Command::Seal(a) => stream(&vault_dir(), a, true),
        Command::Open(a) => stream(&vault_dir(), a, false),
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
        Command::Passwd(a) => {
            let pass = Passphrases::new(a.tenant.passphrase_file.as_deref());
            let session = unlock(&vault_dir(), &a.tenant)?;
            let new = pass.replacement(a.new.new_passphrase_file.as_deref(), &a.tenant.user, &a.tenant.channel)?;
            session.change_passphrase(&new, a.new.options())?;
            eprintln!("passphrase changed ({} PBKDF2 iterations); no data key or ciphertext changed", a.new.iterations);
            Ok(())
        }
        Command::Rotate(a) => {
            let version = unlock(&vault_dir(), &a.tenant)?.rotate(&a.scope)?;
            eprintln!("scope {:?} now encrypts under key version {version}", a.scope);
            Ok(())
        }
        Command::Retire(a) => {
            let r = unlock(&vault_dir(), &a.tenant)?.retire(&a.scope, a.below, a.destroy)?;
            let destroyed = match r.destroyed.as_slice() {
                [] => String::new(),
                v => format!("; destroyed the keys of versions {v:?}"),
            };
            eprintln!("scope {:?} decrypts from version {}{destroyed}", a.scope, r.min_decryption_version);
            Ok(())
        }
        Command::AutoRotate(a) => {
            unlock(&vault_dir(), &a.tenant)?.set_auto_rotate(&a.scope, a.after)?;
            match a.after {
                0 => eprintln!("scope {:?}: automatic rotation off", a.scope),
                n => eprintln!("scope {:?}: rotates after {n} encryptions per key version", a.scope),
            }
            Ok(())
        }
        Command::Rewrap(a) => rewrap(&vault_dir(), a),
        Command::RotateKek(a) => {
            let passphrase =
                Passphrases::new(a.tenant.passphrase_file.as_deref()).passphrase(&a.tenant.user, &a.tenant.channel)?;
            let session = open_vault(&vault_dir())?.unlock(&a.tenant.user, &a.tenant.channel, &passphrase)?;
            let version = session.rotate_kek(&passphrase)?;
            eprintln!("key-encryption key replaced (now version {version}); every data key was rewrapped");
            Ok(())
        }
        Command::RecoveryKey(RecoveryKeyCommand::Add(a)) => {
            let session = unlock(&vault_dir(), &a.tenant)?;
            let key = session.add_recovery_key()?;
            Output::new(None, false)?.write(format!("{}\n", key.as_str()).as_bytes())?;
            eprintln!(
                "This recovery key is shown once and stored nowhere. Write it down and keep it apart from the passphrase."
            );
            Ok(())
        }
        Command::RecoveryKey(RecoveryKeyCommand::Remove(a)) => {
            unlock(&vault_dir(), &a.tenant)?.remove_recovery_key()?;
            eprintln!("recovery key removed");
            Ok(())
        }
        Command::Recover(a) => {
            let key = io::read_recovery_key(a.recovery_key_file.as_deref())?;
            let new = Passphrases::new(None).replacement(a.new.new_passphrase_file.as_deref(), &a.user, &a.channel)?;
            let vault = open_vault(&vault_dir())?;
            vault.recover(&a.user, &a.channel, &key, &new, a.new.options())?;
            eprintln!("passphrase reset with the recovery key; the recovery key stays valid until replaced or removed");
            Ok(())
        }
        Command::Audit(a) => {
            let entries = unlock(&vault_dir(), &a.tenant)?.audit_log()?;
            let text = if a.json {
                serde_json::to_string_pretty(&entries).expect("audit entries serialise to JSON") + "\n"
            } else {
                entries
                    .iter()
                    .map(|e| {
                        let mark = if e.authenticated { "" } else { "  (unauthenticated: written without the key)" };
                        format!("{:>5} {} {} {}{mark}\n", e.seq, e.time, e.event, e.details)
                    })
                    .collect()
            };
            Output::new(None, false)?.write(text.as_bytes())
        }
        Command::Demo => demo::run(),
    }
}

/// `seal` / `open`: streams IN to OUT through the component, in constant memory.
fn stream(vault_dir: &std::path::Path, a: StreamArgs, seal: bool) -> Result<(), CliError> {
    let output = Output::new(a.output.as_deref(), seal)?;
    let mut input = Input::new(a.input.as_deref()).open()?;
    let session = unlock(vault_dir, &a.tenant)?;
    let progress = io::progress_bar(input.len());
    let mut tick = |n: u64| progress.set_position(n);
    let aad = a.aad.as_bytes();
    let result = output.stream(|out| {
        Ok(if seal {
            session.seal(&a.scope, aad, &mut input, out, &mut tick)?
        } else {
            session.open(&a.scope, aad, &mut input, out, &mut tick)?
        })
    });
    progress.finish_and_clear();
    result.map(|_| ())
}

fn rewrap(vault_dir: &std::path::Path, a: RewrapArgs) -> Result<(), CliError> {
    let output = Output::new(a.output.as_deref(), false)?;
    let input = Input::new(a.input.as_deref()).read_all()?;
    let session = unlock(vault_dir, &a.tenant)?;
    let armored = input.trim_ascii_start().starts_with(b"bkenc:");
    let envelopes: Vec<&[u8]> = if armored {
        input.split(|b| *b == b'\n').map(<[u8]>::trim_ascii).filter(|l| !l.is_empty()).collect()
    } else {
        vec![&input[..]]
    };
    let items: Vec<(&[u8], &[u8])> = envelopes.iter().map(|e| (*e, a.aad.as_bytes())).collect();
    let results = session.rewrap(&a.scope, &items)?;
    let mut out = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        let env =
            r.map_err(|e| CliError::msg(format!("envelope {} of {}: {e}; nothing was written", i + 1, items.len())))?;
        if armored {
            out.extend_from_slice(backendenc::armor(&env)?.as_bytes());
            out.push(b'\n');
        } else {
            out = env;
        }
    }
    output.write(&out)?;
    eprintln!("rewrapped {} envelope(s) under the scope's current key version", items.len());
    Ok(())
}

/// Creates (or replaces) the recovery key and shows it, once.
fn print_recovery_key(session: &backendenc::Session) -> Result<(), CliError> {
    let key = session.add_recovery_key()?;
    Output::new(None, false)?.write(format!("{}\n", key.as_str()).as_bytes())?;
    eprintln!(
        "This recovery key is shown once and stored nowhere. Write it down and keep it apart from the passphrase."
    );
    Ok(())
}

fn open_vault(vault_dir: &std::path::Path) -> Result<Vault, CliError> {
    if !vault_dir.is_dir() {
        return Err(CliError::msg(format!("no vault at {} (set --vault or BACKENDENC_VAULT)", vault_dir.display())));
    }
    Ok(Vault::open(vault_dir)?)
}

fn unlock(vault_dir: &std::path::Path, t: &TenantArgs) -> Result<backendenc::Session, CliError> {
    let passphrase = Passphrases::new(t.passphrase_file.as_deref()).passphrase(&t.user, &t.channel)?;
    Ok(open_vault(vault_dir)?.unlock(&t.user, &t.channel, &passphrase)?)
}

fn format_status(s: &backendenc::TenantStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "tenant:       {}", s.tenant_key);
    let _ = writeln!(out, "format:       keyring v{}", s.format_version);
    let _ = writeln!(out, "kdf:          {} ({} iterations)", s.kdf, s.iterations);
    let _ = writeln!(out, "kek version:  {}", s.kek_version);
    let _ = writeln!(out, "recovery key: {}", if s.recovery_key { "set" } else { "none" });
    let _ = writeln!(out, "generation:   {}", s.generation);
    if s.scopes.is_empty() {
        let _ = writeln!(out, "scopes:       (none)");
    }
    for sc in &s.scopes {
        let auto = match sc.auto_rotate_after {
            0 => "off".to_owned(),
            n => format!("after {n}"),
        };
        let _ = writeln!(
            out,
            "scope {:?}: current v{}, decrypts from v{}, auto-rotate {auto}",
            sc.name, sc.current_version, sc.min_decryption_version
        );
        for v in &sc.versions {
            let _ = writeln!(out, "  v{}: at most {} encryptions", v.version, v.encryptions);
        }
    }
    out
}
