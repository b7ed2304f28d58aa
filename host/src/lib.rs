//! backendenc: a passphrase-protected key hierarchy for AI-agent backends.
//!
//! The keys live in a WebAssembly component ([`runtime::GUEST_WASM`]) that
//! imports no network interface and is linked against a host linker that
//! has none either. Each unlocked tenant runs in its own instance, with only
//! its own directory of the vault preopened.
//!
//! ```no_run
//! # fn main() -> Result<(), backendenc::Error> {
//! let vault = backendenc::Vault::open("/var/lib/agent/vault")?;
//! let session = vault.unlock("alice", "general", b"correct horse battery staple")?;
//! let envelope = session.encrypt("memory", b"[user] hi", b"")?;
//! assert_eq!(&session.decrypt("memory", &envelope, b"")?[..], b"[user] hi");
//! # Ok(()) }
//! ```
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod error;
pub mod runtime;
pub mod sandbox;
mod state;
mod vault;

/// Host bindings of `wit/vault.wit`.
mod bindings {
    wasmtime::component::bindgen!({ world: "backendenc", path: "../wit" });
}

pub use backendenc_guest::InitOptions;
pub use backendenc_guest::kdf::{DEFAULT_ITERATIONS, MIN_ITERATIONS};
pub use error::{Error, Result};
pub use runtime::Runtime;
pub use vault::{
    AuditEntry, Retired, STREAM_CHUNK, ScopeStatus, Session, StreamOpener, StreamSealer, TenantStatus, Vault,
    VaultOptions, VersionStatus,
};

/// The text armor (`bkenc:v1:…`) of a binary envelope. Pure encoding: no keys.
pub fn armor(envelope: &[u8]) -> Result<String> {
    Ok(backendenc_guest::envelope::armor(envelope)?)
}
