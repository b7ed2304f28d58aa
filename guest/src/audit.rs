//! The per-tenant audit log: one line per security event, no secrets, no
//! plaintext, no scope names (scopes appear as keyed ids).
//!
//! ```text
//! line    = content ‖ " " ‖ hex(chain) ‖ " " ‖ (hex(mac) | "-") ‖ "\n"
//! content = seq ‖ " " ‖ unix-seconds ‖ " " ‖ event [‖ " " ‖ details]
//! chain_i = SHA-256(BIND("backendenc/v1/audit-chain", chain_{i-1}, content_i))     chain_0 = 0³²
//! mac_i   = HMAC-SHA256(audit-key, BIND("backendenc/v1/audit-mac", tenant-key, chain_i))
//! ```
//! Editing, inserting or removing a line breaks the chain from there on, and
//! every later MAC with it. Lines written without the key (a failed unlock)
//! carry `-` and are covered by the next MAC'd line's chain. The keyring body
//! anchors the (seq, chain) of the last line at each keyring write, so
//! cutting the log short is detected as well.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::aad::{AUDIT_CHAIN_LABEL, AUDIT_MAC_LABEL, AUDIT_SCOPE_LABEL, bind};
use crate::error::{Error, Result};
use crate::keyring::AuditKeyBytes;
use crate::storage::{TenantDir, fault};
use crate::tenant::TenantKey;

/// File name of the audit log in the tenant directory.
pub const AUDIT_FILE: &str = "audit.log";

/// One verified line of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// Seconds since the Unix epoch, as the component's clock said.
    pub time: u64,
    /// What happened (`init`, `unlock`, `unlock-failed`, `passwd`, …).
    pub event: String,
    /// `key=value` details, space-separated.
    pub details: String,
    /// Whether the line carries a valid MAC (false only for lines written
    /// without the key, such as failed unlocks).
    pub authenticated: bool,
}

/// The keyed id that stands for a scope name in the log.
pub fn scope_id(key: &AuditKeyBytes, scope: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key.0).expect("HMAC takes any key length");
    mac.update(&bind(AUDIT_SCOPE_LABEL, &[scope.as_bytes()]));
    hex8(&mac.finalize().into_bytes())
}

fn hex8(bytes: &[u8]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn chain(prev: &[u8; 32], content: &str) -> [u8; 32] {
    Sha256::digest(bind(AUDIT_CHAIN_LABEL, &[prev, content.as_bytes()])).into()
}

fn mac(key: &AuditKeyBytes, tenant: &TenantKey, chain: &[u8; 32]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&key.0).expect("HMAC takes any key length");
    m.update(&bind(AUDIT_MAC_LABEL, &[tenant.as_bytes(), chain]));
    m.finalize().into_bytes().into()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Appends one event and returns its (seq, chain). `key` is `None` only
/// where the writer has no key (a failed unlock).
pub fn append(
    dir: &TenantDir,
    tenant: &TenantKey,
    key: Option<&AuditKeyBytes>,
    event: &str,
    details: &str,
) -> Result<(u64, [u8; 32])> {
    debug_assert!(!event.contains([' ', '\n']) && !details.contains('\n'));
    let path = dir.path().join(AUDIT_FILE);
    let lock = dir.lock_named(AUDIT_LOCK_FILE)?;
    let (prev_seq, prev_chain) = last_link(&path)?;
    let seq = prev_seq + 1;
    let mut content = format!("{seq} {} {event}", now());
    if !details.is_empty() {
        content.push(' ');
        content.push_str(details);
    }
    let link = chain(&prev_chain, &content);
    let tag = key.map_or_else(|| "-".to_owned(), |k| hex(&mac(k, tenant, &link)));
    let line = format!("{content} {} {tag}\n", hex(&link));
    let written =
        fault::point().and_then(|()| OpenOptions::new().create(true).append(true).open(&path)).and_then(|mut f| {
            fault::point()?;
            f.write_all(line.as_bytes())?;
            fault::point()?;
            f.sync_all()
        });
    written.map_err(|e| Error::io("append to", &path, e))?;
    lock.release()?;
    Ok((seq, link))
}

/// File name of the audit log's writer lock.
pub const AUDIT_LOCK_FILE: &str = "audit.lock";

/// The (seq, chain) of the last line, from the file's tail.
pub(crate) fn last_link(path: &Path) -> Result<(u64, [u8; 32])> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok((0, [0; 32])),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let len = f.metadata().map_err(|e| Error::io("read", path, e))?.len();
    let from = len.saturating_sub(4096);
    let mut tail = Vec::new();
    f.seek(SeekFrom::Start(from)).and_then(|_| f.read_to_end(&mut tail)).map_err(|e| Error::io("read", path, e))?;
    let text = String::from_utf8_lossy(&tail);
    let Some(last) = text.lines().rfind(|l| !l.is_empty()) else { return Ok((0, [0; 32])) };
    let parsed = parse_line(last)
        .ok_or_else(|| Error::integrity(format!("the last line of {} is malformed", path.display())))?;
    Ok((parsed.seq, parsed.chain))
}

struct Parsed<'a> {
    seq: u64,
    time: u64,
    event: &'a str,
    details: &'a str,
    content: &'a str,
    chain: [u8; 32],
    mac: Option<[u8; 32]>,
}

fn parse_line(line: &str) -> Option<Parsed<'_>> {
    let (rest, tag) = line.rsplit_once(' ')?;
    let (content, chain_hex) = rest.rsplit_once(' ')?;
    let mut parts = content.splitn(4, ' ');
    let seq = parts.next()?.parse().ok()?;
    let time = parts.next()?.parse().ok()?;
    let event = parts.next()?;
    let details = parts.next().unwrap_or("");
    let mac = if tag == "-" { None } else { Some(unhex32(tag)?) };
    Some(Parsed { seq, time, event, details, content, chain: unhex32(chain_hex)?, mac })
}

/// Reads and verifies the whole log: chain, MACs and the keyring's anchor
/// (`anchor_seq`, `anchor_head`). Any break is an integrity error naming the line.
pub fn verify(
    dir: &TenantDir,
    tenant: &TenantKey,
    key: &AuditKeyBytes,
    anchor_seq: u64,
    anchor_head: &[u8; 32],
) -> Result<Vec<Entry>> {
    let path = dir.path().join(AUDIT_FILE);
    let text = match std::fs::read(&path) {
        Ok(b) => String::from_utf8(b).map_err(|_| Error::integrity("the audit log is not UTF-8"))?,
        Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let mut prev = [0u8; 32];
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        let bad = || Error::integrity(format!("audit log line {n} was altered"));
        let p = parse_line(line).ok_or_else(bad)?;
        if p.seq != n || chain(&prev, p.content) != p.chain {
            return Err(bad());
        }
        let authenticated = match p.mac {
            Some(m) if m == mac(key, tenant, &p.chain) => true,
            Some(_) => return Err(bad()),
            None => false,
        };
        if n == anchor_seq && p.chain != *anchor_head {
            return Err(bad());
        }
        prev = p.chain;
        out.push(Entry {
            seq: p.seq,
            time: p.time,
            event: p.event.to_owned(),
            details: p.details.to_owned(),
            authenticated,
        });
    }
    if (out.len() as u64) < anchor_seq {
        return Err(Error::integrity(format!(
            "the audit log was cut short: the keyring records {anchor_seq} lines, the file has {}",
            out.len()
        )));
    }
    Ok(out)
}
