//! An unlocked tenant: data encryption and the key lifecycle (passphrase
//! change, DEK and KEK rotation, retirement, rewrap, recovery key, usage
//! counters, audit). Every change is one atomic keyring write under the
//! lock, so a crash leaves either the old or the new keyring.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::audit::{self, Entry};
use crate::envelope::{self, Envelope};
use crate::error::{Error, Result};
use crate::kdf::IterationPolicy;
use crate::keyring::{
    self, Body, DekEntry, Header, ScopeKeys, SealedKeyring, dek_wrap_aad, kek_wrap_aad, validate_scope,
};
use crate::keys::{DataEncryptionKey, KeyEncryptionKey};
use crate::recovery::{self, RecoveryKey};
use crate::storage::TenantDir;
use crate::stream::{Opener, Sealer};
use crate::tenant::TenantKey;
use crate::vault::{InitOptions, new_audit_key};

/// Encryptions a session reserves per keyring write. The stored counter is
/// therefore an upper bound, never an undercount, of the real number.
pub const USAGE_BLOCK: u64 = 1024;

/// What `status` reports about a scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeStatus {
    /// Scope name.
    pub name: String,
    /// Version used by encrypt.
    pub current_version: u32,
    /// Lowest version that still decrypts.
    pub min_decryption_version: u32,
    /// Rotate once the current version reaches this many uses (0: never).
    pub auto_rotate_after: u64,
    /// All versions held, with their usage counters (upper bounds).
    pub versions: Vec<VersionStatus>,
}

/// One DEK version in [`ScopeStatus`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionStatus {
    /// Version number.
    pub version: u32,
    /// Encryptions made under it, at most.
    pub encryptions: u64,
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
    /// Whether a recovery key is set.
    pub recovery_key: bool,
    /// Scopes, by name.
    pub scopes: Vec<ScopeStatus>,
}

/// The outcome of [`Session::retire`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retired {
    /// The scope's minimum decryption version now.
    pub min_decryption_version: u32,
    /// Versions whose keys were destroyed by this call.
    pub destroyed: Vec<u32>,
}

/// An unlocked tenant: holds the KEK and unwrapped DEKs, zeroized on drop.
pub struct Session {
    dir: TenantDir,
    tenant: TenantKey,
    kek: KeyEncryptionKey,
    header: Header,
    body: Body,
    deks: BTreeMap<(String, u32), DataEncryptionKey>,
    /// Per scope: (version, encryptions left) this session has reserved.
    reserved: BTreeMap<String, (u32, u64)>,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("tenant", &self.tenant)
            .field("generation", &self.header.generation)
            .finish_non_exhaustive()
    }
}

/// A keyring change in progress: the newest header and body read under the
/// lock, and the KEK that will seal the result.
pub(crate) struct Txn {
    pub(crate) header: Header,
    pub(crate) body: Body,
    pub(crate) kek: KeyEncryptionKey,
}

impl Session {
    pub(crate) fn new(dir: TenantDir, tenant: TenantKey, kek: KeyEncryptionKey, header: Header, body: Body) -> Self {
        Session { dir, tenant, kek, header, body, deks: BTreeMap::new(), reserved: BTreeMap::new() }
    }

    /// The tenant this session serves.
    pub fn tenant(&self) -> &TenantKey {
        &self.tenant
    }

    /// Encrypts under the scope's current DEK, creating the scope on first
    /// use, reserving usage in blocks and rotating when the scope's
    /// auto-rotate threshold is reached.
    pub fn encrypt(&mut self, scope: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        validate_scope(scope)?;
        let version = self.take_use(scope)?;
        let id = self.load_dek(scope, version)?;
        envelope::seal(&self.deks[&id], version, &self.tenant, scope, plaintext, aad)
    }

    /// Decrypts a binary or armored envelope. Never creates keys.
    pub fn decrypt(&mut self, scope: &str, input: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        validate_scope(scope)?;
        let bytes = envelope::decode(input)?;
        let env = Envelope::parse(&bytes)?;
        self.open(scope, &env, aad)
    }

    fn open(&mut self, scope: &str, env: &Envelope<'_>, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let known = |s: &Self| s.body.scopes.get(scope).is_some_and(|k| k.deks.contains_key(&env.key_version));
        if !known(self) {
            // Another process may have added the scope or version since unlock.
            self.refresh()?;
        }
        let keys = self.body.scopes.get(scope).ok_or_else(|| Error::UnknownScope(scope.to_owned()))?;
        // The version field is only trustworthy once the envelope authenticates.
        let held = keys.deks.contains_key(&env.key_version);
        let retired = env.key_version < keys.min_decryption;
        let min = keys.min_decryption;
        let retired_error = || {
            Error::Retired(format!(
                "the envelope is under key version {} and this scope decrypts only from version {min}",
                env.key_version
            ))
        };
        if !held {
            return Err(if retired && env.key_version > 0 {
                retired_error() // its key was destroyed: nothing left to authenticate with
            } else {
                Error::integrity(format!("scope has no key version {}", env.key_version))
            });
        }
        if retired {
            let id = self.load_dek(scope, env.key_version)?;
            env.open(&self.deks[&id], &self.tenant, scope, aad)?;
            return Err(retired_error());
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
            recovery_key: self.header.recovery.is_some(),
            scopes: self
                .body
                .scopes
                .iter()
                .map(|(name, k)| ScopeStatus {
                    name: name.clone(),
                    current_version: k.current,
                    min_decryption_version: k.min_decryption,
                    auto_rotate_after: k.auto_rotate_after,
                    versions: k.deks.iter().map(|(v, e)| VersionStatus { version: *v, encryptions: e.uses }).collect(),
                })
                .collect(),
        }
    }

    /// Re-reads the keyring, so `status` shows other processes' changes.
    pub fn reload(&mut self) -> Result<()> {
        self.refresh()
    }

    // ----- key lifecycle -------------------------------------------------

    /// Sets a new passphrase: a new salt (and optionally a new iteration
    /// count) and a new wrap of the same KEK. No DEK and no data changes.
    pub fn change_passphrase(&mut self, new_passphrase: &[u8], options: InitOptions) -> Result<()> {
        self.set_passphrase(new_passphrase, options, "passwd")
    }

    pub(crate) fn set_passphrase(&mut self, new_passphrase: &[u8], options: InitOptions, event: &str) -> Result<()> {
        if new_passphrase.is_empty() {
            return Err(Error::invalid("the new passphrase is empty"));
        }
        let kdf = options.kdf()?;
        let mk = kdf.derive_master_key(new_passphrase, options.policy())?;
        let tenant = self.tenant;
        self.commit(|t| {
            t.header.kdf = kdf;
            t.header.kek_wrap = mk.wrap_kek(&t.kek, &kek_wrap_aad(&tenant, &kdf, t.header.kek_version))?;
            Ok(())
        })?;
        self.record(event, &format!("iterations={}", kdf.iterations))
    }

    /// Adds a new DEK version to `scope` and makes it current. Returns it.
    pub fn rotate(&mut self, scope: &str) -> Result<u32> {
        validate_scope(scope)?;
        let version = self.commit(|t| {
            if !t.body.scopes.contains_key(scope) {
                return Err(Error::UnknownScope(scope.to_owned()));
            }
            rotate_in(t, scope)
        })?;
        self.reserved.remove(scope);
        let id = self.scope_id(scope)?;
        self.record("rotate", &format!("scope={id} version={version}"))?;
        Ok(version)
    }

    /// Sets the scope's minimum decryption version to `below`: envelopes
    /// under older versions stop decrypting. With `destroy`, the keys of
    /// those versions are deleted for good. The minimum can be lowered
    /// again, but never below a version whose key was destroyed.
    pub fn retire(&mut self, scope: &str, below: u32, destroy: bool) -> Result<Retired> {
        validate_scope(scope)?;
        let outcome = self.commit(|t| {
            let keys = t.body.scopes.get_mut(scope).ok_or_else(|| Error::UnknownScope(scope.to_owned()))?;
            let lowest = *keys.deks.keys().next().expect("a scope holds its current version");
            if below > keys.current {
                return Err(Error::invalid(format!(
                    "cannot retire version {} and above: {} is the current version (rotate first)",
                    keys.current, keys.current
                )));
            }
            if below < lowest {
                return Err(Error::invalid(format!(
                    "cannot lower the minimum to {below}: versions below {lowest} were destroyed"
                )));
            }
            keys.min_decryption = below;
            let destroyed: Vec<u32> =
                if destroy { keys.deks.range(..below).map(|(v, _)| *v).collect() } else { vec![] };
            for v in &destroyed {
                keys.deks.remove(v);
            }
            Ok(Retired { min_decryption_version: below, destroyed })
        })?;
        self.deks.retain(|(s, v), _| s != scope || !outcome.destroyed.contains(v));
        let id = self.scope_id(scope)?;
        self.record("retire", &format!("scope={id} below={below} destroyed={}", outcome.destroyed.len()))?;
        Ok(outcome)
    }

    /// Sets the scope's auto-rotate threshold (0 turns it off).
    pub fn set_auto_rotate(&mut self, scope: &str, after: u64) -> Result<()> {
        validate_scope(scope)?;
        self.commit(|t| {
            let keys = t.body.scopes.get_mut(scope).ok_or_else(|| Error::UnknownScope(scope.to_owned()))?;
            keys.auto_rotate_after = after;
            Ok(())
        })?;
        self.reserved.remove(scope);
        let id = self.scope_id(scope)?;
        self.record("auto-rotate", &format!("scope={id} after={after}"))
    }

    /// Re-encrypts envelopes under the scope's current version; plaintext
    /// never leaves the component. One result per `(envelope, aad)` item.
    pub fn rewrap(&mut self, scope: &str, items: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<Result<Vec<u8>>>> {
        validate_scope(scope)?;
        let mut out = Vec::with_capacity(items.len());
        for (input, aad) in items {
            let one = (|| {
                let bytes = envelope::decode(input)?;
                let env = Envelope::parse(&bytes)?;
                let plaintext = self.open(scope, &env, aad)?;
                self.encrypt(scope, &plaintext, aad)
            })();
            out.push(one);
        }
        let ok = out.iter().filter(|r| r.is_ok()).count();
        let id = self.scope_id(scope)?;
        self.record("rewrap", &format!("scope={id} rewrapped={ok} failed={}", out.len() - ok))?;
        Ok(out)
    }

    /// Replaces the KEK: a new random KEK, every DEK re-wrapped under it,
    /// the passphrase wrap (and the recovery wrap, if any) redone, the old
    /// KEK gone. Needs the passphrase to wrap the new KEK.
    pub fn rotate_kek(&mut self, passphrase: &[u8]) -> Result<u32> {
        let tenant = self.tenant;
        let version = self.commit(|t| {
            let h = &t.header;
            let mk = h.kdf.derive_master_key(passphrase, IterationPolicy::Unlock)?;
            // The passphrase must open the current wrap: proves it is the right one.
            mk.unwrap_kek(&h.kek_wrap, &kek_wrap_aad(&tenant, &h.kdf, h.kek_version))?;
            let old = h.kek_version;
            let new = old.checked_add(1).ok_or_else(|| Error::integrity("KEK version overflowed"))?;
            let kek = KeyEncryptionKey::generate()?;
            for (scope, keys) in &mut t.body.scopes {
                for (v, e) in &mut keys.deks {
                    let dek = t.kek.unwrap_dek(&e.wrapped, &dek_wrap_aad(&tenant, scope, *v, old))?;
                    e.wrapped = kek.wrap_dek(&dek, &dek_wrap_aad(&tenant, scope, *v, new))?;
                }
            }
            t.header.kek_wrap = mk.wrap_kek(&kek, &kek_wrap_aad(&tenant, &t.header.kdf, new))?;
            if let Some(r) = t.header.recovery {
                t.header.recovery = Some(recovery::seal_kek(&r.public, &kek, &tenant, new)?);
            }
            t.header.kek_version = new;
            t.kek = kek;
            Ok(new)
        })?;
        self.record("rotate-kek", &format!("kek-version={version}"))?;
        Ok(version)
    }

    /// Creates (or replaces) the recovery key and returns its display form,
    /// to be shown once. Only its public half is stored.
    pub fn add_recovery_key(&mut self) -> Result<Zeroizing<String>> {
        let key = RecoveryKey::generate()?;
        let public = key.public();
        let tenant = self.tenant;
        let replaced = self.commit(|t| {
            let replaced = t.header.recovery.is_some();
            t.header.recovery = Some(recovery::seal_kek(&public, &t.kek, &tenant, t.header.kek_version)?);
            Ok(replaced)
        })?;
        self.record("recovery-key-add", if replaced { "replaced=1" } else { "replaced=0" })?;
        Ok(key.to_display())
    }

    /// Removes the recovery key's wrap; the recovery key stops working.
    pub fn remove_recovery_key(&mut self) -> Result<()> {
        let had = self.commit(|t| Ok(t.header.recovery.take().is_some()))?;
        if !had {
            return Err(Error::invalid("this tenant has no recovery key"));
        }
        self.record("recovery-key-remove", "")
    }

    /// The verified audit log, with scope ids replaced by the names this
    /// session knows.
    pub fn audit_log(&mut self) -> Result<Vec<Entry>> {
        self.refresh()?;
        let key = self.audit_key()?;
        let mut entries = audit::verify(&self.dir, &self.tenant, key, self.body.audit_seq, &self.body.audit_head)?;
        let names: Vec<(String, &String)> =
            self.body.scopes.keys().map(|name| (format!("scope={}", audit::scope_id(key, name)), name)).collect();
        for e in &mut entries {
            for (id, name) in &names {
                if e.details.contains(id.as_str()) {
                    e.details = e.details.replace(id.as_str(), &format!("scope={name:?}"));
                }
            }
        }
        Ok(entries)
    }

    /// Starts sealing a stream under the scope's current key (one use of it).
    pub fn seal_stream(&mut self, scope: &str, aad: &[u8]) -> Result<Sealer> {
        validate_scope(scope)?;
        let version = self.take_use(scope)?;
        let id = self.load_dek(scope, version)?;
        Sealer::new(&self.deks[&id], version, &self.tenant, scope, aad)
    }

    /// Starts opening a stream of `scope`. The opener gets copies of the
    /// scope's usable keys (held, not retired), as they are now.
    pub fn open_stream(&mut self, scope: &str, aad: &[u8]) -> Result<Opener> {
        validate_scope(scope)?;
        if !self.body.scopes.contains_key(scope) {
            self.refresh()?;
        }
        let keys = self.body.scopes.get(scope).ok_or_else(|| Error::UnknownScope(scope.to_owned()))?;
        let (min, versions): (u32, Vec<u32>) = (keys.min_decryption, keys.deks.keys().copied().collect());
        let mut usable = BTreeMap::new();
        for v in versions.into_iter().filter(|v| *v >= min) {
            let id = self.load_dek(scope, v)?;
            usable.insert(v, Zeroizing::new(*self.deks[&id].expose_secret()));
        }
        let lookup = move |v: u32| match usable.get(&v) {
            Some(k) => Ok(DataEncryptionKey::from_bytes(**k)),
            None if v > 0 && v < min => Err(Error::Retired(format!(
                "the stream is under key version {v} and this scope decrypts only from version {min}"
            ))),
            None => Err(Error::integrity(format!("scope has no key version {v}"))),
        };
        Ok(Opener::new(self.tenant, scope, aad, Box::new(lookup)))
    }

    /// Records that the session is being locked (its keys drop with it).
    pub fn lock(mut self) {
        let _ = self.record("lock", "");
    }

    // ----- internals -----------------------------------------------------

    /// Appends an audit line signed with the tenant's audit key.
    pub(crate) fn record(&mut self, event: &str, details: &str) -> Result<()> {
        let key = self.audit_key()?;
        audit::append(&self.dir, &self.tenant, Some(key), event, details).map(|_| ()).map_err(|e| match e {
            Error::Storage(m) => {
                Error::Storage(format!("{event} took effect, but the audit log could not be written: {m}"))
            }
            other => other,
        })
    }

    fn scope_id(&self, scope: &str) -> Result<String> {
        Ok(audit::scope_id(self.audit_key()?, scope))
    }

    pub(crate) fn dir(&self) -> &TenantDir {
        &self.dir
    }

    /// The tenant's random secret that keyed ids derive from (the audit key).
    pub(crate) fn tenant_secret(&self) -> Result<&keyring::AuditKeyBytes> {
        self.audit_key()
    }

    /// The audit key; absent only if an older backendenc rewrote the keyring
    /// (format 1) after this session opened it.
    fn audit_key(&self) -> Result<&keyring::AuditKeyBytes> {
        self.body.audit_key.as_ref().ok_or_else(|| {
            Error::integrity("the keyring has no audit key: an older backendenc rewrote it; unlock again to upgrade it")
        })
    }

    /// Rewrites a keyring of an older format as the current one (adds the audit key).
    pub(crate) fn upgrade_format(&mut self, format: u16) -> Result<()> {
        if format < keyring::FORMAT_VERSION || self.body.audit_key.is_none() {
            self.commit(|_| Ok(()))?;
        }
        Ok(())
    }

    /// One encryption's worth of the scope's usage reservation; reserves a
    /// new block (one keyring write) when this session's block is used up,
    /// rotating first if the auto-rotate threshold is reached.
    fn take_use(&mut self, scope: &str) -> Result<u32> {
        if let Some((version, left)) = self.reserved.get_mut(scope)
            && *left > 0
        {
            *left -= 1;
            return Ok(*version);
        }
        let (version, rotated, block) = self.commit(|t| {
            let mut rotated = false;
            if !t.body.scopes.contains_key(scope) {
                rotate_in(t, scope)?;
            } else {
                let keys = &t.body.scopes[scope];
                if keys.auto_rotate_after > 0 && keys.deks[&keys.current].uses >= keys.auto_rotate_after {
                    rotate_in(t, scope)?;
                    rotated = true;
                }
            }
            let keys = t.body.scopes.get_mut(scope).expect("created or rotated above");
            let room = match keys.auto_rotate_after {
                0 => USAGE_BLOCK,
                after => USAGE_BLOCK.min(after - keys.deks[&keys.current].uses.min(after)).max(1),
            };
            let entry = keys.deks.get_mut(&keys.current).expect("a scope holds its current version");
            entry.uses = entry.uses.saturating_add(room);
            Ok((keys.current, rotated, room))
        })?;
        self.reserved.insert(scope.to_owned(), (version, block - 1));
        if rotated {
            let id = self.scope_id(scope)?;
            self.record("rotate", &format!("scope={id} version={version} auto=1"))?;
        }
        Ok(version)
    }

    /// Unwraps (once) the DEK of a scope version the body holds; returns its cache id.
    fn load_dek(&mut self, scope: &str, version: u32) -> Result<(String, u32)> {
        let id = (scope.to_owned(), version);
        if !self.deks.contains_key(&id) {
            let wrapped = self.body.scopes[scope].deks[&version].wrapped;
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

    /// Lock, re-read the newest state, apply `change`, anchor the audit log,
    /// bump the generation, replace atomically, unlock.
    fn commit<T>(&mut self, change: impl FnOnce(&mut Txn) -> Result<T>) -> Result<T> {
        let lock = self.dir.lock()?;
        let bytes = self.dir.read_keyring()?.ok_or(Error::NotInitialized)?;
        let (header, body) = self.open_current(&bytes)?;
        let kek = KeyEncryptionKey::from_bytes(*self.kek.expose_secret());
        let mut txn = Txn { header, body, kek };
        let out = change(&mut txn)?;
        if txn.body.audit_key.is_none() {
            txn.body.audit_key = Some(new_audit_key()?);
        }
        (txn.body.audit_seq, txn.body.audit_head) = audit::last_link(&self.dir.path().join(audit::AUDIT_FILE))?;
        txn.header.generation = txn
            .header
            .generation
            .checked_add(1)
            .ok_or_else(|| Error::integrity("keyring generation counter overflowed"))?;
        let new_bytes = keyring::encode(&txn.header, &txn.body, &txn.kek)?;
        self.dir.replace_keyring(&lock, &new_bytes)?;
        lock.release()?;
        self.header = txn.header;
        self.body = txn.body;
        self.kek = txn.kek;
        Ok(out)
    }
}

/// Adds version `max + 1` (or 1 for a new scope) to `scope` and makes it current.
fn rotate_in(t: &mut Txn, scope: &str) -> Result<u32> {
    let dek = DataEncryptionKey::generate()?;
    let next = match t.body.scopes.get(scope) {
        Some(keys) => keys
            .deks
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| Error::integrity("key version overflowed"))?,
        None => 1,
    };
    let wrapped = t.kek.wrap_dek(&dek, &dek_wrap_aad(&t.header.tenant, scope, next, t.header.kek_version))?;
    let keys = t.body.scopes.entry(scope.to_owned()).or_insert_with(|| ScopeKeys {
        current: next,
        min_decryption: next,
        auto_rotate_after: 0,
        deks: BTreeMap::new(),
    });
    keys.deks.insert(next, DekEntry { wrapped, uses: 0 });
    keys.current = next;
    Ok(next)
}
