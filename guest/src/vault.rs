//! Enrolment, unlock and recovery: how a session comes to exist. The
//! operations on an unlocked tenant are in [`crate::session`].

use std::path::PathBuf;

use crate::audit;
use crate::error::{Error, Result};
use crate::kdf::{DEFAULT_ITERATIONS, IterationPolicy, KdfParams};
use crate::keyring::{self, AuditKeyBytes, Body, Header, SealedKeyring, kek_wrap_aad};
use crate::keys::{KeyEncryptionKey, fill_random};
use crate::recovery::RecoveryKey;
use crate::session::Session;
use crate::storage::TenantDir;
use crate::tenant::TenantKey;

/// Options for enrolling a tenant, or for setting a new passphrase.
#[derive(Clone, Copy, Debug, Default)]
pub struct InitOptions {
    /// PBKDF2 iterations; `None` means [`DEFAULT_ITERATIONS`].
    pub iterations: Option<u32>,
    /// Accept fewer than 100,000 iterations. Tests only.
    pub insecure_allow_low_iterations_for_testing: bool,
}

impl InitOptions {
    pub(crate) fn policy(&self) -> IterationPolicy {
        if self.insecure_allow_low_iterations_for_testing {
            IterationPolicy::InsecureAllowLowForTesting
        } else {
            IterationPolicy::Enrol
        }
    }

    /// Fresh KDF parameters (new salt) for these options.
    pub(crate) fn kdf(&self) -> Result<KdfParams> {
        KdfParams::generate(self.iterations.unwrap_or(DEFAULT_ITERATIONS), self.policy())
    }
}

/// A vault rooted at a directory (inside the component: `/vault`).
#[derive(Clone, Debug)]
pub struct Vault {
    root: PathBuf,
}

/// A new random audit key.
pub(crate) fn new_audit_key() -> Result<AuditKeyBytes> {
    let mut k = AuditKeyBytes([0; 32]);
    fill_random(&mut k.0)?;
    Ok(k)
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
        let kdf = options.kdf()?;
        let dir = self.tenant_dir(&tenant);
        // Fail fast before the expensive KDF; checked again under the lock.
        if dir.read_keyring()?.is_some() {
            return Err(Error::AlreadyInitialized);
        }
        let mk = kdf.derive_master_key(passphrase, options.policy())?;
        let kek = KeyEncryptionKey::generate()?;
        let kek_version = 1;
        let kek_wrap = mk.wrap_kek(&kek, &kek_wrap_aad(&tenant, &kdf, kek_version))?;
        let header = Header { tenant, kdf, kek_version, generation: 1, kek_wrap, recovery: None };
        let body = Body { audit_key: Some(new_audit_key()?), ..Body::default() };
        let bytes = keyring::encode(&header, &body, &kek)?;
        dir.create()?;
        let lock = dir.lock()?;
        if dir.read_keyring()?.is_some() {
            return Err(Error::AlreadyInitialized);
        }
        dir.replace_keyring(&lock, &bytes)?;
        lock.release()?;
        let mut session = Session::new(dir, tenant, kek, header, body);
        session.record("init", &format!("kdf=pbkdf2-hmac-sha256 iterations={}", kdf.iterations))?;
        Ok(session)
    }

    /// Opens (user, channel) with its passphrase. A failed attempt is
    /// recorded in the tenant's audit log (without a MAC: no key is known).
    pub fn unlock(&self, user: &str, channel: &str, passphrase: &[u8]) -> Result<Session> {
        let (tenant, dir, sealed) = self.read_keyring(user, channel)?;
        let h = &sealed.header;
        let mk = h.kdf.derive_master_key(passphrase, IterationPolicy::Unlock)?;
        let kek = mk.unwrap_kek(&h.kek_wrap, &kek_wrap_aad(&tenant, &h.kdf, h.kek_version)).inspect_err(|_| {
            // Best effort: the failure is reported whether or not it could be logged.
            let _ = audit::append(&dir, &tenant, None, "unlock-failed", "");
        })?;
        let mut session = open_session(dir, tenant, kek, sealed)?;
        session.record("unlock", "")?;
        Ok(session)
    }

    /// The tenant's key, directory and parsed (still sealed) keyring.
    fn read_keyring(&self, user: &str, channel: &str) -> Result<(TenantKey, TenantDir, SealedKeyring)> {
        let tenant = TenantKey::derive(user, channel)?;
        let dir = self.tenant_dir(&tenant);
        let bytes = dir.read_keyring()?.ok_or(Error::NotInitialized)?;
        let sealed = SealedKeyring::decode(&bytes, &tenant)?;
        Ok((tenant, dir, sealed))
    }

    /// Sets a new passphrase with the recovery key, then opens the tenant.
    /// Only the KEK's passphrase wrap changes; no data key and no data.
    pub fn recover(
        &self,
        user: &str,
        channel: &str,
        recovery_key: &str,
        new_passphrase: &[u8],
        options: InitOptions,
    ) -> Result<Session> {
        TenantKey::derive(user, channel)?; // bad ids are reported first, as by every entry point
        if new_passphrase.is_empty() {
            return Err(Error::invalid("the new passphrase is empty"));
        }
        let key = RecoveryKey::parse(recovery_key)?;
        let (tenant, dir, sealed) = self.read_keyring(user, channel)?;
        let wrap = sealed.header.recovery.ok_or(Error::BadRecoveryKey)?;
        let kek = key.open_kek(&wrap, &tenant, sealed.header.kek_version).inspect_err(|_| {
            let _ = audit::append(&dir, &tenant, None, "recover-failed", "");
        })?;
        let mut session = open_session(dir, tenant, kek, sealed)?;
        session.set_passphrase(new_passphrase, options, "recover")?;
        Ok(session)
    }
}

/// Opens the keyring's body with the KEK it yielded and makes the session,
/// rewriting an older keyring format as the current one.
fn open_session(dir: TenantDir, tenant: TenantKey, kek: KeyEncryptionKey, sealed: SealedKeyring) -> Result<Session> {
    let body = sealed.open(&kek)?;
    let mut session = Session::new(dir, tenant, kek, sealed.header.clone(), body);
    session.upgrade_format(sealed.format)?;
    Ok(session)
}
