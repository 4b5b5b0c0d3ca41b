//! The on-disk structures of an image, byte by byte. docs/FORMAT.md is the spec; this file is
//! its implementation. Every integer is little-endian. Decoders check every length and never
//! allocate more than the bytes they were given justify.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use crate::bytes::{le32, le64};
use crate::fs::Extents;

/// Format version written by this build.
pub const VERSION: u32 = 1;
/// Uncompressed size of every block but a stream's last.
pub const BLOCK_SIZE: u32 = 1 << 20;
/// The largest block size a reader accepts.
pub const MAX_BLOCK_SIZE: u32 = 16 << 20;
/// Default volume size: below 4 GiB so a FAT32 stick holds every volume.
pub const DEFAULT_VOLUME_SIZE: u64 = 4_000_000_000;
/// Smallest volume size accepted by `--split`.
pub const MIN_VOLUME_SIZE: u64 = 2 * (1 << 20) + 32;

/// Magic at the start of every block record in a volume.
pub const RECORD_MAGIC: [u8; 4] = *b"FCB1";
/// Length of a block record header.
pub const RECORD_HEADER_LEN: usize = 32;
/// Magic of an index file.
pub const INDEX_MAGIC: [u8; 4] = *b"FCIX";
/// Magic of a map file.
pub const MAP_MAGIC: [u8; 4] = *b"FCMP";
const INDEX_HEADER_LEN: usize = 24;
const INDEX_ENTRY_LEN: usize = 32;
const MAP_HEADER_LEN: usize = 24;

/// How a block's bytes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// LZ4 block format (lz4_flex), no frame.
    Lz4 = 0,
    /// Stored as is (LZ4 did not gain).
    Stored = 1,
    /// All zero: no record in any volume.
    Zero = 2,
}

impl Encoding {
    /// The byte written for this encoding.
    pub fn to_u8(self) -> u8 {
        match self {
            Encoding::Lz4 => 0,
            Encoding::Stored => 1,
            Encoding::Zero => 2,
        }
    }

    fn from_u8(v: u8) -> Option<Encoding> {
        match v {
            0 => Some(Encoding::Lz4),
            1 => Some(Encoding::Stored),
            2 => Some(Encoding::Zero),
            _ => None,
        }
    }
}

/// One block of a stream, as the index lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// How the bytes are kept.
    pub encoding: Encoding,
    /// Uncompressed length.
    pub len: u32,
    /// Length of the payload in the volume (0 for zero blocks).
    pub stored_len: u32,
    /// CRC32 (IEEE, crc32fast) of the uncompressed bytes.
    pub crc: u32,
    /// Volume number (0 for zero blocks).
    pub volume: u32,
    /// Byte offset of the record header in that volume.
    pub offset: u64,
}

/// A record header in a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Encoding (LZ4 or stored).
    pub encoding: Encoding,
    /// Block number within its stream.
    pub block: u64,
    /// Uncompressed length.
    pub len: u32,
    /// Payload length.
    pub stored_len: u32,
    /// CRC32 of the uncompressed bytes.
    pub crc: u32,
}

/// Errors decoding the binary structures; the caller adds the file name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Not the expected magic.
    #[error("bad magic at byte {offset:#x}")]
    Magic {
        /// Where.
        offset: u64,
    },
    /// A version this build does not read.
    #[error("format version {found}, this build reads version {VERSION}")]
    Version {
        /// What was found.
        found: u32,
    },
    /// Shorter than its header says.
    #[error("truncated: {detail}")]
    Truncated {
        /// What is missing.
        detail: String,
    },
    /// A checksum does not match.
    #[error(
        "checksum mismatch at byte {offset:#x}: stored {stored:#010x}, computed {computed:#010x}"
    )]
    Checksum {
        /// Where.
        offset: u64,
        /// Stored value.
        stored: u32,
        /// Computed value.
        computed: u32,
    },
    /// A field holds an impossible value.
    #[error("invalid field at byte {offset:#x}: {detail}")]
    Invalid {
        /// Where.
        offset: u64,
        /// What.
        detail: String,
    },
}

impl RecordHeader {
    /// Serialises the header, with its own CRC at the end.
    pub fn encode(&self) -> [u8; RECORD_HEADER_LEN] {
        let mut v = Vec::with_capacity(RECORD_HEADER_LEN);
        v.extend_from_slice(&RECORD_MAGIC);
        v.extend_from_slice(&[self.encoding.to_u8(), 0, 0, 0]);
        v.extend_from_slice(&self.block.to_le_bytes());
        v.extend_from_slice(&self.len.to_le_bytes());
        v.extend_from_slice(&self.stored_len.to_le_bytes());
        v.extend_from_slice(&self.crc.to_le_bytes());
        let hc = crc32fast::hash(&v);
        v.extend_from_slice(&hc.to_le_bytes());
        let mut h = [0u8; RECORD_HEADER_LEN];
        h.copy_from_slice(&v);
        h
    }

    /// Parses and checks a header read at volume byte `offset`.
    pub fn decode(h: &[u8; RECORD_HEADER_LEN], offset: u64) -> Result<RecordHeader, DecodeError> {
        let (body, tail) = h.split_at(28);
        if body.get(0..4) != Some(&RECORD_MAGIC[..]) {
            return Err(DecodeError::Magic { offset });
        }
        let stored = le32(tail, 0).unwrap_or(0);
        let computed = crc32fast::hash(body);
        if stored != computed {
            return Err(DecodeError::Checksum {
                offset,
                stored,
                computed,
            });
        }
        let enc_byte = body.get(4).copied().unwrap_or(u8::MAX);
        let encoding = Encoding::from_u8(enc_byte)
            .filter(|e| *e != Encoding::Zero)
            .ok_or_else(|| DecodeError::Invalid {
                offset: offset.saturating_add(4),
                detail: format!("encoding {enc_byte}"),
            })?;
        let r = RecordHeader {
            encoding,
            block: le64(body, 8).unwrap_or(0),
            len: le32(body, 16).unwrap_or(0),
            stored_len: le32(body, 20).unwrap_or(0),
            crc: le32(body, 24).unwrap_or(0),
        };
        if r.len == 0 || r.len > MAX_BLOCK_SIZE || r.stored_len > MAX_BLOCK_SIZE {
            return Err(DecodeError::Invalid {
                offset,
                detail: format!("block lengths {} / {}", r.len, r.stored_len),
            });
        }
        Ok(r)
    }
}

/// `n` as a u64 (usize is at most 64 bits on every target we build).
pub(crate) fn u64_of(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Serialises an index file: header, entries, trailing CRC32 of everything before it.
pub fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        INDEX_HEADER_LEN
            .saturating_add(entries.len().saturating_mul(INDEX_ENTRY_LEN))
            .saturating_add(4),
    );
    out.extend_from_slice(&INDEX_MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&u64_of(entries.len()).to_le_bytes());
    out.extend_from_slice(&[0u8; 8]);
    for e in entries {
        out.extend_from_slice(&[e.encoding.to_u8(), 0, 0, 0]);
        out.extend_from_slice(&e.len.to_le_bytes());
        out.extend_from_slice(&e.stored_len.to_le_bytes());
        out.extend_from_slice(&e.crc.to_le_bytes());
        out.extend_from_slice(&e.volume.to_le_bytes());
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&e.offset.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks magic, version and the trailing CRC; returns the body between header and CRC.
fn check_header(buf: &[u8], magic: [u8; 4], header_len: usize) -> Result<&[u8], DecodeError> {
    let too_short = || DecodeError::Truncated {
        detail: format!("{} bytes, shorter than the header", buf.len()),
    };
    let body_end = buf.len().checked_sub(4).ok_or_else(too_short)?;
    if body_end < header_len {
        return Err(too_short());
    }
    if buf.get(0..4) != Some(&magic[..]) {
        return Err(DecodeError::Magic { offset: 0 });
    }
    let version = le32(buf, 4).unwrap_or(0);
    if version != VERSION {
        return Err(DecodeError::Version { found: version });
    }
    let (covered, tail) = buf.split_at(body_end);
    let stored = le32(tail, 0).unwrap_or(0);
    let computed = crc32fast::hash(covered);
    if stored != computed {
        return Err(DecodeError::Checksum {
            offset: u64_of(body_end),
            stored,
            computed,
        });
    }
    covered.get(header_len..).ok_or_else(too_short)
}

/// Parses an index file.
pub fn decode_index(buf: &[u8]) -> Result<Vec<IndexEntry>, DecodeError> {
    let body = check_header(buf, INDEX_MAGIC, INDEX_HEADER_LEN)?;
    let count = le64(buf, 8).unwrap_or(0);
    if u64_of(body.len()) != count.saturating_mul(u64_of(INDEX_ENTRY_LEN)) {
        return Err(DecodeError::Truncated {
            detail: format!("{count} entries declared, {} bytes of entries", body.len()),
        });
    }
    let mut out = Vec::with_capacity(body.len() / INDEX_ENTRY_LEN);
    let mut at = u64_of(INDEX_HEADER_LEN);
    for (i, e) in body.chunks_exact(INDEX_ENTRY_LEN).enumerate() {
        let enc_byte = e.first().copied().unwrap_or(u8::MAX);
        let encoding = Encoding::from_u8(enc_byte).ok_or_else(|| DecodeError::Invalid {
            offset: at,
            detail: format!("encoding {enc_byte}"),
        })?;
        let entry = IndexEntry {
            encoding,
            len: le32(e, 4).unwrap_or(0),
            stored_len: le32(e, 8).unwrap_or(0),
            crc: le32(e, 12).unwrap_or(0),
            volume: le32(e, 16).unwrap_or(0),
            offset: le64(e, 24).unwrap_or(0),
        };
        if entry.len == 0 || entry.len > MAX_BLOCK_SIZE || entry.stored_len > MAX_BLOCK_SIZE {
            return Err(DecodeError::Invalid {
                offset: at,
                detail: format!("block {i} lengths {} / {}", entry.len, entry.stored_len),
            });
        }
        out.push(entry);
        at = at.saturating_add(u64_of(INDEX_ENTRY_LEN));
    }
    Ok(out)
}

/// Serialises a map file: the used extents of a stream, relative to its base.
pub fn encode_map(map: &Extents) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        MAP_HEADER_LEN
            .saturating_add(map.len().saturating_mul(16))
            .saturating_add(4),
    );
    out.extend_from_slice(&MAP_MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&u64_of(map.len()).to_le_bytes());
    out.extend_from_slice(&map.total().to_le_bytes());
    for &(s, l) in map.runs() {
        out.extend_from_slice(&s.to_le_bytes());
        out.extend_from_slice(&l.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Parses a map file; every extent must lie below `limit`.
pub fn decode_map(buf: &[u8], limit: u64) -> Result<Extents, DecodeError> {
    let body = check_header(buf, MAP_MAGIC, MAP_HEADER_LEN)?;
    let count = le64(buf, 8).unwrap_or(0);
    let total = le64(buf, 16).unwrap_or(0);
    if u64_of(body.len()) != count.saturating_mul(16) {
        return Err(DecodeError::Truncated {
            detail: format!("{count} extents declared, {} bytes of extents", body.len()),
        });
    }
    let runs: Vec<(u64, u64)> = body
        .chunks_exact(16)
        .map(|c| (le64(c, 0).unwrap_or(0), le64(c, 8).unwrap_or(0)))
        .collect();
    let header = u64_of(MAP_HEADER_LEN);
    let map = Extents::from_sorted_runs(runs).ok_or(DecodeError::Invalid {
        offset: header,
        detail: "extents are empty, unsorted or overlapping".into(),
    })?;
    if map.end() > limit {
        return Err(DecodeError::Invalid {
            offset: header,
            detail: format!("an extent ends at {:#x}, beyond {limit:#x}", map.end()),
        });
    }
    if map.total() != total {
        return Err(DecodeError::Invalid {
            offset: 16,
            detail: format!("total {total} but extents add up to {}", map.total()),
        });
    }
    Ok(map)
}

/// Walks a map in stream order, block after block, without rescanning from the start.
#[derive(Debug, Clone)]
pub struct StreamCursor<'a> {
    runs: &'a [(u64, u64)],
    run: usize,
    within: u64,
}

impl<'a> StreamCursor<'a> {
    /// A cursor at stream position 0.
    pub fn new(map: &'a Extents) -> StreamCursor<'a> {
        StreamCursor {
            runs: map.runs(),
            run: 0,
            within: 0,
        }
    }

    /// The next `len` stream bytes as (map offset, length) pieces. Maps come from
    /// `Extents` (validated: sorted, non-empty, no overflow), so the sums below cannot wrap;
    /// saturating arithmetic keeps that true even if they did not.
    pub fn take(&mut self, mut len: u64, out: &mut Vec<(u64, u64)>) {
        out.clear();
        while len > 0 {
            let Some(&(s, l)) = self.runs.get(self.run) else {
                return;
            };
            let n = l.saturating_sub(self.within).min(len);
            out.push((s.saturating_add(self.within), n));
            self.within = self.within.saturating_add(n);
            len = len.saturating_sub(n);
            if self.within >= l {
                self.run = self.run.saturating_add(1);
                self.within = 0;
            }
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used
)]
mod tests {
    use super::*;

    #[test]
    fn record_header_round_trip_and_damage() {
        let h = RecordHeader {
            encoding: Encoding::Lz4,
            block: 7,
            len: 1 << 20,
            stored_len: 1234,
            crc: 0xdeadbeef,
        };
        let b = h.encode();
        assert_eq!(RecordHeader::decode(&b, 0).unwrap(), h);
        for i in 0..RECORD_HEADER_LEN {
            let mut d = b;
            d[i] ^= 0x10;
            assert!(RecordHeader::decode(&d, 0).is_err(), "byte {i}");
        }
    }

    #[test]
    fn index_round_trip_and_damage() {
        let e = IndexEntry {
            encoding: Encoding::Stored,
            len: 100,
            stored_len: 100,
            crc: 5,
            volume: 2,
            offset: 99,
        };
        let buf = encode_index(&[e, e]);
        assert_eq!(decode_index(&buf).unwrap(), vec![e, e]);
        for cut in 0..buf.len() {
            assert!(decode_index(&buf[..cut]).is_err());
        }
        let mut bad = buf.clone();
        bad[30] ^= 1;
        assert!(matches!(
            decode_index(&bad),
            Err(DecodeError::Checksum { .. })
        ));
        let mut future = buf.clone();
        future[4] = 9;
        assert!(matches!(
            decode_index(&future),
            Err(DecodeError::Version { found: 9 })
        ));
    }

    #[test]
    fn map_round_trip_and_limits() {
        let m = Extents::from_unsorted(vec![(0, 10), (100, 5)]);
        let buf = encode_map(&m);
        assert_eq!(decode_map(&buf, 105).unwrap(), m);
        assert!(decode_map(&buf, 104).is_err());
        for cut in 0..buf.len() {
            assert!(decode_map(&buf[..cut], 1000).is_err());
        }
    }

    #[test]
    fn cursor_walks_pieces() {
        let m = Extents::from_unsorted(vec![(0, 10), (100, 5), (200, 20)]);
        let mut c = StreamCursor::new(&m);
        let mut out = Vec::new();
        c.take(8, &mut out);
        assert_eq!(out, vec![(0, 8)]);
        c.take(8, &mut out);
        assert_eq!(out, vec![(8, 2), (100, 5), (200, 1)]);
        c.take(100, &mut out);
        assert_eq!(out, vec![(201, 19)]);
    }
}
