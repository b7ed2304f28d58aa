//! The host's vault: one sandboxed component instance per unlocked tenant,
//! each with its own `Store` (own linear memory), only its own directory
//! preopened, a memory limit and a per-call CPU bound.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use backendenc_guest::tenant::TenantKey;
use backendenc_guest::{GUEST_VAULT_ROOT, InitOptions};
use serde::Serialize;
use wasmtime::component::ResourceAny;
use wasmtime::{Store, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{FsPerms, ResourceTable, WasiCtxBuilder};
use zeroize::Zeroizing;

use crate::bindings::Backendenc;
use crate::bindings::exports::backendenc::vault::vault as wit;
use crate::error::{Error, Result};
use crate::runtime::{EPOCH_TICK, Runtime};
use crate::state::State;

/// How a vault runs its tenants' instances.
#[derive(Clone, Debug)]
pub struct VaultOptions {
    /// Lock a session after this long without a call (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Most linear memory one tenant's instance may use.
    pub memory_limit: usize,
    /// Longest one call into the component may run before it is interrupted.
    pub call_timeout: Duration,
}

impl Default for VaultOptions {
    fn default() -> Self {
        VaultOptions {
            idle_timeout: Some(Duration::from_secs(15 * 60)),
            memory_limit: 256 * 1024 * 1024,
            call_timeout: Duration::from_secs(120),
        }
    }
}

/// A vault directory. `Send + Sync` and cheap to clone; holds at most one
/// unlocked session per tenant.
#[derive(Clone)]
pub struct Vault {
    inner: Arc<VaultInner>,
}

struct VaultInner {
    runtime: Runtime,
    root: PathBuf,
    root_dir: cap_std::fs::Dir,
    options: VaultOptions,
    sessions: Mutex<HashMap<TenantKey, Session>>,
}

/// What `status` reports. No secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TenantStatus {
    /// Hex tenant key (the tenant's directory name).
    pub tenant_key: String,
    /// Keyring format version.
    pub format_version: u16,
    /// Key-derivation function.
    pub kdf: String,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// Count of committed keyring writes.
    pub generation: u64,
    /// KEK version.
    pub kek_version: u32,
    /// Whether a recovery key is set.
    pub recovery_key: bool,
    /// Scopes with their key versions.
    pub scopes: Vec<ScopeStatus>,
}

/// One scope in [`TenantStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScopeStatus {
    /// Scope name.
    pub name: String,
    /// Version `encrypt` uses.
    pub current_version: u32,
    /// Lowest version that decrypts.
    pub min_decryption_version: u32,
    /// Rotate automatically at this many encryptions of the current version (0: never).
    pub auto_rotate_after: u64,
    /// Every version held, with its usage.
    pub versions: Vec<VersionStatus>,
}

/// One key version in [`ScopeStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionStatus {
    /// Version number.
    pub version: u32,
    /// Encryptions under it, at most (counted in reserved blocks).
    pub encryptions: u64,
}

/// What [`Session::retire`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Retired {
    /// The scope's minimum decryption version now.
    pub min_decryption_version: u32,
    /// Versions whose keys this call destroyed.
    pub destroyed: Vec<u32>,
}

/// One verified line of a tenant's audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub time: u64,
    /// What happened.
    pub event: String,
    /// `key=value` details (scopes by name where the session knows them).
    pub details: String,
    /// False only for lines written without the key (failed unlocks).
    pub authenticated: bool,
}

impl Vault {
    /// Opens (creating, mode 0700, if missing) the vault at `path` with the
    /// shared runtime and default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Vault> {
        Vault::open_with(path, Runtime::shared()?, VaultOptions::default())
    }

    /// Opens the vault at `path` with an explicit runtime and options.
    pub fn open_with(path: impl AsRef<Path>, runtime: Runtime, options: VaultOptions) -> Result<Vault> {
        let path = path.as_ref();
        create_private_dir(path)?;
        let root = path.canonicalize().map_err(|e| Error::io("resolve", path, e))?;
        let root_dir = cap_std::fs::Dir::open_ambient_dir(&root, cap_std::ambient_authority())
            .map_err(|e| Error::io("open vault directory", &root, e))?;
        create_private_dir(&root.join("tenants"))?;
        let inner = Arc::new(VaultInner { runtime, root, root_dir, options, sessions: Mutex::new(HashMap::new()) });
        if let Some(idle) = inner.options.idle_timeout {
            start_idle_reaper(Arc::downgrade(&inner), idle);
        }
        Ok(Vault { inner })
    }

    /// The vault's root directory.
    pub fn path(&self) -> &Path {
        &self.inner.root
    }

    /// Enrols (user, channel) under `passphrase` and returns its session.
    ///
    /// Atomic: the guest writes the new keyring into a private staging
    /// directory, which is then renamed to the tenant's directory. A tenant
    /// exists fully enrolled or not at all; of two concurrent enrolments
    /// exactly one wins and the other gets `AlreadyInitialized`.
    pub fn init(&self, user: &str, channel: &str, passphrase: &[u8], options: InitOptions) -> Result<Session> {
        let tenant = TenantKey::derive(user, channel)?;
        let rel = tenant.relative_dir();
        if self.has_keyring(&rel) {
            return Err(Error::AlreadyInitialized);
        }
        let staging = self.staging_dir()?;
        let opts = wit_options(options);
        let session = self.open_session_in(tenant, &staging, |b, store| {
            b.backendenc_vault_vault().call_init(store, user, channel, passphrase, opts)
        });
        let published = session.and_then(|session| match self.publish(&staging, &rel) {
            Ok(()) => Ok(session),
            Err(e) => {
                // Close the instance (it writes its last audit line) before its directory goes.
                session.lock();
                Err(e)
            }
        });
        match published {
            Ok(session) => Ok(self.register(session)),
            Err(e) => {
                let _ = self.inner.root_dir.remove_dir_all(&staging);
                Err(e)
            }
        }
    }

    /// A fresh, empty, private directory under `tenants/` for an enrolment.
    fn staging_dir(&self) -> Result<PathBuf> {
        let mut random = [0u8; 16];
        backendenc_guest::keys::fill_random(&mut random)?;
        let rel = Path::new("tenants").join(format!(".init-{}", hex::encode(random)));
        create_private_dir(&self.inner.root.join(&rel))?;
        Ok(rel)
    }

    /// Renames a staged tenant directory into place (fails if the tenant exists).
    fn publish(&self, staging: &Path, rel: &Path) -> Result<()> {
        let root = &self.inner.root_dir;
        if let Err(e) = root.rename(staging, root, rel) {
            if self.has_keyring(rel) {
                return Err(Error::AlreadyInitialized);
            }
            let path = self.inner.root.join(rel);
            return Err(Error::Storage(format!(
                "cannot create {}: {e}; if it exists without a keyring and no backendenc process is running, remove it",
                path.display()
            )));
        }
        // Make the rename durable before reporting success.
        let tenants = self.inner.root.join("tenants");
        std::fs::File::open(&tenants).and_then(|d| d.sync_all()).map_err(|e| Error::io("sync", &tenants, e))
    }

    /// Unlocks (user, channel). Replaces (and locks) any session the vault
    /// already held for that tenant.
    pub fn unlock(&self, user: &str, channel: &str, passphrase: &[u8]) -> Result<Session> {
        self.open_existing(user, channel, |b, store| {
            b.backendenc_vault_vault().call_unlock(store, user, channel, passphrase)
        })
    }

    /// Sets a new passphrase for (user, channel) with its recovery key, and
    /// returns the unlocked session. Replaces any session the vault held.
    pub fn recover(
        &self,
        user: &str,
        channel: &str,
        recovery_key: &str,
        new_passphrase: &[u8],
        options: InitOptions,
    ) -> Result<Session> {
        let opts = wit_options(options);
        self.open_existing(user, channel, |b, store| {
            b.backendenc_vault_vault().call_recover(store, user, channel, recovery_key, new_passphrase, opts)
        })
    }

    /// Whether the tenant directory `rel` holds a keyring.
    fn has_keyring(&self, rel: &Path) -> bool {
        self.inner.root_dir.exists(rel.join(backendenc_guest::storage::KEYRING_FILE))
    }

    /// Opens an enrolled tenant's session with `call` (unlock or recover) in
    /// its own directory and registers it; `NotInitialized` before any
    /// instance is made if the tenant has no keyring.
    fn open_existing(
        &self,
        user: &str,
        channel: &str,
        call: impl FnOnce(&Backendenc, &mut Store<State>) -> wasmtime::Result<Result<ResourceAny, wit::Error>>,
    ) -> Result<Session> {
        let tenant = TenantKey::derive(user, channel)?;
        let rel = tenant.relative_dir();
        if !self.has_keyring(&rel) {
            return Err(Error::NotInitialized);
        }
        let session = self.open_session_in(tenant, &rel, call)?;
        Ok(self.register(session))
    }

    /// The unlocked session of (user, channel), if there is one.
    pub fn session(&self, user: &str, channel: &str) -> Result<Option<Session>> {
        let tenant = TenantKey::derive(user, channel)?;
        Ok(self.sessions().get(&tenant).filter(|s| !s.is_locked()).cloned())
    }

    /// Locks every session of this vault.
    pub fn lock_all(&self) {
        let drained: Vec<Session> = self.sessions().drain().map(|(_, s)| s).collect();
        drained.iter().for_each(Session::lock);
    }

    /// The hex tenant key (directory name) of (user, channel).
    pub fn tenant_key(user: &str, channel: &str) -> Result<String> {
        Ok(TenantKey::derive(user, channel)?.to_hex())
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<TenantKey, Session>> {
        self.inner.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Instantiates the component for `tenant` with `dir` (relative to the
    /// vault root) as its only preopen, and runs `call` to get a session.
    fn open_session_in(
        &self,
        tenant: TenantKey,
        dir: &Path,
        call: impl FnOnce(&Backendenc, &mut Store<State>) -> wasmtime::Result<Result<ResourceAny, wit::Error>>,
    ) -> Result<Session> {
        let (mut store, bindings) = self.instantiate(&tenant, dir)?;
        let timeout = self.inner.options.call_timeout;
        store.set_epoch_deadline(epoch_ticks(timeout));
        let handle = match call(&bindings, &mut store) {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return Err(from_wit(e)),
            Err(trap) => return Err(classify_trap(trap, timeout)),
        };
        Ok(Session {
            inner: Arc::new(SessionInner {
                tenant,
                slot: Mutex::new(Some(Slot { store, bindings, handle })),
                last_used: Mutex::new(Instant::now()),
                call_timeout: timeout,
            }),
        })
    }

    /// Makes `session` the tenant's session in this vault, locking any previous one.
    fn register(&self, session: Session) -> Session {
        let previous = self.sessions().insert(session.inner.tenant, session.clone());
        if let Some(previous) = previous {
            previous.lock();
        }
        session
    }

    /// A fresh instance whose only preopen is `dir`, the tenant's own
    /// directory (or its staging directory during enrolment), seen by the
    /// guest as `/vault/tenants/<tenant-key>`.
    fn instantiate(&self, tenant: &TenantKey, dir: &Path) -> Result<(Store<State>, Backendenc)> {
        let host_dir = self.inner.root.join(dir);
        let meta =
            self.inner.root_dir.symlink_metadata(dir).map_err(|e| Error::io("open tenant directory", &host_dir, e))?;
        if !meta.is_dir() {
            return Err(Error::Storage(format!("{} is not a directory", host_dir.display())));
        }
        let guest_dir = format!("{GUEST_VAULT_ROOT}/tenants/{}", tenant.to_hex());
        let wasi = WasiCtxBuilder::new()
            .allow_blocking_current_thread(true)
            .preopened_dir(&host_dir, &guest_dir, FsPerms::ReadWrite)
            .map_err(|e| Error::runtime("cannot preopen the tenant directory", e))?
            .build();
        let limits = StoreLimitsBuilder::new().memory_size(self.inner.options.memory_limit).instances(16).build();
        let engine = self.inner.runtime.engine();
        let mut store = Store::new(engine, State { wasi, table: ResourceTable::new(), limits });
        store.limiter(State::limiter);
        store.set_epoch_deadline(epoch_ticks(self.inner.options.call_timeout));
        let bindings = self
            .inner
            .runtime
            .pre()
            .instantiate(&mut store)
            .map_err(|e| Error::runtime("cannot instantiate the vault component", format!("{e:#}")))?;
        Ok((store, bindings))
    }
}

/// An unlocked tenant. Clone it freely: clones share one instance, and
/// calls on one tenant are serialised while different tenants run in
/// parallel. Locking (or dropping the last clone) zeroizes the keys and
/// frees the instance.
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

struct SessionInner {
    tenant: TenantKey,
    slot: Mutex<Option<Slot>>,
    last_used: Mutex<Instant>,
    call_timeout: Duration,
}

struct Slot {
    store: Store<State>,
    bindings: Backendenc,
    handle: ResourceAny,
}

impl Slot {
    /// Asks the guest to zeroize, then frees the instance with its memory.
    fn close(mut self) {
        let (store, handle) = (&mut self.store, self.handle);
        let _ = self.bindings.backendenc_vault_vault().session().call_lock(&mut *store, handle);
        let _ = handle.resource_drop(&mut *store);
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            slot.close();
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("tenant", &self.inner.tenant).field("locked", &self.is_locked()).finish()
    }
}

impl Session {
    /// Encrypts under the scope's current key; returns a binary envelope.
    pub fn encrypt(&self, scope: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        self.call(|g, store, h| g.session().call_encrypt(store, h, scope, plaintext, aad))
    }

    /// Decrypts a binary or armored envelope.
    pub fn decrypt(&self, scope: &str, envelope: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.call(|g, store, h| g.session().call_decrypt(store, h, scope, envelope, aad)).map(Zeroizing::new)
    }

    /// The tenant's keyring status.
    pub fn status(&self) -> Result<TenantStatus> {
        let s = self.call(|g, store, h| g.session().call_status(store, h))?;
        Ok(TenantStatus {
            tenant_key: s.tenant_key,
            format_version: s.format_version,
            kdf: s.kdf,
            iterations: s.iterations,
            generation: s.generation,
            kek_version: s.kek_version,
            recovery_key: s.recovery_key,
            scopes: s
                .scopes
                .into_iter()
                .map(|sc| ScopeStatus {
                    name: sc.name,
                    current_version: sc.current_version,
                    min_decryption_version: sc.min_decryption_version,
                    auto_rotate_after: sc.auto_rotate_after,
                    versions: sc
                        .versions
                        .into_iter()
                        .map(|v| VersionStatus { version: v.version, encryptions: v.encryptions })
                        .collect(),
                })
                .collect(),
        })
    }

    /// Sets a new passphrase (new salt, optionally a new iteration count).
    /// Only the KEK's wrap changes: no data key, no ciphertext.
    pub fn change_passphrase(&self, new_passphrase: &[u8], options: InitOptions) -> Result<()> {
        let opts = wit_options(options);
        self.call(|g, store, h| g.session().call_change_passphrase(store, h, new_passphrase, opts))
    }

    /// Adds a key version to `scope` and makes it the one `encrypt` uses.
    pub fn rotate(&self, scope: &str) -> Result<u32> {
        self.call(|g, store, h| g.session().call_rotate(store, h, scope))
    }

    /// Sets the scope's minimum decryption version to `below`; with
    /// `destroy`, deletes the keys of older versions for good.
    pub fn retire(&self, scope: &str, below: u32, destroy: bool) -> Result<Retired> {
        let r = self.call(|g, store, h| g.session().call_retire(store, h, scope, below, destroy))?;
        Ok(Retired { min_decryption_version: r.min_decryption_version, destroyed: r.destroyed })
    }

    /// Rotates `scope` automatically after `after` encryptions per version (0: never).
    pub fn set_auto_rotate(&self, scope: &str, after: u64) -> Result<()> {
        self.call(|g, store, h| g.session().call_set_auto_rotate(store, h, scope, after))
    }

    /// Re-encrypts `(envelope, aad)` items under the scope's current key
    /// version inside the component. One result per item.
    pub fn rewrap(&self, scope: &str, items: &[(&[u8], &[u8])]) -> Result<Vec<Result<Vec<u8>>>> {
        let items: Vec<wit::RewrapItem> =
            items.iter().map(|(e, a)| wit::RewrapItem { envelope: e.to_vec(), aad: a.to_vec() }).collect();
        let out = self.call(|g, store, h| g.session().call_rewrap(store, h, scope, &items))?;
        Ok(out.into_iter().map(|r| r.map_err(from_wit)).collect())
    }

    /// Replaces the KEK (every data key is rewrapped); needs the passphrase.
    /// Other sessions of this tenant lock themselves on their next keyring access.
    pub fn rotate_kek(&self, passphrase: &[u8]) -> Result<u32> {
        self.call(|g, store, h| g.session().call_rotate_kek(store, h, passphrase))
    }

    /// Creates (or replaces) the recovery key and returns it, to be shown
    /// to a person once: it is stored nowhere.
    pub fn add_recovery_key(&self) -> Result<Zeroizing<String>> {
        self.call(|g, store, h| g.session().call_add_recovery_key(store, h)).map(Zeroizing::new)
    }

    /// Removes the recovery key.
    pub fn remove_recovery_key(&self) -> Result<()> {
        self.call(|g, store, h| g.session().call_remove_recovery_key(store, h))
    }

    /// The tenant's audit log, verified (an edited or truncated log is an
    /// integrity error).
    pub fn audit_log(&self) -> Result<Vec<AuditEntry>> {
        let entries = self.call(|g, store, h| g.session().call_audit_log(store, h))?;
        Ok(entries
            .into_iter()
            .map(|e| AuditEntry {
                seq: e.seq,
                time: e.time,
                event: e.event,
                details: e.details,
                authenticated: e.authenticated,
            })
            .collect())
    }

    /// Stores `value` as the record `name` of `scope`, replacing any previous
    /// value atomically. Names never reach disk in clear.
    pub fn put_record(&self, scope: &str, name: &str, value: &[u8]) -> Result<()> {
        self.call(|g, store, h| g.session().call_put_record(store, h, scope, name, value))
    }

    /// The record `name` of `scope` (`NotFound` if there is none).
    pub fn get_record(&self, scope: &str, name: &str) -> Result<Zeroizing<Vec<u8>>> {
        self.call(|g, store, h| g.session().call_get_record(store, h, scope, name)).map(Zeroizing::new)
    }

    /// Deletes the record `name` of `scope`.
    pub fn delete_record(&self, scope: &str, name: &str) -> Result<()> {
        self.call(|g, store, h| g.session().call_delete_record(store, h, scope, name))
    }

    /// The names of the records of `scope`, sorted.
    pub fn list_records(&self, scope: &str) -> Result<Vec<String>> {
        self.call(|g, store, h| g.session().call_list_records(store, h, scope))
    }

    /// Stores everything `input` yields as the asset `name` of `scope`, in
    /// constant memory; it becomes visible (replacing any previous one) only
    /// once complete. Returns its size.
    pub fn put_asset(
        &self,
        scope: &str,
        name: &str,
        input: &mut dyn Read,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64> {
        let writer = Handle::new(self, self.call(|g, store, h| g.session().call_begin_asset(store, h, scope, name))?);
        let w = writer.get()?;
        pump(input, progress, |chunk| self.call(|g, store, _| g.asset_writer().call_push(store, w, chunk)))?;
        // Committing hands the writer to the component: it is no longer ours to free.
        let w = writer.into_inner()?;
        self.call(|g, store, h| g.session().call_commit_asset(store, h, w))
    }

    /// Writes the asset `name` of `scope` to `output`, in constant memory.
    /// On an error, what was written is incomplete and must be discarded.
    pub fn get_asset(
        &self,
        scope: &str,
        name: &str,
        output: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64> {
        let reader = Handle::new(self, self.call(|g, store, h| g.session().call_open_asset(store, h, scope, name))?);
        let r = reader.get()?;
        let mut total = 0u64;
        loop {
            let chunk =
                Zeroizing::new(self.call(|g, store, _| g.asset_reader().call_read(store, r, STREAM_CHUNK as u32))?);
            if chunk.is_empty() {
                return Ok(total);
            }
            write_all(output, &chunk)?;
            total += chunk.len() as u64;
            progress(total);
        }
    }

    /// Deletes the asset `name` of `scope`.
    pub fn delete_asset(&self, scope: &str, name: &str) -> Result<()> {
        self.call(|g, store, h| g.session().call_delete_asset(store, h, scope, name))
    }

    /// The names of the assets of `scope`, sorted.
    pub fn list_assets(&self, scope: &str) -> Result<Vec<String>> {
        self.call(|g, store, h| g.session().call_list_assets(store, h, scope))
    }

    /// Starts sealing a stream under the scope's current key. Feed it with
    /// [`StreamSealer::push`]; [`Session::seal`] does it for a reader.
    pub fn seal_stream(&self, scope: &str, aad: &[u8]) -> Result<StreamSealer> {
        let handle = self.call(|g, store, h| g.session().call_seal_stream(store, h, scope, aad))?;
        Ok(StreamSealer(Handle::new(self, handle)))
    }

    /// Starts opening a stream of `scope`.
    pub fn open_stream(&self, scope: &str, aad: &[u8]) -> Result<StreamOpener> {
        let handle = self.call(|g, store, h| g.session().call_open_stream(store, h, scope, aad))?;
        Ok(StreamOpener(Handle::new(self, handle)))
    }

    /// Seals everything `input` yields into `output`, in constant memory.
    /// `progress` is told the plaintext bytes read so far. Returns their total.
    pub fn seal(
        &self,
        scope: &str,
        aad: &[u8],
        input: &mut dyn Read,
        output: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64> {
        let mut sealer = self.seal_stream(scope, aad)?;
        let total = pump(input, progress, |chunk| write_all(output, &sealer.push(chunk)?))?;
        write_all(output, &sealer.finish()?)?;
        Ok(total)
    }

    /// Opens a stream from `input` into `output`, in constant memory. On an
    /// error, what was written is incomplete and must be discarded (the CLI
    /// writes to a temporary file and renames it only on success).
    pub fn open(
        &self,
        scope: &str,
        aad: &[u8],
        input: &mut dyn Read,
        output: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64> {
        let mut opener = self.open_stream(scope, aad)?;
        let mut written = 0u64;
        pump(input, progress, |chunk| {
            let plain = opener.push(chunk)?;
            written += plain.len() as u64;
            write_all(output, &plain)
        })?;
        let plain = opener.finish()?;
        written += plain.len() as u64;
        write_all(output, &plain)?;
        Ok(written)
    }

    /// Zeroizes the keys and frees the instance. Later calls fail with `Locked`.
    pub fn lock(&self) {
        if let Some(slot) = self.slot().take() {
            slot.close();
        }
    }

    /// Whether the session has been locked.
    pub fn is_locked(&self) -> bool {
        self.slot().is_none()
    }

    /// Hex tenant key of this session.
    pub fn tenant_key(&self) -> String {
        self.inner.tenant.to_hex()
    }

    /// Frees a stream resource in this session's instance (if it still exists).
    fn drop_resource(&self, r: ResourceAny) {
        if let Some(slot) = self.slot().as_mut() {
            let _ = r.resource_drop(&mut slot.store);
        }
    }

    fn slot(&self) -> MutexGuard<'_, Option<Slot>> {
        self.inner.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn idle_for(&self) -> Duration {
        self.inner.last_used.lock().unwrap_or_else(PoisonError::into_inner).elapsed()
    }

    fn call<T>(
        &self,
        f: impl FnOnce(&wit::Guest, &mut Store<State>, ResourceAny) -> wasmtime::Result<Result<T, wit::Error>>,
    ) -> Result<T> {
        let mut guard = self.slot();
        let slot = guard.as_mut().ok_or(Error::Locked)?;
        *self.inner.last_used.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        slot.store.set_epoch_deadline(epoch_ticks(self.inner.call_timeout));
        let Slot { store, bindings, handle } = slot;
        match f(bindings.backendenc_vault_vault(), store, *handle) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(wit::Error::Locked)) => {
                if let Some(slot) = guard.take() {
                    slot.close();
                }
                Err(Error::Locked)
            }
            Ok(Err(e)) => Err(from_wit(e)),
            Err(trap) => {
                // A trapped instance cannot be trusted to continue: drop it.
                drop(guard.take());
                Err(classify_trap(trap, self.inner.call_timeout))
            }
        }
    }
}

fn epoch_ticks(timeout: Duration) -> u64 {
    (timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
}

fn classify_trap(e: wasmtime::Error, timeout: Duration) -> Error {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Error::Timeout(timeout.as_secs()),
        _ => Error::Runtime(format!("{e:#}").replace('\n', " ")),
    }
}

pub(crate) fn from_wit(e: wit::Error) -> Error {
    match e {
        wit::Error::NotInitialized => Error::NotInitialized,
        wit::Error::AlreadyInitialized => Error::AlreadyInitialized,
        wit::Error::BadPassphrase => Error::BadPassphrase,
        wit::Error::Integrity(m) => Error::Integrity(m),
        wit::Error::UnknownScope(s) => Error::UnknownScope(s),
        wit::Error::Busy(m) => Error::Busy(m),
        wit::Error::Storage(m) => Error::Storage(m),
        wit::Error::InvalidArgument(m) => Error::InvalidArgument(m),
        wit::Error::Locked => Error::Locked,
        wit::Error::BadRecoveryKey => Error::BadRecoveryKey,
        wit::Error::KeyRetired(m) => Error::Retired(m),
        wit::Error::NotFound(m) => Error::NotFound(m),
    }
}

fn wit_options(options: InitOptions) -> wit::InitOptions {
    wit::InitOptions {
        iterations: options.iterations,
        insecure_allow_low_iterations_for_testing: options.insecure_allow_low_iterations_for_testing,
    }
}

/// Locks sessions idle longer than `idle`; ends with the vault.
fn start_idle_reaper(vault: Weak<VaultInner>, idle: Duration) {
    let tick = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
    std::thread::Builder::new()
        .name("backendenc-idle-lock".into())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                let Some(inner) = vault.upgrade() else { return };
                let expired: Vec<Session> = {
                    let mut map = inner.sessions.lock().unwrap_or_else(PoisonError::into_inner);
                    let keys: Vec<TenantKey> =
                        map.iter().filter(|(_, s)| s.is_locked() || s.idle_for() >= idle).map(|(k, _)| *k).collect();
                    keys.iter().filter_map(|k| map.remove(k)).collect()
                };
                expired.iter().for_each(Session::lock);
            }
        })
        .expect("spawning the idle-lock thread");
}

#[cfg(unix)]
fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| Error::io("create directory", path, e))
}

#[cfg(not(unix))]
fn create_private_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io("create directory", path, e))
}

/// Bytes moved across the component boundary per call when streaming.
pub const STREAM_CHUNK: usize = 256 * 1024;

fn pump(input: &mut dyn Read, progress: &mut dyn FnMut(u64), mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<u64> {
    let mut buf = Zeroizing::new(vec![0u8; STREAM_CHUNK]);
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Storage(format!("cannot read the input: {e}"))),
        };
        each(&buf[..n])?;
        total += n as u64;
        progress(total);
    }
}

fn write_all(output: &mut dyn Write, bytes: &[u8]) -> Result<()> {
    output.write_all(bytes).map_err(|e| Error::Storage(format!("cannot write the output: {e}")))
}

/// A resource in a session's instance, freed when dropped.
struct Handle {
    session: Session,
    resource: Option<ResourceAny>,
}

impl Handle {
    fn new(session: &Session, resource: ResourceAny) -> Self {
        Handle { session: session.clone(), resource: Some(resource) }
    }

    fn get(&self) -> Result<ResourceAny> {
        self.resource.ok_or_else(finished)
    }

    /// Gives the resource away (to a call that takes ownership of it).
    fn into_inner(mut self) -> Result<ResourceAny> {
        self.resource.take().ok_or_else(finished)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(r) = self.resource.take() {
            self.session.drop_resource(r);
        }
    }
}

/// A stream being sealed inside the component (see [`Session::seal_stream`]).
pub struct StreamSealer(Handle);

impl StreamSealer {
    /// Takes plaintext; returns the stream bytes ready so far.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>> {
        let r = self.0.get()?;
        self.0.session.call(|g, store, _| g.sealer().call_push(store, r, chunk))
    }

    /// Returns the stream's last bytes.
    pub fn finish(self) -> Result<Vec<u8>> {
        let r = self.0.get()?;
        self.0.session.call(|g, store, _| g.sealer().call_finish(store, r))
    }
}

/// A stream being opened inside the component (see [`Session::open_stream`]).
pub struct StreamOpener(Handle);

impl StreamOpener {
    /// Takes stream bytes; returns the plaintext of the segments that
    /// authenticated so far. Tentative until [`StreamOpener::finish`] succeeds.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let r = self.0.get()?;
        self.0.session.call(|g, store, _| g.opener().call_push(store, r, chunk)).map(Zeroizing::new)
    }

    /// Opens the final segment; fails if the stream was cut short or altered.
    pub fn finish(self) -> Result<Zeroizing<Vec<u8>>> {
        let r = self.0.get()?;
        self.0.session.call(|g, store, _| g.opener().call_finish(store, r)).map(Zeroizing::new)
    }
}

fn finished() -> Error {
    Error::InvalidArgument("the stream was already finished".into())
}
