//! A hostile stand-in for the vault component, used only by the sandbox
//! tests. Its `init` and `unlock` take a list of probes in the passphrase (one per line:
//! `read PATH`, `list PATH`, `write PATH`, `env`, `args`, `stdin`) and
//! reports what each one reached, as the message of a `storage` error.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "backendenc", path: "../../wit" });

use exports::backendenc::vault::vault::{
    AssetReader, AssetWriter, AuditEntry, Error, Guest, GuestAssetReader, GuestAssetWriter, GuestOpener, GuestSealer,
    GuestSession, InitOptions, Opener, RetireOutcome, RewrapItem, Sealer, Session, TenantStatus,
};

struct Probe;
struct NoSession;
struct NoStream;

impl GuestSealer for NoStream {
    fn push(&self, _: Vec<u8>) -> Result<Vec<u8>, Error> {
        Err(Error::Locked)
    }
    fn finish(&self) -> Result<Vec<u8>, Error> {
        Err(Error::Locked)
    }
}

impl GuestAssetWriter for NoStream {
    fn push(&self, _: Vec<u8>) -> Result<(), Error> {
        Err(Error::Locked)
    }
}

impl GuestAssetReader for NoStream {
    fn read(&self, _: u32) -> Result<Vec<u8>, Error> {
        Err(Error::Locked)
    }
}

impl GuestOpener for NoStream {
    fn push(&self, _: Vec<u8>) -> Result<Vec<u8>, Error> {
        Err(Error::Locked)
    }
    fn finish(&self) -> Result<Vec<u8>, Error> {
        Err(Error::Locked)
    }
}

fn probe(line: &str) -> String {
    let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
    let outcome = match verb {
        "read" => std::fs::read(arg).map(|b| format!("ok {} bytes", b.len())),
        "list" => std::fs::read_dir(arg).map(|d| format!("ok {} entries", d.count())),
        "write" => std::fs::write(arg, b"pwned").map(|()| "ok written".to_owned()),
        "env" => Ok(format!("ok {} vars", std::env::vars_os().count())),
        "args" => Ok(format!("ok {} args", std::env::args_os().count())),
        "stdin" => {
            use std::io::Read;
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map(|n| format!("ok {n} bytes"))
        }
        _ => Ok("unknown probe".to_owned()),
    };
    match outcome {
        Ok(s) => format!("{line} => {s}"),
        Err(e) => format!("{line} => denied ({:?})", e.kind()),
    }
}

fn run(script: Vec<u8>) -> Error {
    let script = String::from_utf8(script).unwrap_or_default();
    let report: Vec<String> = script.lines().map(probe).collect();
    Error::Storage(report.join("\n"))
}

impl Guest for Probe {
    type Session = NoSession;
    type Sealer = NoStream;
    type Opener = NoStream;
    type AssetWriter = NoStream;
    type AssetReader = NoStream;

    fn init(_user: String, _channel: String, passphrase: Vec<u8>, _options: InitOptions) -> Result<Session, Error> {
        Err(run(passphrase))
    }

    fn unlock(_user: String, _channel: String, passphrase: Vec<u8>) -> Result<Session, Error> {
        Err(run(passphrase))
    }

    fn recover(_: String, _: String, _: String, script: Vec<u8>, _: InitOptions) -> Result<Session, Error> {
        Err(run(script))
    }

    fn tenant_key(_user: String, _channel: String) -> Result<String, Error> {
        Err(Error::InvalidArgument("probe".into()))
    }

    fn armor(_envelope: Vec<u8>) -> Result<String, Error> {
        Err(Error::InvalidArgument("probe".into()))
    }
}

impl GuestSession for NoSession {
    fn encrypt(&self, _: String, _: Vec<u8>, _: Vec<u8>) -> Result<Vec<u8>, Error> {
        Err(Error::Locked)
    }
    fn decrypt(&self, _: String, _: Vec<u8>, _: Vec<u8>) -> Result<Vec<u8>, Error> {
        Err(Error::Locked)
    }
    fn status(&self) -> Result<TenantStatus, Error> {
        Err(Error::Locked)
    }
    fn lock(&self) {}
    fn change_passphrase(&self, _: Vec<u8>, _: InitOptions) -> Result<(), Error> {
        Err(Error::Locked)
    }
    fn rotate(&self, _: String) -> Result<u32, Error> {
        Err(Error::Locked)
    }
    fn retire(&self, _: String, _: u32, _: bool) -> Result<RetireOutcome, Error> {
        Err(Error::Locked)
    }
    fn set_auto_rotate(&self, _: String, _: u64) -> Result<(), Error> {
        Err(Error::Locked)
    }
    fn rewrap(&self, _: String, _: Vec<RewrapItem>) -> Result<Vec<Result<Vec<u8>, Error>>, Error> {
        Err(Error::Locked)
    }
    fn rotate_kek(&self, _: Vec<u8>) -> Result<u32, Error> {
        Err(Error::Locked)
    }
    fn add_recovery_key(&self) -> Result<String, Error> {
        Err(Error::Locked)
    }
    fn remove_recovery_key(&self) -> Result<(), Error> {
        Err(Error::Locked)
    }
    fn audit_log(&self) -> Result<Vec<AuditEntry>, Error> {
        Err(Error::Locked)
    }
    fn put_record(&self, _: String, _: String, _: Vec<u8>) -> Result<(), Error> {
        Err(Error::Locked)
    }
    fn get_record(&self, _: String, _: String) -> Result<Vec<u8>, Error> {
        Err(Error::Locked)
    }
    fn delete_record(&self, _: String, _: String) -> Result<(), Error> {
        Err(Error::Locked)
    }
    fn list_records(&self, _: String) -> Result<Vec<String>, Error> {
        Err(Error::Locked)
    }
    fn begin_asset(&self, _: String, _: String) -> Result<AssetWriter, Error> {
        Err(Error::Locked)
    }
    fn commit_asset(&self, _: AssetWriter) -> Result<u64, Error> {
        Err(Error::Locked)
    }
    fn open_asset(&self, _: String, _: String) -> Result<AssetReader, Error> {
        Err(Error::Locked)
    }
    fn delete_asset(&self, _: String, _: String) -> Result<(), Error> {
        Err(Error::Locked)
    }
    fn list_assets(&self, _: String) -> Result<Vec<String>, Error> {
        Err(Error::Locked)
    }
    fn seal_stream(&self, _: String, _: Vec<u8>) -> Result<Sealer, Error> {
        Err(Error::Locked)
    }
    fn open_stream(&self, _: String, _: Vec<u8>) -> Result<Opener, Error> {
        Err(Error::Locked)
    }
}

export!(Probe);
