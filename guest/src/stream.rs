//! Streaming AEAD for files of any size in constant memory: the STREAM
//! construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015) as used by age,
//! with a per-file key as in Tink's AES-GCM-HKDF streaming AEAD.
//!
//! ```text
//! file      = header ‖ segment_0 ‖ … ‖ segment_n            (n ≥ 0; the last segment is final)
//! header    = "BKSM" ‖ u8 format=1 ‖ u8 alg=1 ‖ u32 key-version ‖ u32 segment-size ‖ salt[32]
//! file-key  = HKDF-SHA256(ikm = DEK, salt = salt,
//!                         info = BIND("backendenc/v1/stream-key", tenant-key, scope, caller-aad))
//! segment_i = AES-256-GCM(file-key, nonce_i, plaintext_i, aad = header)
//! nonce_i   = u88be(i) ‖ (0x01 if segment i is the last, else 0x00)
//! ```
//! Every plaintext segment is `segment-size` bytes except the last, which
//! has 0 to `segment-size` bytes; an empty file is one empty final segment.
//! The counter rules out reordering and duplication, the final flag rules
//! out truncation (also at a segment boundary), and the per-file key (from
//! a random salt) rules out splicing between files and nonce reuse.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::aad::{STREAM_KEY_LABEL, bind};
use crate::error::{Error, Result};
use crate::keys::{DataEncryptionKey, TAG_LEN, fill_random};
use crate::tenant::TenantKey;

/// First bytes of every stream.
pub const MAGIC: &[u8; 4] = b"BKSM";
/// Stream format version.
pub const FORMAT_VERSION: u8 = 1;
/// Algorithm id: AES-256-GCM segments under an HKDF-SHA256 per-file key.
pub const ALG_AES_256_GCM_HKDF: u8 = 1;
/// Plaintext bytes per segment written by this code.
pub const SEGMENT_SIZE: u32 = 64 * 1024;
/// Length of the header.
pub const HEADER_LEN: usize = 4 + 1 + 1 + 4 + 4 + SALT_LEN;
const SALT_LEN: usize = 32;
/// Segment sizes a reader accepts (bounds the memory a hostile header can demand).
const SEGMENT_SIZES: core::ops::RangeInclusive<u32> = 4096..=(1 << 20);
/// Largest segment count (the nonce counter has 88 bits; this is far below).
const MAX_SEGMENTS: u64 = u64::MAX;

/// The parsed header of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// The DEK version the stream is sealed under.
    pub key_version: u32,
    segment_size: u32,
    bytes: [u8; HEADER_LEN],
}

impl StreamHeader {
    /// Parses the header; any malformation is an integrity error.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if !bytes.starts_with(MAGIC) {
            return Err(Error::integrity("not a backendenc stream (bad magic)"));
        }
        let bytes: [u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::integrity("stream header is truncated"))?;
        if bytes[4] != FORMAT_VERSION {
            return Err(Error::integrity(format!("unsupported stream format version {}", bytes[4])));
        }
        if bytes[5] != ALG_AES_256_GCM_HKDF {
            return Err(Error::integrity(format!("unsupported stream algorithm {}", bytes[5])));
        }
        let key_version = u32::from_be_bytes(bytes[6..10].try_into().expect("4 bytes"));
        let segment_size = u32::from_be_bytes(bytes[10..14].try_into().expect("4 bytes"));
        if !SEGMENT_SIZES.contains(&segment_size) {
            return Err(Error::integrity(format!("stream segment size {segment_size} is out of range")));
        }
        Ok(StreamHeader { key_version, segment_size, bytes })
    }

    fn salt(&self) -> &[u8] {
        &self.bytes[14..]
    }
}

/// The per-file AES-256-GCM key; zeroized on drop.
struct FileKey(Aes256Gcm);

impl FileKey {
    fn derive(dek: &DataEncryptionKey, header: &StreamHeader, tenant: &TenantKey, scope: &str, aad: &[u8]) -> Self {
        let mut okm = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(header.salt()), dek.expose_secret())
            .expand(&bind(STREAM_KEY_LABEL, &[tenant.as_bytes(), scope.as_bytes(), aad]), okm.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        FileKey(Aes256Gcm::new((&*okm).into()))
    }
}

fn nonce(counter: u64, last: bool) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::from(n)
}

/// Encrypts a stream chunk by chunk, holding at most one segment.
pub struct Sealer {
    key: FileKey,
    header: StreamHeader,
    counter: u64,
    buf: Zeroizing<Vec<u8>>,
    header_sent: bool,
}

impl Sealer {
    /// A sealer under `dek` (version `key_version`), bound to tenant, scope and `aad`.
    pub fn new(dek: &DataEncryptionKey, key_version: u32, tenant: &TenantKey, scope: &str, aad: &[u8]) -> Result<Self> {
        Self::with_segment_size(dek, key_version, tenant, scope, aad, SEGMENT_SIZE)
    }

    fn with_segment_size(
        dek: &DataEncryptionKey,
        key_version: u32,
        tenant: &TenantKey,
        scope: &str,
        aad: &[u8],
        segment_size: u32,
    ) -> Result<Self> {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[..4].copy_from_slice(MAGIC);
        bytes[4] = FORMAT_VERSION;
        bytes[5] = ALG_AES_256_GCM_HKDF;
        bytes[6..10].copy_from_slice(&key_version.to_be_bytes());
        bytes[10..14].copy_from_slice(&segment_size.to_be_bytes());
        fill_random(&mut bytes[14..])?;
        let header = StreamHeader { key_version, segment_size, bytes };
        let key = FileKey::derive(dek, &header, tenant, scope, aad);
        Ok(Sealer { key, header, counter: 0, buf: Zeroizing::new(Vec::new()), header_sent: false })
    }

    /// Takes plaintext; returns the stream bytes that are ready (the header
    /// first, then every completed non-final segment).
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<Vec<u8>> {
        let seg = self.header.segment_size as usize;
        let mut out = self.take_header();
        while !chunk.is_empty() {
            // A full buffer is sealed only once more data shows it is not the last.
            if self.buf.len() == seg {
                self.seal_segment(false, &mut out)?;
            }
            let n = (seg - self.buf.len()).min(chunk.len());
            self.buf.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
        }
        Ok(out)
    }

    /// Seals what is buffered as the final segment and returns the last bytes.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        let mut out = self.take_header();
        self.seal_segment(true, &mut out)?;
        Ok(out)
    }

    fn take_header(&mut self) -> Vec<u8> {
        if self.header_sent {
            Vec::new()
        } else {
            self.header_sent = true;
            self.header.bytes.to_vec()
        }
    }

    fn seal_segment(&mut self, last: bool, out: &mut Vec<u8>) -> Result<()> {
        if self.counter == MAX_SEGMENTS {
            return Err(Error::invalid("stream is too long"));
        }
        let start = out.len();
        out.extend_from_slice(&self.buf);
        let tag = self
            .key
            .0
            .encrypt_inout_detached(&nonce(self.counter, last), &self.header.bytes, out[start..].as_mut().into())
            .map_err(|_| Error::invalid("segment too long for AES-256-GCM"))?;
        out.extend_from_slice(&tag);
        self.buf.zeroize();
        self.buf.clear();
        self.counter += 1;
        Ok(())
    }
}

/// Where an opener is: waiting for the header, or decrypting segments.
enum OpenerState {
    Header { buf: Vec<u8> },
    Segments { key: Box<FileKey>, header: StreamHeader, counter: u64, buf: Vec<u8> },
}

/// Decrypts a stream chunk by chunk, holding at most one segment and
/// releasing plaintext only after its segment authenticated. Output before
/// `finish` succeeds is tentative: a stream cut short fails at `finish`.
pub struct Opener {
    state: OpenerState,
    tenant: TenantKey,
    scope: String,
    aad: Vec<u8>,
    keys: Box<dyn Fn(u32) -> Result<DataEncryptionKey>>,
}

impl Opener {
    /// An opener that finds the DEK for the header's key version with `keys`.
    pub fn new(
        tenant: TenantKey,
        scope: &str,
        aad: &[u8],
        keys: Box<dyn Fn(u32) -> Result<DataEncryptionKey>>,
    ) -> Self {
        Opener {
            state: OpenerState::Header { buf: Vec::new() },
            tenant,
            scope: scope.to_owned(),
            aad: aad.to_vec(),
            keys,
        }
    }

    /// Takes stream bytes; returns the plaintext of every segment that is
    /// complete and known not to be the last.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(Vec::new());
        let mut chunk = chunk;
        if let OpenerState::Header { buf } = &mut self.state {
            let n = (HEADER_LEN - buf.len()).min(chunk.len());
            buf.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
            if buf.len() < HEADER_LEN {
                if !MAGIC.starts_with(&buf[..buf.len().min(4)]) {
                    return Err(Error::integrity("not a backendenc stream (bad magic)"));
                }
                return Ok(out);
            }
            let header = StreamHeader::parse(buf)?;
            let dek = (self.keys)(header.key_version)?;
            let key = Box::new(FileKey::derive(&dek, &header, &self.tenant, &self.scope, &self.aad));
            self.state = OpenerState::Segments { key, header, counter: 0, buf: Vec::new() };
        }
        let OpenerState::Segments { key, header, counter, buf } = &mut self.state else {
            unreachable!("the header state was left above")
        };
        let full = header.segment_size as usize + TAG_LEN;
        while !chunk.is_empty() {
            // A full segment is opened only once more data shows it is not the last.
            if buf.len() == full {
                open_segment(key, header, *counter, false, buf, &mut out)?;
                *counter += 1;
            }
            let n = (full - buf.len()).min(chunk.len());
            buf.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
        }
        Ok(out)
    }

    /// Opens the final segment; fails if the stream was cut short or altered.
    pub fn finish(mut self) -> Result<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(Vec::new());
        match &mut self.state {
            OpenerState::Header { .. } => Err(Error::integrity("stream is truncated (no complete header)")),
            OpenerState::Segments { key, header, counter, buf } => {
                if buf.len() < TAG_LEN {
                    return Err(Error::integrity("stream is truncated (its final segment is missing)"));
                }
                open_segment(key, header, *counter, true, buf, &mut out)?;
                Ok(out)
            }
        }
    }
}

fn open_segment(
    key: &FileKey,
    header: &StreamHeader,
    counter: u64,
    last: bool,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<()> {
    let split = buf.len() - TAG_LEN;
    let (ct, tag) = buf.split_at_mut(split);
    let tag = Tag::try_from(&*tag).expect("TAG_LEN bytes");
    key.0.decrypt_inout_detached(&nonce(counter, last), &header.bytes, ct.into(), &tag).map_err(|_| {
        Error::integrity(format!(
            "stream segment {counter} failed authentication (the stream was cut short, reordered or altered, or belongs elsewhere)"
        ))
    })?;
    out.extend_from_slice(ct);
    buf.zeroize();
    buf.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: u32 = 4096;

    fn dek() -> DataEncryptionKey {
        DataEncryptionKey::from_bytes([0x24; 32])
    }

    fn tenant() -> TenantKey {
        TenantKey::derive("u", "c").unwrap()
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 131 + 7) as u8).collect()
    }

    fn seal_with(pt: &[u8], seg: u32, chunk: usize) -> Vec<u8> {
        let mut s = Sealer::with_segment_size(&dek(), 1, &tenant(), "assets", b"aad", seg).unwrap();
        let mut out = Vec::new();
        for c in pt.chunks(chunk.max(1)) {
            out.extend(s.push(c).unwrap());
        }
        out.extend(s.finish().unwrap());
        out
    }

    fn opener(scope: &str, aad: &[u8]) -> Opener {
        Opener::new(
            tenant(),
            scope,
            aad,
            Box::new(|v| if v == 1 { Ok(dek()) } else { Err(Error::integrity(format!("no key version {v}"))) }),
        )
    }

    fn open_with(stream: &[u8], chunk: usize, scope: &str, aad: &[u8]) -> Result<Vec<u8>> {
        let mut o = opener(scope, aad);
        let mut out = Vec::new();
        for c in stream.chunks(chunk.max(1)) {
            out.extend_from_slice(&o.push(c)?);
        }
        out.extend_from_slice(&o.finish()?);
        Ok(out)
    }

    fn open(stream: &[u8]) -> Result<Vec<u8>> {
        open_with(stream, 65_536, "assets", b"aad")
    }

    fn segments(stream: &[u8], seg: u32) -> Vec<&[u8]> {
        stream[HEADER_LEN..].chunks(seg as usize + TAG_LEN).collect()
    }

    #[test]
    fn round_trips_at_the_real_segment_boundaries() {
        let seg = SEGMENT_SIZE as usize;
        for n in [0, 1, seg - 1, seg, seg + 1, 2 * seg, 3 * seg + 5, 5 << 20] {
            let pt = data(n);
            let stream = seal_with(&pt, SEGMENT_SIZE, 100_000);
            let segs = n.div_ceil(seg).max(1);
            assert_eq!(stream.len(), HEADER_LEN + n + segs * TAG_LEN, "size {n}");
            assert_eq!(open(&stream).unwrap(), pt, "size {n}");
        }
    }

    #[test]
    fn chunking_does_not_matter() {
        let pt = data(3 * SMALL as usize + 17);
        let reference = seal_with(&pt, SMALL, 1_000_000);
        for chunk in [1, 7, 4095, 4096, 4097, 10_000] {
            let stream = seal_with(&pt, SMALL, chunk);
            assert_eq!(stream.len(), reference.len());
            assert_eq!(open_with(&stream, chunk, "assets", b"aad").unwrap(), pt, "chunk {chunk}");
            assert_eq!(open_with(&reference, chunk, "assets", b"aad").unwrap(), pt, "chunk {chunk}");
        }
    }

    #[test]
    fn every_truncation_point_fails() {
        for n in [0, 5, SMALL as usize, 3 * SMALL as usize + 100] {
            let stream = seal_with(&data(n), SMALL, 999);
            for cut in 0..stream.len() {
                let r = open_with(&stream[..cut], 1000, "assets", b"aad");
                assert!(matches!(r, Err(Error::Integrity(_))), "size {n}, cut at {cut}");
            }
            assert!(open(&stream).is_ok());
        }
    }

    #[test]
    fn reordered_duplicated_dropped_and_spliced_segments_fail() {
        let pt = data(3 * SMALL as usize + 100);
        let stream = seal_with(&pt, SMALL, 5000);
        let header = &stream[..HEADER_LEN];
        let s = segments(&stream, SMALL);
        assert_eq!(s.len(), 4);
        let rebuild = |order: &[usize]| [header, &order.iter().map(|i| s[*i]).collect::<Vec<_>>().concat()].concat();
        for order in [
            &[1, 0, 2, 3][..],
            &[0, 0, 1, 2, 3],
            &[0, 1, 1, 2, 3],
            &[0, 2, 3],
            &[0, 1, 2],
            &[0, 1, 3, 2],
            &[0, 1, 2, 3, 3],
        ] {
            assert!(matches!(open(&rebuild(order)), Err(Error::Integrity(_))), "{order:?}");
        }
        assert_eq!(open(&rebuild(&[0, 1, 2, 3])).unwrap(), pt);
        // A segment from another stream of the same plaintext and key: another salt, another file key.
        let other = seal_with(&pt, SMALL, 5000);
        let o = segments(&other, SMALL);
        let spliced = [header, s[0], o[1], s[2], s[3]].concat();
        assert!(matches!(open(&spliced), Err(Error::Integrity(_))));
        // Another stream's header with this stream's segments.
        let swapped = [&other[..HEADER_LEN], &stream[HEADER_LEN..]].concat();
        assert!(matches!(open(&swapped), Err(Error::Integrity(_))));
    }

    #[test]
    fn every_bit_flip_fails() {
        let stream = seal_with(&data(SMALL as usize + 10), SMALL, 5000);
        for bit in 0..stream.len() * 8 {
            let mut t = stream.clone();
            t[bit / 8] ^= 1 << (bit % 8);
            assert!(matches!(open(&t), Err(Error::Integrity(_))), "bit {bit}");
        }
    }

    #[test]
    fn bound_to_tenant_scope_and_aad() {
        let stream = seal_with(b"attached file", SMALL, 100);
        assert!(open_with(&stream, 100, "assets", b"aad").is_ok());
        assert!(open_with(&stream, 100, "memory", b"aad").is_err());
        assert!(open_with(&stream, 100, "assets", b"other").is_err());
        let mut o = Opener::new(TenantKey::derive("u", "c2").unwrap(), "assets", b"aad", Box::new(|_| Ok(dek())));
        let r = o.push(&stream).and_then(|_| o.finish());
        assert!(r.is_err());
    }

    #[test]
    fn hostile_headers_fail_cleanly() {
        let stream = seal_with(b"x", SMALL, 100);
        let mut big = stream.clone();
        big[10..14].copy_from_slice(&(1u32 << 31).to_be_bytes());
        assert!(matches!(open(&big), Err(Error::Integrity(m)) if m.contains("segment size")));
        let mut unknown = stream.clone();
        unknown[6..10].copy_from_slice(&9u32.to_be_bytes());
        assert!(matches!(open(&unknown), Err(Error::Integrity(m)) if m.contains("no key version 9")));
        assert!(matches!(open(b"BKEV\x01\x01"), Err(Error::Integrity(m)) if m.contains("magic")));
        assert!(matches!(open(b""), Err(Error::Integrity(_))));
    }

    #[test]
    fn memory_stays_within_one_segment() {
        let mut s = Sealer::new(&dek(), 1, &tenant(), "assets", b"").unwrap();
        let mut o = Opener::new(tenant(), "assets", b"", Box::new(|_| Ok(dek())));
        let chunk = data(100_000);
        for _ in 0..40 {
            let sealed = s.push(&chunk).unwrap();
            o.push(&sealed).unwrap();
            assert!(s.buf.capacity() <= 2 * SEGMENT_SIZE as usize, "sealer buffer {}", s.buf.capacity());
            let OpenerState::Segments { buf, .. } = &o.state else { panic!("header was read") };
            assert!(buf.capacity() <= 2 * (SEGMENT_SIZE as usize + TAG_LEN), "opener buffer {}", buf.capacity());
        }
        o.push(&s.finish().unwrap()).unwrap();
        o.finish().unwrap();
    }
}
