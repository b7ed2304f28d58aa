//! The one error type of the key hierarchy. Its variants mirror the WIT
//! `error` variant case for case, so the component glue only translates.

use thiserror::Error;

/// Why an operation on the vault failed.
///
/// Messages are one line, name the cause, and never contain key bytes,
/// passphrases or plaintext.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The tenant has no keyring: it must be enrolled with `init` first.
    #[error("tenant is not initialized: run init first")]
    NotInitialized,
    /// `init` found an existing keyring; nothing was changed.
    #[error("tenant is already initialized")]
    AlreadyInitialized,
    /// The passphrase did not unwrap the key-encryption key. A deliberately
    /// altered wrapped key looks the same; the two are not told apart.
    #[error("wrong passphrase (or the keyring's wrapped key was altered)")]
    BadPassphrase,
    /// A named record does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The recovery key does not open this tenant's keyring (or none is set).
    #[error("wrong recovery key (or this tenant has none)")]
    BadRecoveryKey,
    /// The envelope's key version is below the scope's minimum decryption version.
    #[error("key retired: {0}")]
    Retired(String),
    /// Bytes failed authentication or are malformed.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// `decrypt` named a scope that has no key.
    #[error("unknown scope {0:?}: nothing was ever encrypted under it")]
    UnknownScope(String),
    /// Another writer holds the tenant's lock file.
    #[error("busy: {0}")]
    Busy(String),
    /// Reading or writing the vault directory failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// An argument is out of range or malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The session was locked (explicitly, by idle timeout, or because the
    /// keyring was re-keyed elsewhere).
    #[error("session is locked: unlock the tenant again")]
    Locked,
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl Error {
    pub(crate) fn integrity(msg: impl Into<String>) -> Self {
        Error::Integrity(msg.into())
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// An I/O failure on `path`, as one line that names the file and the cause.
    pub(crate) fn io(action: &str, path: &std::path::Path, err: std::io::Error) -> Self {
        Error::Storage(format!("cannot {action} {}: {err}", path.display()))
    }
}
