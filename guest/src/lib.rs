//! backendenc's key hierarchy: the code that runs inside the WebAssembly
//! component. Every module here is plain Rust that also builds and tests
//! natively; only [`component`] (wasm32 only) speaks WIT.
//!
//! ```text
//! passphrase ──PBKDF2-HMAC-SHA256──▶ MK ──AES-256-GCM──▶ KEK ──AES-256-GCM──▶ DEK ──XAES-256-GCM──▶ data
//! ```
//! **Keys never leave the component. A KEK only ever encrypts other keys.**
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod aad;
pub mod assets;
pub mod audit;
pub mod envelope;
pub mod error;
pub mod kdf;
pub mod keyring;
pub mod keys;
pub mod records;
pub mod recovery;
pub mod session;
pub mod storage;
pub mod stream;
pub mod tenant;
pub mod vault;

#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod robustness_tests;

// The WIT glue: generated bindings use `unsafe`; nothing else may.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, missing_docs)]
mod component;

pub use error::{Error, Result};
pub use session::{Session, TenantStatus};
pub use vault::{InitOptions, Vault};

/// Where the component expects the vault directory (a WASI preopen).
pub const GUEST_VAULT_ROOT: &str = "/vault";
