//! Enrolment, unlock and the unlocked session: the operations the component
//! exports, in plain Rust over a vault root directory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::envelope::{self, Envelope};
use crate::error::{Error, Result};
use crate::kdf::{DEFAULT_ITERATIONS, IterationPolicy, KdfParams};
use crate::keyring::{self, Body, Header, ScopeKeys, SealedKeyring, dek_wrap_aad, kek_wrap_aad, validate_scope};
use crate::keys::{DataEncryptionKey, KeyEncryptionKey};
use crate::storage::{TenantDir, WriterLock};
use crate::tenant::TenantKey;

/// Options for enrolling a tenant.
#[derive(Clone, Copy, Debug, Default)]
pub struct InitOptions {
    /// PBKDF2 iterations; `None` means [`DEFAULT_ITERATIONS`].
    pub iterations: Option<u32>,
    /// Accept fewer than 100,000 iterations. Tests only.
    pub insecure_allow_low_iterations_for_testing: bool,
}

/// A vault rooted at a directory (inside the component: `/vault`).
#[derive(Clone, Debug)]
pub struct Vault {
    root: PathBuf,
}

/// What `status` reports about a scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeStatus {
    /// Scope name.
    pub name: String,
    /// Version used by encrypt.
    pub current_version: u32,
    /// Lowest version that still decrypts.
    pub min_decryption_version: u32,
    /// All versions held.
    pub versions: Vec<u32>,
}

/// What `status` reports about a tenant. No secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantStatus {
    /// Hex tenant key.
    pub tenant_key: String,
    /// Keyring format version.
    pub format_version: u16,
    /// KDF name.
    pub kdf: &'static str,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// Keyring generation.
    pub generation: u64,
    /// KEK version.
    pub kek_version: u32,
    /// Scopes, by name.
    pub scopes: Vec<ScopeStatus>,
}

impl Vault {
    /// A vault whose root directory is `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Vault { root: root.into() }
    }

    fn tenant_dir(&self, tenant: &TenantKey) -> TenantDir {
        TenantDir::new(self.root.join(tenant.relative_dir()))
    }

    /// Enrols (user, channel): a random KEK wrapped under the passphrase.
    /// Fails with `AlreadyInitialized` if the tenant has a keyring.
    pub fn init(&self, user: &str, channel: &str, passphrase: &[u8], options: InitOptions) -> Result<Session> {
        let tenant = TenantKey::derive(user, channel)?;
        if passphrase.is_empty() {
            return Err(Error::invalid("passphrase is empty"));
        }
        let policy = if options.insecure_allow_low_iterations_for_testing {
            IterationPolicy::InsecureAllowLowForTesting
        } else {
            IterationPolicy::Enrol
        };
        let kdf = KdfParams::generate(options.iterations.unwrap_or(DEFAULT_ITERATIONS), policy)?;
        let dir = self.tenant_dir(&tenant);
        // Fail fast before the expensive KDF; checked again under the lock.
        if dir.read_keyring()?.is_some() {
            return Err(Error::AlreadyInitialized);
        }
        let mk = kdf.derive_master_key(passphrase, policy)?;
        let kek = KeyEncryptionKey::generate()?;
        let kek_version = 1;
        let kek_wrap = mk.wrap_kek(&kek, &kek_wrap_aad(&tenant, &kdf, kek_version))?;
        let header = Header { tenant, kdf, kek_version, generation: 1, kek_wrap };
        let body = Body::default();
        let bytes = keyring::encode(&header, &body, &kek)?;
        dir.create()?;
        let lock = dir.lock()?;
        if dir.read_keyring()?.is_some() {
            return Err(Error::AlreadyInitialized);
        }
        dir.replace_keyring(&lock, &bytes)?;
        lock.release()?;
        Ok(Session { dir, tenant, kek, header, body, deks: BTreeMap::new() })
    }

    /// Opens (user, channel) with its passphrase.
    pub fn unlock(&self, user: &str, channel: &str, passphrase: &[u8]) -> Result<Session> {
        let tenant = TenantKey::derive(user, channel)?;
        let dir = self.tenant_dir(&tenant);
        let bytes = dir.read_keyring()?.ok_or(Error::NotInitialized)?;
        let sealed = SealedKeyring::decode(&bytes, &tenant)?;
        let header = sealed.header.clone();
        let mk = header.kdf.derive_master_key(passphrase, IterationPolicy::Unlock)?;
        let kek = mk.unwrap_kek(&header.kek_wrap, &kek_wrap_aad(&tenant, &header.kdf, header.kek_version))?;
        let body = sealed.open(&kek)?;
        Ok(Session { dir, tenant, kek, header, body, deks: BTreeMap::new() })
    }
}

/// An unlocked tenant: holds the KEK and unwrapped DEKs, zeroized on drop.
pub struct Session {
    dir: TenantDir,
    tenant: TenantKey,
    kek: KeyEncryptionKey,
    header: Header,
    body: Body,
    deks: BTreeMap<(String, u32), DataEncryptionKey>,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("tenant", &self.tenant)
            .field("generation", &self.header.generation)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The tenant this session serves.
    pub fn tenant(&self) -> &TenantKey {
        &self.tenant
    }

    /// Encrypts under the scope's current DEK, creating the scope on first use.
    pub fn encrypt(&mut self, scope: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        validate_scope(scope)?;
        if !self.body.scopes.contains_key(scope) {
            self.commit(|kek, header, body| {
                if !body.scopes.contains_key(scope) {
                    let dek = DataEncryptionKey::generate()?;
                    let wrapped = kek.wrap_dek(&dek, &dek_wrap_aad(&header.tenant, scope, 1, header.kek_version))?;
                    body.scopes.insert(
                        scope.to_owned(),
                        ScopeKeys { current: 1, min_decryption: 1, deks: BTreeMap::from([(1, wrapped)]) },
                    );
                }
                Ok(())
            })?;
        }
        let version = self.body.scopes[scope].current;
        let id = self.load_dek(scope, version)?;
        envelope::seal(&self.deks[&id], version, &self.tenant, scope, plaintext, aad)
    }

    /// Decrypts a binary or armored envelope. Never creates keys.
    pub fn decrypt(&mut self, scope: &str, input: &[u8], aad: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        validate_scope(scope)?;
        let bytes = envelope::decode(input)?;
        let env = Envelope::parse(&bytes)?;
        let known = |s: &Self| s.body.scopes.get(scope).is_some_and(|k| k.deks.contains_key(&env.key_version));
        if !known(self) {
            // Another process may have added the scope or version since unlock.
            self.refresh()?;
        }
        let keys = self.body.scopes.get(scope).ok_or_else(|| Error::UnknownScope(scope.to_owned()))?;
        if !keys.deks.contains_key(&env.key_version) {
            return Err(Error::integrity(format!("scope has no key version {}", env.key_version)));
        }
        if env.key_version < keys.min_decryption {
            return Err(Error::integrity(format!("key version {} of this scope is retired", env.key_version)));
        }
        let id = self.load_dek(scope, env.key_version)?;
        env.open(&self.deks[&id], &self.tenant, scope, aad)
    }

    /// What the session knows about its tenant.
    pub fn status(&self) -> TenantStatus {
        TenantStatus {
            tenant_key: self.tenant.to_hex(),
            format_version: keyring::FORMAT_VERSION,
            kdf: "pbkdf2-hmac-sha256",
            iterations: self.header.kdf.iterations,
            generation: self.header.generation,
            kek_version: self.header.kek_version,
            scopes: self
                .body
                .scopes
                .iter()
                .map(|(name, k)| ScopeStatus {
                    name: name.clone(),
                    current_version: k.current,
                    min_decryption_version: k.min_decryption,
                    versions: k.deks.keys().copied().collect(),
                })
                .collect(),
        }
    }

    /// Unwraps (once) the DEK of a scope version the body holds; returns its cache id.
    fn load_dek(&mut self, scope: &str, version: u32) -> Result<(String, u32)> {
        let id = (scope.to_owned(), version);
        if !self.deks.contains_key(&id) {
            let wrapped = self.body.scopes[scope].deks[&version];
            let aad = dek_wrap_aad(&self.tenant, scope, version, self.header.kek_version);
            let dek = self.kek.unwrap_dek(&wrapped, &aad)?;
            self.deks.insert(id.clone(), dek);
        }
        Ok(id)
    }

    /// Reads the newest keyring from disk (readers need no lock: the file
    /// is replaced atomically).
    fn refresh(&mut self) -> Result<()> {
        let bytes = self.dir.read_keyring()?.ok_or(Error::NotInitialized)?;
        let (header, body) = self.open_current(&bytes)?;
        self.header = header;
        self.body = body;
        Ok(())
    }

    fn open_current(&self, bytes: &[u8]) -> Result<(Header, Body)> {
        let sealed = SealedKeyring::decode(bytes, &self.tenant)?;
        if sealed.header.kek_version != self.header.kek_version {
            // The KEK was rotated elsewhere: this session's KEK is obsolete.
            return Err(Error::Locked);
        }
        let body = sealed.open(&self.kek)?;
        Ok((sealed.header, body))
    }

    /// Lock, re-read the newest state, apply `change`, bump the generation,
    /// replace atomically, unlock.
    fn commit(&mut self, change: impl FnOnce(&KeyEncryptionKey, &Header, &mut Body) -> Result<()>) -> Result<()> {
        let lock: WriterLock = self.dir.lock()?;
        let bytes = self.dir.read_keyring()?.ok_or(Error::NotInitialized)?;
        let (mut header, mut body) = self.open_current(&bytes)?;
        change(&self.kek, &header, &mut body)?;
        header.generation = header
            .generation
            .checked_add(1)
            .ok_or_else(|| Error::integrity("keyring generation counter overflowed"))?;
        let new_bytes = keyring::encode(&header, &body, &self.kek)?;
        self.dir.replace_keyring(&lock, &new_bytes)?;
        lock.release()?;
        self.header = header;
        self.body = body;
        Ok(())
    }
}
