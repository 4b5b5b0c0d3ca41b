//! The on-disk structures of an image, byte by byte. docs/FORMAT.md is the spec; this file is
//! its implementation. Every integer is little-endian. Decoders check every length and never
//! allocate more than the bytes they were given justify.

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
pub const MIN_VOLUME_SIZE: u64 = 2 * (BLOCK_SIZE as u64) + RECORD_HEADER_LEN as u64;

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
        let mut h = [0u8; RECORD_HEADER_LEN];
        h[0..4].copy_from_slice(&RECORD_MAGIC);
        h[4] = self.encoding as u8;
        h[8..16].copy_from_slice(&self.block.to_le_bytes());
        h[16..20].copy_from_slice(&self.len.to_le_bytes());
        h[20..24].copy_from_slice(&self.stored_len.to_le_bytes());
        h[24..28].copy_from_slice(&self.crc.to_le_bytes());
        let hc = crc32fast::hash(&h[0..28]);
        h[28..32].copy_from_slice(&hc.to_le_bytes());
        h
    }

    /// Parses and checks a header read at volume byte `offset`.
    pub fn decode(h: &[u8; RECORD_HEADER_LEN], offset: u64) -> Result<RecordHeader, DecodeError> {
        if h[0..4] != RECORD_MAGIC {
            return Err(DecodeError::Magic { offset });
        }
        let stored = le32(h, 28).unwrap_or(0);
        let computed = crc32fast::hash(&h[0..28]);
        if stored != computed {
            return Err(DecodeError::Checksum {
                offset,
                stored,
                computed,
            });
        }
        let encoding = Encoding::from_u8(h[4])
            .filter(|e| *e != Encoding::Zero)
            .ok_or_else(|| DecodeError::Invalid {
                offset: offset + 4,
                detail: format!("encoding {}", h[4]),
            })?;
        let r = RecordHeader {
            encoding,
            block: le64(h, 8).unwrap_or(0),
            len: le32(h, 16).unwrap_or(0),
            stored_len: le32(h, 20).unwrap_or(0),
            crc: le32(h, 24).unwrap_or(0),
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

/// Serialises an index file: header, entries, trailing CRC32 of everything before it.
pub fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(INDEX_HEADER_LEN + entries.len() * INDEX_ENTRY_LEN + 4);
    out.extend_from_slice(&INDEX_MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    out.extend_from_slice(&[0u8; 8]);
    for e in entries {
        out.push(e.encoding as u8);
        out.extend_from_slice(&[0u8; 3]);
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

fn check_header(buf: &[u8], magic: [u8; 4], header_len: usize) -> Result<(), DecodeError> {
    if buf.len() < header_len + 4 {
        return Err(DecodeError::Truncated {
            detail: format!("{} bytes, shorter than the header", buf.len()),
        });
    }
    if buf.get(0..4) != Some(&magic[..]) {
        return Err(DecodeError::Magic { offset: 0 });
    }
    let version = le32(buf, 4).unwrap_or(0);
    if version != VERSION {
        return Err(DecodeError::Version { found: version });
    }
    let body = buf.len() - 4;
    let stored = le32(buf, body).unwrap_or(0);
    let computed = crc32fast::hash(&buf[..body]);
    if stored != computed {
        return Err(DecodeError::Checksum {
            offset: body as u64,
            stored,
            computed,
        });
    }
    Ok(())
}

/// Parses an index file.
pub fn decode_index(buf: &[u8]) -> Result<Vec<IndexEntry>, DecodeError> {
    check_header(buf, INDEX_MAGIC, INDEX_HEADER_LEN)?;
    let count = le64(buf, 8).unwrap_or(0);
    let body = &buf[INDEX_HEADER_LEN..buf.len() - 4];
    if body.len() as u64 != count.saturating_mul(INDEX_ENTRY_LEN as u64) {
        return Err(DecodeError::Truncated {
            detail: format!("{count} entries declared, {} bytes of entries", body.len()),
        });
    }
    let mut out = Vec::with_capacity(body.len() / INDEX_ENTRY_LEN);
    for (i, e) in body.chunks_exact(INDEX_ENTRY_LEN).enumerate() {
        let at = (INDEX_HEADER_LEN + i * INDEX_ENTRY_LEN) as u64;
        let encoding = Encoding::from_u8(e[0]).ok_or_else(|| DecodeError::Invalid {
            offset: at,
            detail: format!("encoding {}", e[0]),
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
    }
    Ok(out)
}

/// Serialises a map file: the used extents of a stream, relative to its base.
pub fn encode_map(map: &Extents) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAP_HEADER_LEN + map.len() * 16 + 4);
    out.extend_from_slice(&MAP_MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(map.len() as u64).to_le_bytes());
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
    check_header(buf, MAP_MAGIC, MAP_HEADER_LEN)?;
    let count = le64(buf, 8).unwrap_or(0);
    let total = le64(buf, 16).unwrap_or(0);
    let body = &buf[MAP_HEADER_LEN..buf.len() - 4];
    if body.len() as u64 != count.saturating_mul(16) {
        return Err(DecodeError::Truncated {
            detail: format!("{count} extents declared, {} bytes of extents", body.len()),
        });
    }
    let runs: Vec<(u64, u64)> = body
        .chunks_exact(16)
        .map(|c| (le64(c, 0).unwrap_or(0), le64(c, 8).unwrap_or(0)))
        .collect();
    let map = Extents::from_sorted_runs(runs).ok_or(DecodeError::Invalid {
        offset: MAP_HEADER_LEN as u64,
        detail: "extents are empty, unsorted or overlapping".into(),
    })?;
    if map.end() > limit {
        return Err(DecodeError::Invalid {
            offset: MAP_HEADER_LEN as u64,
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

/// Where the bytes of stream range `[pos, pos+len)` live on the disk, through `map`:
/// calls `f(disk_offset, stream_slice_start, slice_len)` for each piece.
pub fn map_stream_range(
    map: &Extents,
    base: u64,
    mut pos: u64,
    len: u64,
    mut f: impl FnMut(u64, u64, u64),
) {
    // Binary search over cumulative lengths would be faster; a running scan per block is
    // avoided by the cursor in `StreamCursor` for sequential use.
    let mut acc = 0u64;
    let end = pos + len;
    for &(s, l) in map.runs() {
        let run_end = acc + l;
        if run_end > pos && acc < end {
            let from = pos.max(acc);
            let to = end.min(run_end);
            f(base + s + (from - acc), from - (end - len), to - from);
            pos = to;
        }
        acc = run_end;
        if acc >= end {
            break;
        }
    }
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

    /// The next `len` stream bytes as (map offset, length) pieces.
    pub fn take(&mut self, mut len: u64, out: &mut Vec<(u64, u64)>) {
        out.clear();
        while len > 0 {
            let Some(&(s, l)) = self.runs.get(self.run) else {
                return;
            };
            let n = (l - self.within).min(len);
            out.push((s + self.within, n));
            self.within += n;
            len -= n;
            if self.within == l {
                self.run += 1;
                self.within = 0;
            }
        }
    }
}

#[cfg(test)]
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
        let mut pieces = Vec::new();
        map_stream_range(&m, 1000, 8, 8, |d, s, l| pieces.push((d, s, l)));
        assert_eq!(pieces, vec![(1008, 0, 2), (1100, 2, 5), (1200, 7, 1)]);
    }
}
