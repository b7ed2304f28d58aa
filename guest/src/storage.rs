//! The tenant directory on disk: reading the keyring, the writer lock, and
//! atomic replacement (write temp, fsync, rename over, fsync directory).
//!
//! Writers first create `keyring.lock` with exclusive create (git's
//! `index.lock` protocol). A lock left by a crashed writer is never broken
//! silently: the error names the file so an operator can remove it.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::keyring::MAX_FILE_LEN;

/// Fault injection for the crash-safety tests: every write step calls
/// [`fault::point`]; a test arms a countdown, the step it reaches fails, and
/// from then on every step fails and no cleanup runs, as if the process had
/// been killed there. Compiled to nothing outside tests.
pub(crate) mod fault {
    #[cfg(test)]
    thread_local! {
        static COUNTDOWN: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
        static DEAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Fails the `n`th write step from now (0 = the next one).
    #[cfg(test)]
    pub fn arm(n: u32) {
        COUNTDOWN.set(Some(n));
        DEAD.set(false);
    }

    /// Stops injecting; returns whether a fault fired since `arm`.
    #[cfg(test)]
    pub fn disarm() -> bool {
        COUNTDOWN.set(None);
        DEAD.replace(false)
    }

    /// A write step.
    #[inline]
    pub fn point() -> std::io::Result<()> {
        #[cfg(test)]
        {
            if DEAD.get() {
                return Err(std::io::Error::other("injected crash"));
            }
            match COUNTDOWN.get() {
                Some(0) => {
                    DEAD.set(true);
                    return Err(std::io::Error::other("injected crash"));
                }
                Some(n) => COUNTDOWN.set(Some(n - 1)),
                None => {}
            }
        }
        Ok(())
    }

    /// Whether the simulated process is dead (cleanup must not run).
    #[inline]
    pub fn dead() -> bool {
        #[cfg(test)]
        {
            DEAD.get()
        }
        #[cfg(not(test))]
        {
            false
        }
    }
}

/// File name of the keyring inside the tenant directory.
pub const KEYRING_FILE: &str = "keyring";
/// File name of the writer lock.
pub const LOCK_FILE: &str = "keyring.lock";
/// Temporary file a new keyring is written to before the rename.
pub const TEMP_FILE: &str = "keyring.tmp";
/// How many times (10 ms apart) a writer retries a held lock before `Busy`.
const LOCK_RETRIES: u32 = 200;

/// One tenant's directory.
#[derive(Clone, Debug)]
pub struct TenantDir {
    dir: PathBuf,
}

impl TenantDir {
    /// The directory at `dir` (which need not exist yet).
    pub fn new(dir: PathBuf) -> Self {
        TenantDir { dir }
    }

    /// The directory path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory (and parents) if missing.
    pub fn create(&self) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| Error::io("create directory", &self.dir, e))
    }

    /// Reads the keyring file; `None` if there is none.
    pub fn read_keyring(&self) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join(KEYRING_FILE);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_FILE_LEN + 1).read_to_end(&mut bytes).map_err(|e| Error::io("read", &path, e))?;
        if bytes.len() as u64 > MAX_FILE_LEN {
            return Err(Error::integrity(format!("{} is larger than {MAX_FILE_LEN} bytes", path.display())));
        }
        Ok(Some(bytes))
    }

    /// Takes the keyring's writer lock, or fails with `Busy` naming the lock file.
    pub fn lock(&self) -> Result<WriterLock> {
        self.lock_named(LOCK_FILE)
    }

    /// Takes the lock file `name`. Another holder is waited for briefly
    /// (writes are short); a lock that stays is reported, never broken.
    pub fn lock_named(&self, name: &str) -> Result<WriterLock> {
        let path = self.dir.join(name);
        for attempt in 0..=LOCK_RETRIES {
            fault::point().map_err(|e| Error::io("create lock file", &path, e))?;
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => return Ok(WriterLock { path }),
                Err(e) if e.kind() == ErrorKind::AlreadyExists && attempt < LOCK_RETRIES => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => break,
                Err(e) => return Err(Error::io("create lock file", &path, e)),
            }
        }
        Err(Error::Busy(format!(
            "{} exists: another writer is active, or one crashed; remove the file if no backendenc process is running",
            path.display()
        )))
    }

    /// Atomically replaces the keyring with `bytes`. Requires the lock.
    pub fn replace_keyring(&self, _lock: &WriterLock, bytes: &[u8]) -> Result<()> {
        replace_file(&self.dir.join(KEYRING_FILE), &self.dir.join(TEMP_FILE), bytes)
    }
}

/// Replaces `dst` with `bytes` atomically: write `tmp`, fsync it, rename it
/// over `dst`, fsync the directory. On failure `dst` is unchanged and `tmp`
/// is removed. The caller holds whatever lock guards `dst`.
pub fn replace_file(dst: &Path, tmp: &Path, bytes: &[u8]) -> Result<()> {
    let written = (|| {
        fault::point()?;
        let mut f = File::create(tmp)?;
        fault::point()?;
        f.write_all(bytes)?;
        fault::point()?;
        f.sync_all()
    })();
    if let Err(e) = written {
        if !fault::dead() {
            let _ = fs::remove_file(tmp);
        }
        return Err(Error::io("write", tmp, e));
    }
    if let Err(e) = fault::point().and_then(|()| fs::rename(tmp, dst)) {
        if !fault::dead() {
            let _ = fs::remove_file(tmp);
        }
        return Err(Error::io("rename into place", dst, e));
    }
    let dir = dst.parent().unwrap_or(Path::new("."));
    fault::point().map_err(|e| Error::io("sync directory", dir, e))?;
    sync_dir(dir)
}

/// fsync of the directory makes the rename durable. Where the platform
/// cannot open a directory as a file (some WASI hosts), the rename's own
/// ordering is all there is; that is not an error.
fn sync_dir(dir: &Path) -> Result<()> {
    match File::open(dir) {
        Ok(d) => match d.sync_all() {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Unsupported | ErrorKind::PermissionDenied | ErrorKind::InvalidInput
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(Error::io("sync directory", dir, e)),
        },
        Err(_) => Ok(()),
    }
}

/// Held while a writer updates the keyring; removes the lock file on drop.
#[derive(Debug)]
pub struct WriterLock {
    path: PathBuf,
}

impl WriterLock {
    /// Releases the lock, reporting a failure to remove the file.
    pub fn release(self) -> Result<()> {
        let path = self.path.clone();
        std::mem::forget(self);
        fault::point().and_then(|()| fs::remove_file(&path)).map_err(|e| Error::io("remove lock file", &path, e))
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        if !fault::dead() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir() -> PathBuf {
        let mut name = [0u8; 8];
        crate::keys::fill_random(&mut name).unwrap();
        let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
        std::env::temp_dir().join(format!("bkenc-storage-{hex}"))
    }

    #[test]
    fn lock_is_exclusive_and_released() {
        let d = TenantDir::new(tempdir());
        d.create().unwrap();
        let l = d.lock().unwrap();
        let err = d.lock().unwrap_err();
        assert!(matches!(&err, Error::Busy(m) if m.contains(LOCK_FILE)), "{err}");
        l.release().unwrap();
        drop(d.lock().unwrap());
        d.lock().unwrap().release().unwrap();
        fs::remove_dir_all(d.path()).unwrap();
    }

    #[test]
    fn replace_is_whole_and_leaves_no_temp() {
        let d = TenantDir::new(tempdir());
        d.create().unwrap();
        assert_eq!(d.read_keyring().unwrap(), None);
        let l = d.lock().unwrap();
        d.replace_keyring(&l, b"one").unwrap();
        d.replace_keyring(&l, b"two!").unwrap();
        l.release().unwrap();
        assert_eq!(d.read_keyring().unwrap().unwrap(), b"two!");
        assert!(!d.path().join(TEMP_FILE).exists());
        fs::remove_dir_all(d.path()).unwrap();
    }
}
