//! Streaming assets through the component: round trips at segment
//! boundaries, truncation, reordering and duplication, bindings, and the
//! CLI's `seal` / `open`.

mod common;

use backendenc::{Error, Session};
use common::{init, run_cli as cli, temp_vault};

const SEG: usize = 64 * 1024;
const HEADER: usize = 46;
const TAG: usize = 16;

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn seal(s: &Session, scope: &str, aad: &[u8], pt: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    s.seal(scope, aad, &mut &pt[..], &mut out, &mut |_| {}).unwrap();
    out
}

fn open(s: &Session, scope: &str, aad: &[u8], stream: &[u8]) -> backendenc::Result<Vec<u8>> {
    let mut out = Vec::new();
    s.open(scope, aad, &mut &stream[..], &mut out, &mut |_| {})?;
    Ok(out)
}

#[test]
fn round_trips_at_segment_boundaries() {
    let (_d, vault) = temp_vault();
    let s = init(&vault, "u", "c", b"pw");
    for n in [0, 1, SEG - 1, SEG, SEG + 1, 4 * SEG, (3 << 20) + 7] {
        let pt = data(n);
        let stream = seal(&s, "assets", b"file.bin", &pt);
        assert_eq!(stream.len(), HEADER + n + n.div_ceil(SEG).max(1) * TAG, "size {n}");
        assert_eq!(open(&s, "assets", b"file.bin", &stream).unwrap(), pt, "size {n}");
    }
}

#[test]
fn truncation_reordering_and_duplication_fail() {
    let (_d, vault) = temp_vault();
    let s = init(&vault, "u", "c", b"pw");
    let pt = data(3 * SEG + 500);
    let stream = seal(&s, "assets", b"", &pt);
    let full = SEG + TAG;
    let seg = |i: usize| &stream[HEADER + i * full..(HEADER + (i + 1) * full).min(stream.len())];
    // Every segment boundary, and a byte either side of it.
    for b in (0..=3).map(|i| HEADER + i * full) {
        for cut in [b - 1, b, b + 1] {
            assert!(matches!(open(&s, "assets", b"", &stream[..cut]), Err(Error::Integrity(_))), "cut at {cut}");
        }
    }
    assert!(matches!(open(&s, "assets", b"", &stream[..stream.len() - 1]), Err(Error::Integrity(_))));
    let h = &stream[..HEADER];
    for order in [&[1, 0, 2, 3][..], &[0, 1, 1, 2, 3], &[0, 2, 3], &[0, 1, 2], &[0, 1, 2, 3, 3]] {
        let s2: Vec<u8> = [h.to_vec(), order.iter().flat_map(|i| seg(*i).to_vec()).collect()].concat();
        assert!(matches!(open(&s, "assets", b"", &s2), Err(Error::Integrity(_))), "{order:?}");
    }
    assert_eq!(open(&s, "assets", b"", &stream).unwrap(), pt);
}

#[test]
fn a_stream_is_bound_to_tenant_scope_and_aad_and_follows_retirement() {
    let (_d, vault) = temp_vault();
    let a = init(&vault, "a", "c", b"pw");
    let b = init(&vault, "b", "c", b"pw");
    b.encrypt("assets", b"b has the scope too", b"").unwrap();
    let stream = seal(&a, "assets", b"x", b"contract");
    assert!(matches!(open(&b, "assets", b"x", &stream), Err(Error::Integrity(_))));
    a.encrypt("memory", b"", b"").unwrap();
    assert!(matches!(open(&a, "memory", b"x", &stream), Err(Error::Integrity(_))));
    assert!(matches!(open(&a, "assets", b"y", &stream), Err(Error::Integrity(_))));
    assert!(matches!(open(&a, "nope", b"x", &stream), Err(Error::UnknownScope(_))));
    a.rotate("assets").unwrap();
    assert_eq!(open(&a, "assets", b"x", &stream).unwrap(), b"contract", "older versions still open");
    let newer = seal(&a, "assets", b"x", b"v2");
    assert_eq!(u32::from_be_bytes(newer[6..10].try_into().unwrap()), 2);
    a.retire("assets", 2, false).unwrap();
    assert!(matches!(open(&a, "assets", b"x", &stream), Err(Error::Retired(_))));
    assert_eq!(open(&a, "assets", b"x", &newer).unwrap(), b"v2");
}

#[test]
fn a_finished_stream_cannot_be_reused_and_locking_ends_streams() {
    let (_d, vault) = temp_vault();
    let s = init(&vault, "u", "c", b"pw");
    let mut sealer = s.seal_stream("assets", b"").unwrap();
    sealer.push(b"part").unwrap();
    let opener = s.open_stream("assets", b"").unwrap();
    drop(opener); // an unfinished opener is released without harm
    s.lock();
    assert_eq!(sealer.push(b"more").unwrap_err(), Error::Locked);
}

#[test]
fn cli_seal_and_open_files_and_pipes() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, pw) = (dir.path().join("vault"), dir.path().join("pw"));
    std::fs::write(&pw, "pw\n").unwrap();
    let init = cli(&vault, &pw, &["init", "--iterations", "1000", "--insecure-low-iterations-for-tests"], b"");
    assert!(init.status.success());
    let input = dir.path().join("in.bin");
    let pt = data(5 * SEG + 3);
    std::fs::write(&input, &pt).unwrap();
    let (sealed, opened) = (dir.path().join("in.sealed"), dir.path().join("out.bin"));
    let o =
        cli(&vault, &pw, &["seal", "--aad", "in.bin", "-o", sealed.to_str().unwrap(), input.to_str().unwrap()], b"");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stderr, b"", "no progress output when stderr is not a terminal");
    let o =
        cli(&vault, &pw, &["open", "--aad", "in.bin", "-o", opened.to_str().unwrap(), sealed.to_str().unwrap()], b"");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&opened).unwrap(), pt);
    // Through pipes too.
    let piped = cli(&vault, &pw, &["seal", "--scope", "memory"], b"via stdin");
    let back = cli(&vault, &pw, &["open", "--scope", "memory"], &piped.stdout);
    assert_eq!(back.stdout, b"via stdin");
    // A truncated stream: exit 4, one line, and OUT is left as it was.
    let mut cut = std::fs::read(&sealed).unwrap();
    cut.truncate(cut.len() - SEG);
    std::fs::write(&sealed, &cut).unwrap();
    std::fs::write(&opened, b"previous").unwrap();
    let o =
        cli(&vault, &pw, &["open", "--aad", "in.bin", "-o", opened.to_str().unwrap(), sealed.to_str().unwrap()], b"");
    assert_eq!(o.status.code(), Some(4));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.starts_with("backendenc: integrity check failed: stream segment") && err.lines().count() == 1, "{err}");
    assert_eq!(std::fs::read(&opened).unwrap(), b"previous");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}
