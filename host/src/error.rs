//! The host's error type: the guest's causes, one for one, plus the ways
//! the sandbox itself can fail.

use thiserror::Error;

/// Why a vault operation failed. Each message is one line naming the cause.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The tenant has no keyring: run `init` first.
    #[error("tenant is not initialized: run init first")]
    NotInitialized,
    /// `init` found an existing keyring; nothing was changed.
    #[error("tenant is already initialized")]
    AlreadyInitialized,
    /// The passphrase does not open the keyring (or its wrapped key was altered).
    #[error("wrong passphrase (or the keyring's wrapped key was altered)")]
    BadPassphrase,
    /// Bytes failed authentication or are malformed.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// `decrypt` named a scope with no key.
    #[error("unknown scope {0:?}: nothing was ever encrypted under it")]
    UnknownScope(String),
    /// Another writer holds the tenant's lock file.
    #[error("busy: {0}")]
    Busy(String),
    /// The vault directory could not be read or written.
    #[error("storage error: {0}")]
    Storage(String),
    /// An argument is out of range or malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The session is locked (explicitly, idle, or re-keyed); unlock again.
    #[error("session is locked: unlock the tenant again")]
    Locked,
    /// A named record does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The recovery key does not open this keyring (or none is set).
    #[error("wrong recovery key (or this tenant has none)")]
    BadRecoveryKey,
    /// The envelope's key version is retired (below the scope's minimum decryption version).
    #[error("key retired: {0}")]
    Retired(String),
    /// A call ran longer than the configured CPU bound; the session was dropped.
    #[error("the vault component exceeded its time limit of {0} s; the session was locked")]
    Timeout(u64),
    /// The component could not be loaded, linked or run (a trap, or the memory limit).
    #[error("vault component failed: {0}")]
    Runtime(String),
}

/// Result alias of the host crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl From<backendenc_guest::Error> for Error {
    fn from(e: backendenc_guest::Error) -> Self {
        use backendenc_guest::Error as G;
        match e {
            G::NotInitialized => Error::NotInitialized,
            G::AlreadyInitialized => Error::AlreadyInitialized,
            G::BadPassphrase => Error::BadPassphrase,
            G::Integrity(m) => Error::Integrity(m),
            G::UnknownScope(s) => Error::UnknownScope(s),
            G::Busy(m) => Error::Busy(m),
            G::Storage(m) => Error::Storage(m),
            G::InvalidArgument(m) => Error::InvalidArgument(m),
            G::Locked => Error::Locked,
            G::BadRecoveryKey => Error::BadRecoveryKey,
            G::Retired(m) => Error::Retired(m),
            G::NotFound(m) => Error::NotFound(m),
            other => Error::Runtime(other.to_string()),
        }
    }
}

impl Error {
    pub(crate) fn runtime(context: &str, e: impl std::fmt::Display) -> Self {
        Error::Runtime(format!("{context}: {e}"))
    }
    pub(crate) fn io(action: &str, path: &std::path::Path, e: std::io::Error) -> Self {
        Error::Storage(format!("cannot {action} {}: {e}", path.display()))
    }
}
