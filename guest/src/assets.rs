//! Stored assets: files of any size kept in the tenant's directory as
//! streams (see [`crate::stream`]), written and read in constant memory.
//!
//! ```text
//! assets/<hex(HMAC-SHA256(names-key, BIND("backendenc/v1/asset-id", scope, name)))>
//!        = stream sealed under the scope's key, caller AAD = BIND("backendenc/v1/asset", name)
//! assets/<index id>.index = the scope's asset names, as for records
//! ```
//! A writer seals into a temporary file; committing it fsyncs, renames it
//! over the asset and adds the name to the index under `records.lock`, so
//! a crash leaves the old or the new file.

use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::aad::{ASSET_AAD_LABEL, ASSET_ID_LABEL, bind};
use crate::error::{Error, Result};
use crate::keyring::validate_scope;
use crate::records::{Kind, RECORDS_LOCK, keyed_id, validate_name};
use crate::session::Session;
use crate::stream::{Opener, Sealer};

/// Directory of asset files inside the tenant directory.
pub const ASSETS_DIR: &str = "assets";
/// Bytes read from an asset file per step.
const READ_CHUNK: usize = 64 * 1024;

/// An asset being written; nothing is visible until [`Session::commit_asset`].
pub struct AssetWriter {
    sealer: Option<Sealer>,
    file: File,
    tmp: PathBuf,
    dst: PathBuf,
    scope: String,
    name: String,
    size: u64,
}

impl AssetWriter {
    /// Seals `chunk` into the temporary file.
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        let out = self.sealer.as_mut().ok_or_else(|| Error::invalid("the asset was already committed"))?.push(chunk)?;
        self.file.write_all(&out).map_err(|e| Error::io("write", &self.tmp, e))?;
        self.size += chunk.len() as u64;
        Ok(())
    }
}

impl Drop for AssetWriter {
    fn drop(&mut self) {
        // An abandoned (or failed) writer leaves nothing behind.
        let _ = fs::remove_file(&self.tmp);
    }
}

/// An asset being read; each segment authenticates before its bytes are
/// returned, and the end is reported only once the final segment has.
pub struct AssetReader {
    opener: Option<Opener>,
    file: File,
    pending: Zeroizing<Vec<u8>>,
    at: usize,
}

impl AssetReader {
    /// Up to `max` bytes of plaintext; an empty result means the end, reached
    /// and authenticated.
    pub fn read(&mut self, max: usize) -> Result<Zeroizing<Vec<u8>>> {
        while self.at == self.pending.len() {
            let Some(opener) = self.opener.as_mut() else { return Ok(Zeroizing::new(Vec::new())) };
            let mut buf = vec![0u8; READ_CHUNK];
            let n = self.file.read(&mut buf).map_err(|e| Error::Storage(format!("cannot read the asset: {e}")))?;
            self.pending =
                if n == 0 { self.opener.take().expect("checked above").finish()? } else { opener.push(&buf[..n])? };
            self.at = 0;
        }
        let end = (self.at + max.max(1)).min(self.pending.len());
        let out = Zeroizing::new(self.pending[self.at..end].to_vec());
        self.at = end;
        Ok(out)
    }
}

impl Session {
    fn asset_path(&self, scope: &str, name: &str) -> Result<PathBuf> {
        let id = keyed_id(self.tenant_secret()?, ASSET_ID_LABEL, &[scope.as_bytes(), name.as_bytes()]);
        Ok(self.dir().path().join(ASSETS_DIR).join(id))
    }

    /// Starts writing the asset `name` of `scope`.
    pub fn begin_asset(&mut self, scope: &str, name: &str) -> Result<AssetWriter> {
        validate_scope(scope)?;
        validate_name(name)?;
        let sealer = self.seal_stream(scope, &bind(ASSET_AAD_LABEL, &[name.as_bytes()]))?;
        let dst = self.asset_path(scope, name)?;
        let dir = self.dir().path().join(ASSETS_DIR);
        fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let mut r = [0u8; 8];
        crate::keys::fill_random(&mut r)?;
        let suffix: String = r.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = dst.with_extension(format!("{suffix}.tmp"));
        let file = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        Ok(AssetWriter {
            sealer: Some(sealer),
            file,
            tmp,
            dst,
            scope: scope.to_owned(),
            name: name.to_owned(),
            size: 0,
        })
    }

    /// Finishes the asset and makes it visible, replacing any previous one.
    /// Returns its size in bytes.
    pub fn commit_asset(&mut self, mut w: AssetWriter) -> Result<u64> {
        let sealer = w.sealer.take().ok_or_else(|| Error::invalid("the asset was already committed"))?;
        let last = sealer.finish()?;
        w.file.write_all(&last).and_then(|()| w.file.sync_all()).map_err(|e| Error::io("write", &w.tmp, e))?;
        let lock = self.dir().lock_named(RECORDS_LOCK)?;
        fs::rename(&w.tmp, &w.dst).map_err(|e| Error::io("rename into place", &w.dst, e))?;
        self.index_add(Kind::Asset, &w.scope, &w.name)?;
        lock.release()?;
        Ok(w.size)
    }

    /// Opens the asset `name` of `scope` for reading.
    pub fn open_asset(&mut self, scope: &str, name: &str) -> Result<AssetReader> {
        validate_scope(scope)?;
        validate_name(name)?;
        let path = self.asset_path(scope, name)?;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("no asset {name:?} in scope {scope:?}")));
            }
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let opener = self.open_stream(scope, &bind(ASSET_AAD_LABEL, &[name.as_bytes()]))?;
        Ok(AssetReader { opener: Some(opener), file, pending: Zeroizing::new(Vec::new()), at: 0 })
    }

    /// Deletes the asset `name` of `scope`.
    pub fn delete_asset(&mut self, scope: &str, name: &str) -> Result<()> {
        validate_scope(scope)?;
        validate_name(name)?;
        let path = self.asset_path(scope, name)?;
        self.delete_named(Kind::Asset, scope, name, &path)
    }

    /// The names of the assets of `scope`, sorted.
    pub fn list_assets(&mut self, scope: &str) -> Result<Vec<String>> {
        validate_scope(scope)?;
        Ok(self.read_index(Kind::Asset, scope)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::{InitOptions, Vault};

    fn session() -> (PathBuf, Session) {
        let mut r = [0u8; 8];
        crate::keys::fill_random(&mut r).unwrap();
        let dir = std::env::temp_dir().join(format!("bkenc-asset-{}", hex::encode(r)));
        let low = InitOptions { iterations: Some(1), insecure_allow_low_iterations_for_testing: true };
        let s = Vault::new(&dir).init("u", "c", b"pw", low).unwrap();
        (dir, s)
    }

    fn put(s: &mut Session, scope: &str, name: &str, data: &[u8]) -> u64 {
        let mut w = s.begin_asset(scope, name).unwrap();
        for c in data.chunks(100_000) {
            w.push(c).unwrap();
        }
        s.commit_asset(w).unwrap()
    }

    fn get(s: &mut Session, scope: &str, name: &str) -> Result<Vec<u8>> {
        let mut r = s.open_asset(scope, name)?;
        let mut out = Vec::new();
        loop {
            let chunk = r.read(70_000)?;
            if chunk.is_empty() {
                return Ok(out);
            }
            out.extend_from_slice(&chunk);
        }
    }

    #[test]
    fn put_get_replace_delete_list() {
        let (dir, mut s) = session();
        for n in [0usize, 1, 65_536, 65_537, 300_001] {
            let data: Vec<u8> = (0..n).map(|i| (i % 253) as u8).collect();
            assert_eq!(put(&mut s, "assets", "avatar.png", &data), n as u64);
            assert_eq!(get(&mut s, "assets", "avatar.png").unwrap(), data, "size {n}");
        }
        put(&mut s, "assets", "contract.pdf", b"pdf");
        assert_eq!(s.list_assets("assets").unwrap(), ["avatar.png", "contract.pdf"]);
        s.delete_asset("assets", "avatar.png").unwrap();
        assert_eq!(s.list_assets("assets").unwrap(), ["contract.pdf"]);
        assert!(matches!(get(&mut s, "assets", "avatar.png"), Err(Error::NotFound(_))));
        assert!(s.list_records("assets").unwrap().is_empty(), "assets and records are listed apart");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn an_abandoned_writer_leaves_the_old_asset_and_no_temp_file() {
        let (dir, mut s) = session();
        put(&mut s, "assets", "a", b"old");
        let mut w = s.begin_asset("assets", "a").unwrap();
        w.push(b"half of the new").unwrap();
        drop(w);
        assert_eq!(get(&mut s, "assets", "a").unwrap(), b"old");
        let names: Vec<_> =
            fs::read_dir(dir.join(crate::tenant::TenantKey::derive("u", "c").unwrap().relative_dir()).join(ASSETS_DIR))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn tampered_truncated_or_moved_assets_fail() {
        let (dir, mut s) = session();
        let data = vec![7u8; 200_000];
        put(&mut s, "assets", "a", &data);
        put(&mut s, "assets", "b", b"b");
        let (a, b) = (s.asset_path("assets", "a").unwrap(), s.asset_path("assets", "b").unwrap());
        let good = fs::read(&a).unwrap();
        fs::write(&a, &good[..good.len() - 1]).unwrap();
        assert!(matches!(get(&mut s, "assets", "a"), Err(Error::Integrity(_))));
        let mut flipped = good.clone();
        flipped[100_000] ^= 1;
        fs::write(&a, &flipped).unwrap();
        assert!(matches!(get(&mut s, "assets", "a"), Err(Error::Integrity(_))));
        fs::write(&a, &good).unwrap();
        fs::copy(&a, &b).unwrap();
        assert!(matches!(get(&mut s, "assets", "b"), Err(Error::Integrity(_))), "moved to another name");
        assert_eq!(get(&mut s, "assets", "a").unwrap(), data);
        let _ = fs::remove_dir_all(dir);
    }
}
