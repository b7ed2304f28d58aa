//! The WIT glue: translates between the `backendenc:vault` interface and the
//! plain-Rust [`crate::vault`]. No logic lives here.

use std::cell::RefCell;

use zeroize::Zeroizing;

use crate::error::Error;
use crate::session::{Session, TenantStatus};
use crate::vault::{InitOptions, Vault};
use crate::{GUEST_VAULT_ROOT, envelope, tenant::TenantKey};

wit_bindgen::generate!({ world: "backendenc", path: "../wit" });

use exports::backendenc::vault::vault as wit;

struct Component;

/// A stream resource: `None` once finished.
struct SealerResource(RefCell<Option<crate::stream::Sealer>>);
struct OpenerResource(RefCell<Option<crate::stream::Opener>>);

fn finished() -> wit::Error {
    wit::Error::InvalidArgument("the stream was already finished".into())
}

/// Asset resources: `None` once committed or failed.
struct AssetWriterResource(RefCell<Option<crate::assets::AssetWriter>>);
struct AssetReaderResource(RefCell<Option<crate::assets::AssetReader>>);

impl wit::GuestAssetWriter for AssetWriterResource {
    fn push(&self, chunk: Vec<u8>) -> Result<(), wit::Error> {
        let chunk = Zeroizing::new(chunk);
        self.0.borrow_mut().as_mut().ok_or_else(finished)?.push(&chunk).map_err(to_wit)
    }
}

impl wit::GuestAssetReader for AssetReaderResource {
    fn read(&self, max: u32) -> Result<Vec<u8>, wit::Error> {
        let mut slot = self.0.borrow_mut();
        let result = slot.as_mut().ok_or_else(finished)?.read(max as usize).map(|p| p.to_vec());
        if result.is_err() {
            *slot = None;
        }
        result.map_err(to_wit)
    }
}

impl wit::GuestSealer for SealerResource {
    fn push(&self, chunk: Vec<u8>) -> Result<Vec<u8>, wit::Error> {
        let chunk = Zeroizing::new(chunk);
        self.0.borrow_mut().as_mut().ok_or_else(finished)?.push(&chunk).map_err(to_wit)
    }

    fn finish(&self) -> Result<Vec<u8>, wit::Error> {
        self.0.borrow_mut().take().ok_or_else(finished)?.finish().map_err(to_wit)
    }
}

impl wit::GuestOpener for OpenerResource {
    fn push(&self, chunk: Vec<u8>) -> Result<Vec<u8>, wit::Error> {
        let mut slot = self.0.borrow_mut();
        let result = slot.as_mut().ok_or_else(finished)?.push(&chunk).map(|p| p.to_vec());
        if result.is_err() {
            // A stream that failed authentication is dead: nothing more comes out of it.
            *slot = None;
        }
        result.map_err(to_wit)
    }

    fn finish(&self) -> Result<Vec<u8>, wit::Error> {
        self.0.borrow_mut().take().ok_or_else(finished)?.finish().map(|p| p.to_vec()).map_err(to_wit)
    }
}

/// The session resource: `None` once locked (the keys are dropped, which
/// zeroizes them).
struct SessionResource(RefCell<Option<Session>>);

fn vault() -> Vault {
    Vault::new(GUEST_VAULT_ROOT)
}

impl wit::Guest for Component {
    type Session = SessionResource;
    type Sealer = SealerResource;
    type Opener = OpenerResource;
    type AssetWriter = AssetWriterResource;
    type AssetReader = AssetReaderResource;

    fn init(
        user: String,
        channel: String,
        passphrase: Vec<u8>,
        options: wit::InitOptions,
    ) -> Result<wit::Session, wit::Error> {
        let passphrase = Zeroizing::new(passphrase);
        let session = vault().init(&user, &channel, &passphrase, options_from_wit(options)).map_err(to_wit)?;
        Ok(wit::Session::new(SessionResource(RefCell::new(Some(session)))))
    }

    fn recover(
        user: String,
        channel: String,
        recovery_key: String,
        new_passphrase: Vec<u8>,
        options: wit::InitOptions,
    ) -> Result<wit::Session, wit::Error> {
        let recovery_key = Zeroizing::new(recovery_key);
        let new_passphrase = Zeroizing::new(new_passphrase);
        let session = vault()
            .recover(&user, &channel, &recovery_key, &new_passphrase, options_from_wit(options))
            .map_err(to_wit)?;
        Ok(wit::Session::new(SessionResource(RefCell::new(Some(session)))))
    }

    fn unlock(user: String, channel: String, passphrase: Vec<u8>) -> Result<wit::Session, wit::Error> {
        let passphrase = Zeroizing::new(passphrase);
        let session = vault().unlock(&user, &channel, &passphrase).map_err(to_wit)?;
        Ok(wit::Session::new(SessionResource(RefCell::new(Some(session)))))
    }

    fn tenant_key(user: String, channel: String) -> Result<String, wit::Error> {
        TenantKey::derive(&user, &channel).map(|t| t.to_hex()).map_err(to_wit)
    }

    fn armor(envelope: Vec<u8>) -> Result<String, wit::Error> {
        envelope::armor(&envelope).map_err(to_wit)
    }
}

impl SessionResource {
    fn with<T>(&self, f: impl FnOnce(&mut Session) -> crate::Result<T>) -> Result<T, wit::Error> {
        let mut slot = self.0.borrow_mut();
        let session = slot.as_mut().ok_or(wit::Error::Locked)?;
        f(session).map_err(|e| {
            if e == Error::Locked {
                // The keyring was re-keyed elsewhere: drop the stale keys now.
                *slot = None;
            }
            to_wit(e)
        })
    }
}

impl wit::GuestSession for SessionResource {
    fn encrypt(&self, scope: String, plaintext: Vec<u8>, aad: Vec<u8>) -> Result<Vec<u8>, wit::Error> {
        let plaintext = Zeroizing::new(plaintext);
        self.with(|s| s.encrypt(&scope, &plaintext, &aad))
    }

    fn decrypt(&self, scope: String, envelope: Vec<u8>, aad: Vec<u8>) -> Result<Vec<u8>, wit::Error> {
        // The plaintext leaves as a plain Vec: the canonical ABI copies it out
        // and frees it; it is the caller's data from here on.
        self.with(|s| s.decrypt(&scope, &envelope, &aad).map(|p| p.to_vec()))
    }

    fn status(&self) -> Result<wit::TenantStatus, wit::Error> {
        self.with(|s| {
            s.reload()?;
            Ok(status_to_wit(s.status()))
        })
    }

    fn lock(&self) {
        if let Some(session) = self.0.borrow_mut().take() {
            session.lock();
        }
    }

    fn change_passphrase(&self, new_passphrase: Vec<u8>, options: wit::InitOptions) -> Result<(), wit::Error> {
        let new_passphrase = Zeroizing::new(new_passphrase);
        self.with(|s| s.change_passphrase(&new_passphrase, options_from_wit(options)))
    }

    fn rotate(&self, scope: String) -> Result<u32, wit::Error> {
        self.with(|s| s.rotate(&scope))
    }

    fn retire(&self, scope: String, below: u32, destroy: bool) -> Result<wit::RetireOutcome, wit::Error> {
        self.with(|s| s.retire(&scope, below, destroy))
            .map(|r| wit::RetireOutcome { min_decryption_version: r.min_decryption_version, destroyed: r.destroyed })
    }

    fn set_auto_rotate(&self, scope: String, after: u64) -> Result<(), wit::Error> {
        self.with(|s| s.set_auto_rotate(&scope, after))
    }

    fn rewrap(
        &self,
        scope: String,
        items: Vec<wit::RewrapItem>,
    ) -> Result<Vec<Result<Vec<u8>, wit::Error>>, wit::Error> {
        let items: Vec<(Vec<u8>, Vec<u8>)> = items.into_iter().map(|i| (i.envelope, i.aad)).collect();
        self.with(|s| s.rewrap(&scope, &items)).map(|rs| rs.into_iter().map(|r| r.map_err(to_wit)).collect())
    }

    fn rotate_kek(&self, passphrase: Vec<u8>) -> Result<u32, wit::Error> {
        let passphrase = Zeroizing::new(passphrase);
        self.with(|s| s.rotate_kek(&passphrase))
    }

    fn add_recovery_key(&self) -> Result<String, wit::Error> {
        // The display form leaves as a plain String: it is the caller's to show once.
        self.with(|s| s.add_recovery_key().map(|k| k.to_string()))
    }

    fn remove_recovery_key(&self) -> Result<(), wit::Error> {
        self.with(|s| s.remove_recovery_key())
    }

    fn put_record(&self, scope: String, name: String, value: Vec<u8>) -> Result<(), wit::Error> {
        let value = Zeroizing::new(value);
        self.with(|s| s.put_record(&scope, &name, &value))
    }

    fn get_record(&self, scope: String, name: String) -> Result<Vec<u8>, wit::Error> {
        self.with(|s| s.get_record(&scope, &name).map(|v| v.to_vec()))
    }

    fn delete_record(&self, scope: String, name: String) -> Result<(), wit::Error> {
        self.with(|s| s.delete_record(&scope, &name))
    }

    fn list_records(&self, scope: String) -> Result<Vec<String>, wit::Error> {
        self.with(|s| s.list_records(&scope))
    }

    fn begin_asset(&self, scope: String, name: String) -> Result<wit::AssetWriter, wit::Error> {
        let w = self.with(|s| s.begin_asset(&scope, &name))?;
        Ok(wit::AssetWriter::new(AssetWriterResource(RefCell::new(Some(w)))))
    }

    fn commit_asset(&self, writer: wit::AssetWriter) -> Result<u64, wit::Error> {
        let w = writer.into_inner::<AssetWriterResource>().0.into_inner().ok_or_else(finished)?;
        self.with(|s| s.commit_asset(w))
    }

    fn open_asset(&self, scope: String, name: String) -> Result<wit::AssetReader, wit::Error> {
        let r = self.with(|s| s.open_asset(&scope, &name))?;
        Ok(wit::AssetReader::new(AssetReaderResource(RefCell::new(Some(r)))))
    }

    fn delete_asset(&self, scope: String, name: String) -> Result<(), wit::Error> {
        self.with(|s| s.delete_asset(&scope, &name))
    }

    fn list_assets(&self, scope: String) -> Result<Vec<String>, wit::Error> {
        self.with(|s| s.list_assets(&scope))
    }

    fn seal_stream(&self, scope: String, aad: Vec<u8>) -> Result<wit::Sealer, wit::Error> {
        let sealer = self.with(|s| s.seal_stream(&scope, &aad))?;
        Ok(wit::Sealer::new(SealerResource(RefCell::new(Some(sealer)))))
    }

    fn open_stream(&self, scope: String, aad: Vec<u8>) -> Result<wit::Opener, wit::Error> {
        let opener = self.with(|s| s.open_stream(&scope, &aad))?;
        Ok(wit::Opener::new(OpenerResource(RefCell::new(Some(opener)))))
    }

    fn audit_log(&self) -> Result<Vec<wit::AuditEntry>, wit::Error> {
        self.with(|s| s.audit_log()).map(|entries| {
            entries
                .into_iter()
                .map(|e| wit::AuditEntry {
                    seq: e.seq,
                    time: e.time,
                    event: e.event,
                    details: e.details,
                    authenticated: e.authenticated,
                })
                .collect()
        })
    }
}

fn options_from_wit(options: wit::InitOptions) -> InitOptions {
    InitOptions {
        iterations: options.iterations,
        insecure_allow_low_iterations_for_testing: options.insecure_allow_low_iterations_for_testing,
    }
}

fn status_to_wit(s: TenantStatus) -> wit::TenantStatus {
    wit::TenantStatus {
        tenant_key: s.tenant_key,
        format_version: s.format_version,
        kdf: s.kdf.to_owned(),
        iterations: s.iterations,
        generation: s.generation,
        kek_version: s.kek_version,
        recovery_key: s.recovery_key,
        scopes: s
            .scopes
            .into_iter()
            .map(|sc| wit::ScopeInfo {
                name: sc.name,
                current_version: sc.current_version,
                min_decryption_version: sc.min_decryption_version,
                auto_rotate_after: sc.auto_rotate_after,
                versions: sc
                    .versions
                    .into_iter()
                    .map(|v| wit::VersionInfo { version: v.version, encryptions: v.encryptions })
                    .collect(),
            })
            .collect(),
    }
}

fn to_wit(e: Error) -> wit::Error {
    match e {
        Error::NotInitialized => wit::Error::NotInitialized,
        Error::AlreadyInitialized => wit::Error::AlreadyInitialized,
        Error::BadPassphrase => wit::Error::BadPassphrase,
        Error::Integrity(m) => wit::Error::Integrity(m),
        Error::UnknownScope(s) => wit::Error::UnknownScope(s),
        Error::Busy(m) => wit::Error::Busy(m),
        Error::Storage(m) => wit::Error::Storage(m),
        Error::InvalidArgument(m) => wit::Error::InvalidArgument(m),
        Error::Locked => wit::Error::Locked,
        Error::BadRecoveryKey => wit::Error::BadRecoveryKey,
        Error::Retired(m) => wit::Error::KeyRetired(m),
        Error::NotFound(m) => wit::Error::NotFound(m),
    }
}

export!(Component);
