//! Named records: small values (chat history, profiles, tokens) stored in
//! the tenant's directory, one file each, names never on disk in clear.
//!
//! ```text
//! names-key  = HMAC-SHA256(audit-key, "backendenc/v1/names-key")        (the body's random tenant secret)
//! records/<hex(HMAC-SHA256(names-key, BIND("backendenc/v1/record-id", scope, name)))>
//!            = envelope of the value, caller AAD = BIND("backendenc/v1/record", name)
//! records/<hex(HMAC-SHA256(names-key, BIND("backendenc/v1/record-index", scope)))>.index
//!            = envelope of the scope's sorted names, caller AAD = BIND("backendenc/v1/record-index")
//! index plaintext = u32 count ‖ (u16 len ‖ name)*
//! ```
//! The envelope already binds tenant and scope; the name in the AAD makes a
//! record file copied over another name's fail to decrypt. Writers take
//! `records.lock`, write the record (temp file, fsync, rename), then the
//! index the same way: a crash leaves the old or the new value.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::aad::{RECORD_AAD_LABEL, RECORD_ID_LABEL, RECORD_INDEX_AAD_LABEL, RECORD_INDEX_ID_LABEL, bind};
use crate::error::{Error, Result};
use crate::keyring::{AuditKeyBytes, validate_scope};
use crate::session::Session;

/// Directory of record files inside the tenant directory.
pub const RECORDS_DIR: &str = "records";
/// Lock file of record writers.
pub const RECORDS_LOCK: &str = "records.lock";
/// Longest accepted record name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;
/// Largest record value read back (records are small; files are streams).
pub const MAX_RECORD_LEN: u64 = 64 << 20;

/// Checks a record name: non-empty UTF-8 of at most [`MAX_NAME_LEN`] bytes.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid("record name is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(format!("record name is {} bytes; the limit is {MAX_NAME_LEN}", name.len())));
    }
    Ok(())
}

/// What an index lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Record,
    Asset,
}

impl Kind {
    fn label(self) -> &'static [u8] {
        match self {
            Kind::Record => b"record",
            Kind::Asset => b"asset",
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Kind::Record => RECORDS_DIR,
            Kind::Asset => crate::assets::ASSETS_DIR,
        }
    }
}

pub(crate) fn keyed_id(secret: &AuditKeyBytes, label: &[u8], parts: &[&[u8]]) -> String {
    let mut names_key = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret.0).expect("HMAC takes any key length");
    names_key.update(b"backendenc/v1/names-key");
    let names_key: Zeroizing<[u8; 32]> = Zeroizing::new(names_key.finalize().into_bytes().into());
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(names_key.as_ref()).expect("HMAC takes any key length");
    m.update(&bind(label, parts));
    m.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn record_aad(name: &str) -> Vec<u8> {
    bind(RECORD_AAD_LABEL, &[name.as_bytes()])
}

impl Session {
    fn records_dir(&self) -> PathBuf {
        self.dir().path().join(RECORDS_DIR)
    }

    fn record_path(&self, scope: &str, name: &str) -> Result<PathBuf> {
        Ok(self.records_dir().join(keyed_id(
            self.tenant_secret()?,
            RECORD_ID_LABEL,
            &[scope.as_bytes(), name.as_bytes()],
        )))
    }

    fn index_path(&self, kind: Kind, scope: &str) -> Result<PathBuf> {
        let id = keyed_id(self.tenant_secret()?, RECORD_INDEX_ID_LABEL, &[kind.label(), scope.as_bytes()]);
        Ok(self.dir().path().join(kind.dir()).join(format!("{id}.index")))
    }

    /// Stores `value` under `name` in `scope`, replacing any previous value atomically.
    pub fn put_record(&mut self, scope: &str, name: &str, value: &[u8]) -> Result<()> {
        validate_scope(scope)?;
        validate_name(name)?;
        let envelope = self.encrypt(scope, value, &record_aad(name))?;
        let path = self.record_path(scope, name)?;
        let dir = self.records_dir();
        fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let lock = self.dir().lock_named(RECORDS_LOCK)?;
        write_replace(&path, &envelope)?;
        self.index_add(Kind::Record, scope, name)?;
        lock.release()
    }

    /// The value stored under `name` in `scope`.
    pub fn get_record(&mut self, scope: &str, name: &str) -> Result<Zeroizing<Vec<u8>>> {
        validate_scope(scope)?;
        validate_name(name)?;
        let path = self.record_path(scope, name)?;
        let bytes =
            read_bounded(&path)?.ok_or_else(|| Error::NotFound(format!("no record {name:?} in scope {scope:?}")))?;
        self.decrypt(scope, &bytes, &record_aad(name))
    }

    /// Deletes the record `name` of `scope`.
    pub fn delete_record(&mut self, scope: &str, name: &str) -> Result<()> {
        validate_scope(scope)?;
        validate_name(name)?;
        let path = self.record_path(scope, name)?;
        self.delete_named(Kind::Record, scope, name, &path)
    }

    /// Removes the file of a record or asset and its name from the index, under the lock.
    pub(crate) fn delete_named(&mut self, kind: Kind, scope: &str, name: &str, path: &Path) -> Result<()> {
        let lock = self.dir().lock_named(RECORDS_LOCK)?;
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let what = if kind == Kind::Record { "record" } else { "asset" };
                return Err(Error::NotFound(format!("no {what} {name:?} in scope {scope:?}")));
            }
            Err(e) => return Err(Error::io("remove", path, e)),
        }
        let mut names = self.read_index(kind, scope)?;
        if names.remove(name) {
            self.write_index(kind, scope, &names)?;
        }
        lock.release()
    }

    /// The names of the records of `scope`, sorted.
    pub fn list_records(&mut self, scope: &str) -> Result<Vec<String>> {
        validate_scope(scope)?;
        Ok(self.read_index(Kind::Record, scope)?.into_iter().collect())
    }

    /// Adds `name` to the index of `kind` in `scope`. Requires `records.lock`.
    pub(crate) fn index_add(&mut self, kind: Kind, scope: &str, name: &str) -> Result<()> {
        let mut names = self.read_index(kind, scope)?;
        if names.insert(name.to_owned()) {
            self.write_index(kind, scope, &names)?;
        }
        Ok(())
    }

    pub(crate) fn read_index(&mut self, kind: Kind, scope: &str) -> Result<BTreeSet<String>> {
        let path = self.index_path(kind, scope)?;
        let Some(bytes) = read_bounded(&path)? else { return Ok(BTreeSet::new()) };
        let plain = self.decrypt(scope, &bytes, &bind(RECORD_INDEX_AAD_LABEL, &[kind.label()]))?;
        decode_names(&plain)
    }

    pub(crate) fn write_index(&mut self, kind: Kind, scope: &str, names: &BTreeSet<String>) -> Result<()> {
        let mut plain = Zeroizing::new(Vec::new());
        plain.extend_from_slice(
            &u32::try_from(names.len()).map_err(|_| Error::invalid("too many records"))?.to_be_bytes(),
        );
        for n in names {
            plain.extend_from_slice(&u16::try_from(n.len()).expect("names are at most 1024 bytes").to_be_bytes());
            plain.extend_from_slice(n.as_bytes());
        }
        let envelope = self.encrypt(scope, &plain, &bind(RECORD_INDEX_AAD_LABEL, &[kind.label()]))?;
        write_replace(&self.index_path(kind, scope)?, &envelope)
    }
}

fn decode_names(plain: &[u8]) -> Result<BTreeSet<String>> {
    let bad = || Error::integrity("record index is malformed");
    let count = u32::from_be_bytes(plain.get(..4).ok_or_else(bad)?.try_into().expect("4 bytes"));
    let mut rest = &plain[4..];
    let mut names = BTreeSet::new();
    for _ in 0..count {
        let len = u16::from_be_bytes(rest.get(..2).ok_or_else(bad)?.try_into().expect("2 bytes")) as usize;
        let name = rest.get(2..2 + len).ok_or_else(bad)?;
        names.insert(String::from_utf8(name.to_vec()).map_err(|_| bad())?);
        rest = &rest[2 + len..];
    }
    if !rest.is_empty() {
        return Err(bad());
    }
    Ok(names)
}

pub(crate) fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let mut bytes = Vec::new();
    f.take(MAX_RECORD_LEN + 1).read_to_end(&mut bytes).map_err(|e| Error::io("read", path, e))?;
    if bytes.len() as u64 > MAX_RECORD_LEN {
        return Err(Error::integrity(format!("{} is larger than {MAX_RECORD_LEN} bytes", path.display())));
    }
    Ok(Some(bytes))
}

/// Writes `bytes` to `path` atomically (see [`crate::storage::replace_file`]).
pub(crate) fn write_replace(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::storage::replace_file(path, &path.with_extension("tmp"), bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fault;
    use crate::vault::{InitOptions, Vault};

    fn vault() -> (PathBuf, Vault, Session) {
        let mut r = [0u8; 8];
        crate::keys::fill_random(&mut r).unwrap();
        let dir = std::env::temp_dir().join(format!("bkenc-rec-{}", hex::encode(r)));
        let v = Vault::new(&dir);
        let low = InitOptions { iterations: Some(1), insecure_allow_low_iterations_for_testing: true };
        let s = v.init("u", "c", b"pw", low).unwrap();
        (dir, v, s)
    }

    #[test]
    fn put_get_overwrite_delete_list() {
        let (dir, _v, mut s) = vault();
        assert!(s.list_records("memory").unwrap().is_empty());
        s.put_record("memory", "history", b"one").unwrap();
        s.put_record("memory", "profile", b"{}").unwrap();
        s.put_record("memory", "history", b"two").unwrap();
        assert_eq!(&s.get_record("memory", "history").unwrap()[..], b"two");
        assert_eq!(s.list_records("memory").unwrap(), ["history", "profile"]);
        s.delete_record("memory", "profile").unwrap();
        assert_eq!(s.list_records("memory").unwrap(), ["history"]);
        assert!(matches!(s.get_record("memory", "profile"), Err(Error::NotFound(_))));
        assert!(matches!(s.delete_record("memory", "profile"), Err(Error::NotFound(_))));
        assert!(matches!(s.put_record("memory", "", b"x"), Err(Error::InvalidArgument(_))));
        // Names and scopes never appear on disk.
        for entry in fs::read_dir(s.records_dir()).unwrap() {
            let e = entry.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(name.len() == 64 || name.len() == 70, "{name}");
            let bytes = fs::read(e.path()).unwrap();
            assert!(!bytes.windows(7).any(|w| w == b"history"));
        }
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_record_moved_to_another_name_or_scope_fails() {
        let (dir, _v, mut s) = vault();
        s.put_record("memory", "a", b"secret a").unwrap();
        s.put_record("memory", "b", b"secret b").unwrap();
        s.put_record("notes", "a", b"note a").unwrap();
        let (a, b, na) = (
            s.record_path("memory", "a").unwrap(),
            s.record_path("memory", "b").unwrap(),
            s.record_path("notes", "a").unwrap(),
        );
        fs::copy(&a, &b).unwrap();
        assert!(matches!(s.get_record("memory", "b"), Err(Error::Integrity(_))), "moved to another name");
        fs::copy(&a, &na).unwrap();
        assert!(matches!(s.get_record("notes", "a"), Err(Error::Integrity(_))), "moved to another scope");
        assert_eq!(&s.get_record("memory", "a").unwrap()[..], b"secret a");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn an_overwrite_survives_a_crash_at_every_step() {
        for n in 0.. {
            let (dir, v, mut s) = vault();
            s.put_record("memory", "history", b"old value").unwrap();
            fault::arm(n);
            let r = s.put_record("memory", "history", b"new value");
            let crashed = fault::disarm();
            drop(s);
            for lock in ["keyring.lock", "audit.lock", RECORDS_LOCK] {
                let _ = fs::remove_file(
                    dir.join(crate::tenant::TenantKey::derive("u", "c").unwrap().relative_dir()).join(lock),
                );
            }
            let mut s = v.unlock("u", "c", b"pw").unwrap();
            let got = s.get_record("memory", "history").unwrap();
            let listed = s.list_records("memory").unwrap();
            let _ = fs::remove_dir_all(&dir);
            assert_eq!(listed, ["history"], "crash at step {n}");
            if !crashed {
                r.unwrap();
                assert_eq!(&got[..], b"new value");
                assert!(n >= 5, "the injection reached only {n} steps");
                break;
            }
            assert!(&got[..] == b"old value" || &got[..] == b"new value", "crash at step {n}: {got:?}");
        }
    }
}
