//! What the CLI reads and writes: passphrases, input, atomically replaced
//! output, and its one-line errors with distinct exit codes.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Environment variable holding the passphrase (for scripts).
pub const PASSPHRASE_ENV: &str = "BACKENDENC_PASSPHRASE";
/// Environment variable holding a new passphrase (passwd, recover).
pub const NEW_PASSPHRASE_ENV: &str = "BACKENDENC_NEW_PASSPHRASE";

/// A CLI failure: a library error or a message. Displayed as one line.
#[derive(Debug)]
pub enum CliError {
    /// From the library.
    Vault(backendenc::Error),
    /// From the CLI itself (I/O, arguments, prompts).
    Message(String),
}

impl CliError {
    pub fn msg(m: impl Into<String>) -> Self {
        CliError::Message(m.into())
    }

    /// 3: wrong passphrase; 4: integrity failure; 1: anything else
    /// (2 is clap's usage error).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Vault(backendenc::Error::BadPassphrase | backendenc::Error::BadRecoveryKey) => 3,
            CliError::Vault(backendenc::Error::Integrity(_) | backendenc::Error::Retired(_)) => 4,
            _ => 1,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Vault(e) => write!(f, "{e}"),
            CliError::Message(m) => f.write_str(m),
        }
    }
}

impl From<backendenc::Error> for CliError {
    fn from(e: backendenc::Error) -> Self {
        CliError::Vault(e)
    }
}

/// Where passphrases come from: `--passphrase-file`, else
/// `$BACKENDENC_PASSPHRASE`, else a no-echo prompt on the terminal.
pub struct Passphrases<'a> {
    file: Option<&'a Path>,
}

impl<'a> Passphrases<'a> {
    pub fn new(file: Option<&'a Path>) -> Self {
        Passphrases { file }
    }

    /// The passphrase of an existing tenant.
    pub fn passphrase(&self, user: &str, channel: &str) -> Result<Zeroizing<Vec<u8>>, CliError> {
        if let Some(p) = self.non_interactive()? {
            return Ok(p);
        }
        prompt(&format!("Passphrase for {user}/{channel}: "))
    }

    /// A new passphrase: asked twice on a terminal.
    pub fn new_passphrase(&self, user: &str, channel: &str) -> Result<Zeroizing<Vec<u8>>, CliError> {
        if let Some(p) = self.non_interactive()? {
            return Ok(p);
        }
        prompt_twice(&format!("New passphrase for {user}/{channel}: "), "Repeat the passphrase: ")
    }

    /// A replacement passphrase: `file`, else `$BACKENDENC_NEW_PASSPHRASE`,
    /// else asked twice on the terminal.
    pub fn replacement(&self, file: Option<&Path>, user: &str, channel: &str) -> Result<Zeroizing<Vec<u8>>, CliError> {
        if let Some(p) = read_secret_source(file, NEW_PASSPHRASE_ENV, "new passphrase")? {
            return Ok(p);
        }
        prompt_twice(&format!("New passphrase for {user}/{channel}: "), "Repeat the new passphrase: ")
    }

    fn non_interactive(&self) -> Result<Option<Zeroizing<Vec<u8>>>, CliError> {
        read_secret_source(self.file, PASSPHRASE_ENV, "passphrase")
    }
}

/// The recovery key from `file`, else a no-echo prompt.
pub fn read_recovery_key(file: Option<&Path>) -> Result<Zeroizing<String>, CliError> {
    let bytes = match file {
        Some(_) => read_secret_source(file, "", "recovery key")?.expect("a file was given"),
        None => prompt("Recovery key: ")?,
    };
    String::from_utf8(bytes.to_vec()).map(Zeroizing::new).map_err(|_| CliError::msg("the recovery key is not text"))
}

/// A secret from `file` (one trailing newline dropped), else from the
/// environment variable `env` (when `env` names one), else `None`.
fn read_secret_source(file: Option<&Path>, env: &str, what: &str) -> Result<Option<Zeroizing<Vec<u8>>>, CliError> {
    if let Some(path) = file {
        let mut bytes = Zeroizing::new(
            std::fs::read(path)
                .map_err(|e| CliError::msg(format!("cannot read {what} file {}: {e}", path.display())))?,
        );
        strip_one_newline(&mut bytes);
        return Ok(Some(bytes));
    }
    if env.is_empty() {
        return Ok(None);
    }
    #[cfg(unix)]
    if let Some(v) = std::env::var_os(env) {
        use std::os::unix::ffi::OsStringExt;
        return Ok(Some(Zeroizing::new(v.into_vec())));
    }
    #[cfg(not(unix))]
    if let Some(v) = std::env::var_os(env) {
        let s = v.into_string().map_err(|_| CliError::msg(format!("{env} is not valid Unicode")))?;
        return Ok(Some(Zeroizing::new(s.into_bytes())));
    }
    Ok(None)
}

fn strip_one_newline(bytes: &mut Zeroizing<Vec<u8>>) {
    let drop = if bytes.ends_with(b"\r\n") { 2 } else { usize::from(bytes.ends_with(b"\n")) };
    let keep = bytes.len() - drop;
    bytes.truncate(keep);
}

/// Asks for a new secret twice; a mismatch changes nothing.
fn prompt_twice(first: &str, again: &str) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let a = prompt(first)?;
    let b = prompt(again)?;
    if a != b {
        return Err(CliError::msg("the two passphrases differ; nothing was changed"));
    }
    Ok(a)
}

fn prompt(text: &str) -> Result<Zeroizing<Vec<u8>>, CliError> {
    rpassword::prompt_password(text).map(|s| Zeroizing::new(s.into_bytes())).map_err(|_| {
        CliError::msg(format!("no passphrase: use --passphrase-file, set {PASSPHRASE_ENV}, or run on a terminal"))
    })
}

/// A file or stdin.
pub struct Input<'a> {
    path: Option<&'a Path>,
}

impl<'a> Input<'a> {
    pub fn new(path: Option<&'a Path>) -> Self {
        Input { path: path.filter(|p| *p != Path::new("-")) }
    }

    /// Opens the input for streaming.
    pub fn open(&self) -> Result<OpenInput, CliError> {
        match self.path {
            Some(p) => {
                let f =
                    std::fs::File::open(p).map_err(|e| CliError::msg(format!("cannot read {}: {e}", p.display())))?;
                let len = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
                Ok(OpenInput { reader: Box::new(f), len })
            }
            None => Ok(OpenInput { reader: Box::new(std::io::stdin().lock()), len: None }),
        }
    }

    pub fn read_all(&self) -> Result<Zeroizing<Vec<u8>>, CliError> {
        let mut buf = Zeroizing::new(Vec::new());
        match self.path {
            Some(p) => std::fs::File::open(p)
                .and_then(|mut f| f.read_to_end(&mut buf))
                .map_err(|e| CliError::msg(format!("cannot read {}: {e}", p.display())))?,
            None => std::io::stdin()
                .lock()
                .read_to_end(&mut buf)
                .map_err(|e| CliError::msg(format!("cannot read stdin: {e}")))?,
        };
        Ok(buf)
    }
}

/// An input opened for streaming, with its size when it is a regular file.
pub struct OpenInput {
    reader: Box<dyn Read>,
    len: Option<u64>,
}

impl OpenInput {
    pub fn len(&self) -> Option<u64> {
        self.len
    }
}

impl Read for OpenInput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buf)
    }
}

/// Inputs at least this large get a progress bar (on a terminal).
const PROGRESS_FROM: u64 = 4 << 20;

/// A progress bar on stderr for a large input of known size when stderr is
/// a terminal; otherwise a hidden one.
pub fn progress_bar(len: Option<u64>) -> indicatif::ProgressBar {
    match len {
        Some(n) if n >= PROGRESS_FROM && std::io::stderr().is_terminal() => {
            let bar = indicatif::ProgressBar::new(n);
            let style = indicatif::ProgressStyle::with_template(
                "{bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("the template is valid");
            bar.set_style(style);
            bar
        }
        _ => indicatif::ProgressBar::hidden(),
    }
}

/// A file (replaced atomically, mode 0600, only once all bytes are known)
/// or stdout.
pub struct Output {
    path: Option<PathBuf>,
}

impl Output {
    /// Refuses binary output to a terminal up front, before any work.
    pub fn new(path: Option<&Path>, binary: bool) -> Result<Self, CliError> {
        let path = path.filter(|p| *p != Path::new("-")).map(Path::to_path_buf);
        if path.is_none() && binary && std::io::stdout().is_terminal() {
            return Err(CliError::msg("refusing to write a binary envelope to a terminal; use --armor or -o FILE"));
        }
        Ok(Output { path })
    }

    pub fn write(&self, bytes: &[u8]) -> Result<(), CliError> {
        match &self.path {
            None => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes)
                    .and_then(|()| out.flush())
                    .map_err(|e| CliError::msg(format!("cannot write stdout: {e}")))
            }
            Some(path) => write_atomically(path, bytes)
                .map_err(|e| CliError::msg(format!("cannot write {}: {e}", path.display()))),
        }
    }
}

impl Output {
    /// Streams into the output: a file is written to a temporary file beside
    /// it and renamed over it only if `f` succeeds (else nothing changes).
    pub fn stream<T>(&self, f: impl FnOnce(&mut dyn Write) -> Result<T, backendenc::Error>) -> Result<T, CliError> {
        match &self.path {
            None => {
                let mut out = std::io::BufWriter::with_capacity(256 * 1024, std::io::stdout().lock());
                let v = f(&mut out)?;
                out.flush().map_err(|e| CliError::msg(format!("cannot write stdout: {e}")))?;
                Ok(v)
            }
            Some(path) => {
                let fail = |e: std::io::Error| CliError::msg(format!("cannot write {}: {e}", path.display()));
                let dir = match path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                let tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
                let mut out = std::io::BufWriter::with_capacity(256 * 1024, tmp);
                let v = f(&mut out)?;
                let tmp = out.into_inner().map_err(|e| fail(e.into_error()))?;
                tmp.as_file().sync_all().map_err(fail)?;
                tmp.persist(path).map_err(|e| fail(e.error))?;
                Ok(v)
            }
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
