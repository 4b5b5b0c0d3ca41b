//! partclone images: the header (format 0001 and 0002), the used-block bitmap and the data
//! stream with its checksums. The facts come from shared/reference/peers.md §3.1, checked
//! against real `partclone 0.3.23` output: a 110-byte header with its own CRC, the bitmap (one
//! bit per block, LSB first, then a CRC; or one byte per block then `BiTmAgIc`), then every used
//! block in order with a checksum after every `blocks_per_checksum` blocks and after the last.
//!
//! "CRC32" in partclone is the IEEE reflected CRC with initial value 0xFFFFFFFF and **no final
//! XOR**: `pc_crc(data) = !crc32(data)`. XXH64 uses seed 0 and is stored little-endian; XXH128
//! is XXH3-128 stored low half first (a `memcpy` of `XXH128_hash_t`), which is `u128::to_le_bytes`.
//!
//! Everything here works on bytes handed in by the caller and never panics; allocation is
//! bounded by the partition the image is restored into (the caller passes its size).

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::as_conversions
)]

use std::io::Read;

use crate::bytes::{le16, le32, le64};

/// Length of a format 0002 header.
pub const V2_HEADER_LEN: usize = 110;
/// Length of a format 0001 header.
pub const V1_HEADER_LEN: usize = 4160;
/// partclone's own largest block size.
pub const MAX_BLOCK_SIZE: u32 = 64 << 20;
/// The magic every partclone image starts with (format 0002 adds a NUL).
pub const MAGIC: &[u8; 15] = b"partclone-image";
/// The largest bitmap read (1 GiB: 8 Gi blocks in bit mode, 32 TiB of 4 KiB blocks).
pub const MAX_BITMAP_BYTES: u64 = 1 << 30;
/// The marker after a byte-per-block bitmap.
pub const BYTE_BITMAP_MAGIC: &[u8; 8] = b"BiTmAgIc";

/// Which image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// "0001": partclone before 0.3.0.
    V1,
    /// "0002": partclone 0.3.0 and later.
    V2,
}

/// How the data strips are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumMode {
    /// No checksums (`-a0`).
    None,
    /// partclone's CRC32 (no final XOR), 4 bytes.
    Crc32,
    /// XXH64, seed 0, 8 bytes little-endian.
    Xxh64,
    /// XXH3-128, 16 bytes, low half first.
    Xxh128,
    /// Format 0001's CRC32, whose loop hashes the first byte of each block again and again.
    Crc32V1,
}

impl ChecksumMode {
    /// Bytes of one stored checksum.
    pub fn size(self) -> u32 {
        match self {
            ChecksumMode::None => 0,
            ChecksumMode::Crc32 | ChecksumMode::Crc32V1 => 4,
            ChecksumMode::Xxh64 => 8,
            ChecksumMode::Xxh128 => 16,
        }
    }

    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumMode::None => "none",
            ChecksumMode::Crc32 => "CRC32",
            ChecksumMode::Xxh64 => "XXH64",
            ChecksumMode::Xxh128 => "XXH128",
            ChecksumMode::Crc32V1 => "CRC32 (format 0001)",
        }
    }
}

/// How the bitmap is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitmapMode {
    /// One bit per block, LSB first, then a CRC32 of the bitmap bytes.
    Bit,
    /// One byte (0 or 1) per block, then `BiTmAgIc`.
    Byte,
    /// No bitmap: every block is stored.
    None,
}

/// A parsed and checked partclone header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 0001 or 0002.
    pub format: Format,
    /// The partclone version that wrote it (format 0002 only).
    pub tool_version: String,
    /// The filesystem name partclone stores (`EXTFS`, `NTFS`, `FAT32`, …).
    pub fs: String,
    /// Bytes of the source partition.
    pub device_size: u64,
    /// Blocks in the filesystem (bits in the bitmap).
    pub total_blocks: u64,
    /// Used blocks as the filesystem's superblock says.
    pub used_blocks_sb: u64,
    /// Used blocks as the bitmap says (what is stored).
    pub used_blocks: u64,
    /// Bytes per block.
    pub block_size: u32,
    /// Checksum algorithm.
    pub checksum: ChecksumMode,
    /// Used blocks per checksum (0 without checksums).
    pub blocks_per_checksum: u32,
    /// Restart the checksum after each strip.
    pub reseed: bool,
    /// Bitmap layout.
    pub bitmap: BitmapMode,
    /// Bytes of header before the bitmap.
    pub header_len: usize,
}

/// What is wrong with a partclone image. Offsets are bytes of the (decompressed) image stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcError {
    /// No partclone magic.
    #[error("not a partclone image (no \"partclone-image\" magic at byte 0)")]
    NotPartclone,
    /// The stream ends early.
    #[error("truncated at byte {offset:#x}: {detail}")]
    Truncated {
        /// Where the data ran out.
        offset: u64,
        /// What was being read.
        detail: String,
    },
    /// A field holds an impossible value.
    #[error("invalid field at byte {offset:#x}: {detail}")]
    Invalid {
        /// Where.
        offset: u64,
        /// What.
        detail: String,
    },
    /// A checksum does not match.
    #[error("{what} mismatch at byte {offset:#x}: stored {stored}, computed {computed}")]
    Checksum {
        /// Which checksum (header CRC, bitmap CRC, data strip N).
        what: String,
        /// Where the stored checksum is.
        offset: u64,
        /// Stored value (hex).
        stored: String,
        /// Computed value (hex).
        computed: String,
    },
    /// A valid image this build cannot read.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

fn invalid(offset: u64, detail: impl Into<String>) -> PcError {
    PcError::Invalid {
        offset,
        detail: detail.into(),
    }
}

/// partclone's CRC32 update: reflected 0xEDB88320 on a raw state, no final XOR.
pub fn pc_crc_update(state: u32, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(!state);
    h.update(data);
    !h.finalize()
}

/// partclone's CRC32 of `data` from the initial state 0xFFFFFFFF.
pub fn pc_crc(data: &[u8]) -> u32 {
    pc_crc_update(0xFFFF_FFFF, data)
}

/// Format 0001's CRC32 update: the loop never advances, so it hashes `data[0]`, `len` times.
pub fn crc32_v1_update(state: u32, data: &[u8]) -> u32 {
    let Some(&first) = data.first() else {
        return state;
    };
    // Doubling would be faster; blocks are small and format 0001 is rare.
    let mut crc = state;
    let byte = [first];
    for _ in 0..data.len() {
        crc = pc_crc_update(crc, &byte);
    }
    crc
}

fn ascii(buf: &[u8], from: usize, len: usize) -> String {
    let end = from.saturating_add(len);
    let field = buf.get(from..end).unwrap_or(&[]);
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect();
    text.trim_end().to_string()
}

/// How many header bytes to read, from the first [`V2_HEADER_LEN`] bytes: checks the magic
/// and the version.
pub fn header_len(first: &[u8]) -> Result<usize, PcError> {
    if first.get(0..15) != Some(&MAGIC[..]) {
        return Err(PcError::NotPartclone);
    }
    match first.get(30..34) {
        Some(b"0002") => Ok(V2_HEADER_LEN),
        Some(b"0001") => Ok(V1_HEADER_LEN),
        Some(v) => Err(PcError::Unsupported(format!(
            "partclone image format {:?}; this build reads 0001 and 0002",
            String::from_utf8_lossy(v)
        ))),
        None => Err(PcError::Truncated {
            offset: u64::try_from(first.len()).unwrap_or(0),
            detail: "the header".into(),
        }),
    }
}

/// Parses and checks a header. `buf` holds at least [`header_len`] bytes. `limit` is the size
/// of the partition the image is for: a header describing more is refused (this bounds the
/// bitmap allocation too).
pub fn parse_header(buf: &[u8], limit: u64) -> Result<Header, PcError> {
    let len = header_len(buf)?;
    if buf.len() < len {
        return Err(PcError::Truncated {
            offset: u64::try_from(buf.len()).unwrap_or(0),
            detail: format!("the {len}-byte header"),
        });
    }
    let h = if len == V1_HEADER_LEN {
        parse_v1(buf)?
    } else {
        parse_v2(buf)?
    };
    check_geometry(&h, limit)?;
    Ok(h)
}

fn parse_v1(buf: &[u8]) -> Result<Header, PcError> {
    let short = || PcError::Truncated {
        offset: 36,
        detail: "the format 0001 header".into(),
    };
    let block_size = le32(buf, 36).ok_or_else(short)?;
    let device_size = le64(buf, 40).ok_or_else(short)?;
    let total = le64(buf, 48).ok_or_else(short)?;
    let used = le64(buf, 56).ok_or_else(short)?;
    Ok(Header {
        format: Format::V1,
        tool_version: String::new(),
        fs: ascii(buf, 15, 15),
        device_size,
        total_blocks: total,
        used_blocks_sb: used,
        used_blocks: used,
        block_size,
        checksum: ChecksumMode::Crc32V1,
        blocks_per_checksum: 1,
        reseed: false,
        bitmap: BitmapMode::Byte,
        header_len: V1_HEADER_LEN,
    })
}

fn parse_v2(buf: &[u8]) -> Result<Header, PcError> {
    let short = || PcError::Truncated {
        offset: 0,
        detail: "the 110-byte header".into(),
    };
    let body = buf.get(0..106).ok_or_else(short)?;
    let stored = le32(buf, 106).ok_or_else(short)?;
    let computed = pc_crc(body);
    if stored != computed {
        return Err(PcError::Checksum {
            what: "header CRC32".into(),
            offset: 106,
            stored: format!("{stored:#010x}"),
            computed: format!("{computed:#010x}"),
        });
    }
    if buf.get(15) != Some(&0) {
        return Err(invalid(15, "the magic is not NUL-terminated"));
    }
    let endian = le16(buf, 34).ok_or_else(short)?;
    if endian != 0xC0DE {
        return Err(PcError::Unsupported(format!(
            "endianness marker {endian:#06x}: the image was written on a big-endian machine"
        )));
    }
    let image_version = le16(buf, 92).ok_or_else(short)?;
    if image_version != 2 {
        return Err(invalid(
            92,
            format!("binary image version {image_version}, the text says 0002"),
        ));
    }
    let mode = le16(buf, 96).ok_or_else(short)?;
    let checksum = match mode {
        0x00 => ChecksumMode::None,
        0x20 => ChecksumMode::Crc32,
        0x30 => ChecksumMode::Xxh64,
        0x31 => ChecksumMode::Xxh128,
        m => {
            return Err(PcError::Unsupported(format!(
                "checksum mode {m:#04x} (known: 0x00 none, 0x20 CRC32, 0x30 XXH64, 0x31 XXH128)"
            )))
        }
    };
    let cs_size = le16(buf, 98).ok_or_else(short)?;
    if u32::from(cs_size) != checksum.size() {
        return Err(invalid(
            98,
            format!(
                "checksum size {cs_size} does not match mode {} ({} bytes)",
                checksum.name(),
                checksum.size()
            ),
        ));
    }
    let bpc = le32(buf, 100).ok_or_else(short)?;
    if checksum != ChecksumMode::None && bpc == 0 {
        return Err(invalid(100, "0 blocks per checksum with checksums on"));
    }
    let reseed = match buf.get(104) {
        Some(0) => false,
        Some(1) => true,
        Some(v) => return Err(invalid(104, format!("reseed flag {v}"))),
        None => return Err(short()),
    };
    let bitmap = match buf.get(105) {
        Some(0x01) => BitmapMode::Bit,
        Some(0x08) => BitmapMode::Byte,
        Some(0x00) => BitmapMode::None,
        Some(v) => return Err(invalid(105, format!("bitmap mode {v:#04x}"))),
        None => return Err(short()),
    };
    Ok(Header {
        format: Format::V2,
        tool_version: ascii(buf, 16, 14),
        fs: ascii(buf, 36, 16),
        device_size: le64(buf, 52).ok_or_else(short)?,
        total_blocks: le64(buf, 60).ok_or_else(short)?,
        used_blocks_sb: le64(buf, 68).ok_or_else(short)?,
        used_blocks: le64(buf, 76).ok_or_else(short)?,
        block_size: le32(buf, 84).ok_or_else(short)?,
        checksum,
        blocks_per_checksum: if checksum == ChecksumMode::None {
            0
        } else {
            bpc
        },
        reseed,
        bitmap,
        header_len: V2_HEADER_LEN,
    })
}

fn check_geometry(h: &Header, limit: u64) -> Result<(), PcError> {
    let (bs_at, dev_at, total_at) = match h.format {
        Format::V1 => (36, 40, 48),
        Format::V2 => (84, 52, 60),
    };
    if h.block_size == 0 || h.block_size > MAX_BLOCK_SIZE {
        return Err(invalid(bs_at, format!("block size {}", h.block_size)));
    }
    let fs_bytes = h
        .total_blocks
        .checked_mul(u64::from(h.block_size))
        .ok_or_else(|| {
            invalid(
                total_at,
                format!(
                    "{} blocks of {} bytes overflow",
                    h.total_blocks, h.block_size
                ),
            )
        })?;
    if fs_bytes > h.device_size {
        return Err(invalid(
            total_at,
            format!(
                "{} blocks of {} bytes ({fs_bytes} bytes) are more than the device's {} bytes",
                h.total_blocks, h.block_size, h.device_size
            ),
        ));
    }
    if h.device_size > limit {
        return Err(invalid(
            dev_at,
            format!(
                "the image is of a {}-byte device, larger than the {limit}-byte partition it is for",
                h.device_size
            ),
        ));
    }
    if h.used_blocks > h.total_blocks {
        return Err(invalid(
            total_at,
            format!("{} used blocks of {} in all", h.used_blocks, h.total_blocks),
        ));
    }
    Ok(())
}

/// Bytes the bitmap takes in the stream, its CRC or marker included.
pub fn bitmap_len(h: &Header) -> Result<u64, PcError> {
    let n = match h.bitmap {
        BitmapMode::Bit => h.total_blocks.div_ceil(8).checked_add(4),
        BitmapMode::Byte => h.total_blocks.checked_add(8),
        BitmapMode::None => Some(0),
    };
    let n = n.ok_or_else(|| invalid(0, "bitmap size overflows"))?;
    if n > MAX_BITMAP_BYTES {
        return Err(PcError::Unsupported(format!(
            "a bitmap of {n} bytes ({} blocks); this build reads bitmaps of up to {MAX_BITMAP_BYTES} bytes",
            h.total_blocks
        )));
    }
    Ok(n)
}

/// The used-block map: one bit per block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    bits: Vec<u8>,
    total: u64,
    used: u64,
}

impl Bitmap {
    /// Every block used (bitmap mode none).
    pub fn all(total: u64) -> Bitmap {
        Bitmap {
            bits: Vec::new(),
            total,
            used: total,
        }
    }

    /// Blocks in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Used blocks.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Is block `i` used?
    pub fn is_set(&self, i: u64) -> bool {
        if i >= self.total {
            return false;
        }
        if self.bits.is_empty() {
            return true;
        }
        let Ok(byte) = usize::try_from(i / 8) else {
            return false;
        };
        let bit = i % 8;
        self.bits.get(byte).is_some_and(|b| (b >> bit) & 1 == 1)
    }

    /// The used blocks as runs `(first, count)`, in order.
    pub fn runs(&self) -> Runs<'_> {
        Runs { map: self, next: 0 }
    }

    /// The first block at or after `from` whose used state differs from `used`, or `total`.
    fn next_change(&self, from: u64, used: bool) -> u64 {
        if self.bits.is_empty() {
            return if used {
                self.total
            } else {
                from.min(self.total)
            };
        }
        let mut i = from;
        while i < self.total {
            // Skip whole bytes that are all the same state.
            if i % 8 == 0 {
                let want = if used { 0xFF } else { 0x00 };
                let byte = usize::try_from(i / 8)
                    .ok()
                    .and_then(|b| self.bits.get(b))
                    .copied();
                if byte == Some(want) && i.saturating_add(8) <= self.total {
                    i = i.saturating_add(8);
                    continue;
                }
            }
            if self.is_set(i) != used {
                return i;
            }
            i = i.saturating_add(1);
        }
        self.total
    }
}

/// Iterator over the used runs of a [`Bitmap`].
pub struct Runs<'a> {
    map: &'a Bitmap,
    next: u64,
}

impl Iterator for Runs<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        let start = self.map.next_change(self.next, false);
        if start >= self.map.total {
            self.next = self.map.total;
            return None;
        }
        let end = self.map.next_change(start, true);
        self.next = end;
        Some((start, end.saturating_sub(start)))
    }
}

/// Parses the bitmap bytes that follow the header (exactly [`bitmap_len`] bytes).
pub fn parse_bitmap(h: &Header, buf: &[u8]) -> Result<Bitmap, PcError> {
    let at = u64::try_from(h.header_len).unwrap_or(0);
    let want = bitmap_len(h)?;
    if u64::try_from(buf.len()).ok() != Some(want) {
        return Err(PcError::Truncated {
            offset: at.saturating_add(u64::try_from(buf.len()).unwrap_or(0)),
            detail: format!("the bitmap: {} bytes of {want}", buf.len()),
        });
    }
    let total = h.total_blocks;
    let bitmap = match h.bitmap {
        BitmapMode::None => Bitmap::all(total),
        BitmapMode::Bit => {
            let n = buf.len().saturating_sub(4);
            let (bits, crc) = buf.split_at(n);
            let stored = le32(crc, 0).unwrap_or(0);
            let computed = pc_crc(bits);
            if stored != computed {
                return Err(PcError::Checksum {
                    what: "bitmap CRC32".into(),
                    offset: at.saturating_add(u64::try_from(n).unwrap_or(0)),
                    stored: format!("{stored:#010x}"),
                    computed: format!("{computed:#010x}"),
                });
            }
            let mut bits = bits.to_vec();
            // Bits past the last block are not blocks.
            let rem = total % 8;
            if rem != 0 {
                if let Some(last) = bits.last_mut() {
                    *last &= (1u8 << rem).wrapping_sub(1);
                }
            }
            let used = bits.iter().map(|b| u64::from(b.count_ones())).sum();
            Bitmap { bits, total, used }
        }
        BitmapMode::Byte => {
            let n = buf.len().saturating_sub(8);
            let (bytes, magic) = buf.split_at(n);
            if magic != BYTE_BITMAP_MAGIC {
                return Err(invalid(
                    at.saturating_add(u64::try_from(n).unwrap_or(0)),
                    "no BiTmAgIc after the byte bitmap",
                ));
            }
            let mut bits = vec![0u8; bytes.len().div_ceil(8)];
            let mut used = 0u64;
            for (i, &b) in bytes.iter().enumerate() {
                match b {
                    0 => {}
                    1 => {
                        if let Some(slot) = bits.get_mut(i / 8) {
                            *slot |= 1 << (i % 8);
                        }
                        used = used.saturating_add(1);
                    }
                    v => {
                        return Err(invalid(
                            at.saturating_add(u64::try_from(i).unwrap_or(0)),
                            format!("byte bitmap entry {v} (only 0 and 1 are valid)"),
                        ))
                    }
                }
            }
            Bitmap { bits, total, used }
        }
    };
    Ok(bitmap)
}

/// Total bytes of the data part for `used` blocks: the blocks plus one checksum per strip.
pub fn data_len(h: &Header, used: u64) -> Option<u64> {
    let blocks = used.checked_mul(u64::from(h.block_size))?;
    let sums = if h.blocks_per_checksum == 0 {
        0
    } else {
        used.div_ceil(u64::from(h.blocks_per_checksum))
            .checked_mul(u64::from(h.checksum.size()))?
    };
    blocks.checked_add(sums)
}

/// A running checksum over data strips.
enum Sum {
    None,
    Crc(u32),
    CrcV1(u32),
    Xxh64(Box<xxhash_rust::xxh64::Xxh64>),
    Xxh128(Box<xxhash_rust::xxh3::Xxh3>),
}

impl Sum {
    fn new(mode: ChecksumMode) -> Sum {
        match mode {
            ChecksumMode::None => Sum::None,
            ChecksumMode::Crc32 => Sum::Crc(0xFFFF_FFFF),
            ChecksumMode::Crc32V1 => Sum::CrcV1(0xFFFF_FFFF),
            ChecksumMode::Xxh64 => Sum::Xxh64(Box::new(xxhash_rust::xxh64::Xxh64::new(0))),
            ChecksumMode::Xxh128 => Sum::Xxh128(Box::new(xxhash_rust::xxh3::Xxh3::new())),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Sum::None => {}
            Sum::Crc(s) => *s = pc_crc_update(*s, data),
            Sum::CrcV1(s) => *s = crc32_v1_update(*s, data),
            Sum::Xxh64(h) => h.update(data),
            Sum::Xxh128(h) => h.update(data),
        }
    }

    /// The value as stored (not resetting the state).
    fn digest(&self) -> Vec<u8> {
        match self {
            Sum::None => Vec::new(),
            Sum::Crc(s) | Sum::CrcV1(s) => s.to_le_bytes().to_vec(),
            Sum::Xxh64(h) => h.digest().to_le_bytes().to_vec(),
            Sum::Xxh128(h) => h.digest128().to_le_bytes().to_vec(),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Reads a partclone image's used blocks in order from a stream positioned after the bitmap,
/// checking every checksum, and hands them out in runs of consecutive blocks.
pub struct DataReader<R> {
    r: R,
    header: Header,
    bitmap: Bitmap,
    /// Where the search for the next used run goes on.
    scan: u64,
    /// The run being read: (next block, blocks left).
    current: Option<(u64, u64)>,
    sum: Sum,
    in_strip: u32,
    strips: u64,
    blocks_done: u64,
    used: u64,
    pos: u64,
    finished: bool,
    check: bool,
}

impl<R: Read> DataReader<R> {
    /// A reader over the data after the header and bitmap (`pos` = their length). With
    /// `check` off, checksums are read but not compared.
    pub fn new(r: R, header: Header, bitmap: Bitmap, pos: u64, check: bool) -> DataReader<R> {
        DataReader {
            r,
            sum: Sum::new(header.checksum),
            header,
            used: bitmap.used(),
            bitmap,
            scan: 0,
            current: None,
            in_strip: 0,
            strips: 0,
            blocks_done: 0,
            pos,
            finished: false,
            check,
        }
    }

    /// Bytes of the image stream consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Used blocks read so far.
    pub fn blocks_done(&self) -> u64 {
        self.blocks_done
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), ReadError> {
        let mut got = 0usize;
        while got < buf.len() {
            let Some(rest) = buf.get_mut(got..) else {
                break;
            };
            match self.r.read(rest) {
                Ok(0) => {
                    return Err(ReadError::Image(PcError::Truncated {
                        offset: self.pos.saturating_add(u64::try_from(got).unwrap_or(0)),
                        detail: format!(
                            "{what}: the image ends after {} of {} used blocks",
                            self.blocks_done, self.used
                        ),
                    }))
                }
                Ok(n) => got = got.saturating_add(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
        self.pos = self
            .pos
            .saturating_add(u64::try_from(buf.len()).unwrap_or(0));
        Ok(())
    }

    fn check_sum(&mut self) -> Result<(), ReadError> {
        let size = usize::try_from(self.header.checksum.size()).unwrap_or(0);
        let mut stored = vec![0u8; size];
        let at = self.pos;
        self.read_exact(&mut stored, "a checksum")?;
        let computed = self.sum.digest();
        let strip = self.strips;
        self.strips = self.strips.saturating_add(1);
        if self.check && stored != computed {
            return Err(ReadError::Image(PcError::Checksum {
                what: format!(
                    "{} of data strip {strip} (used blocks {}..{})",
                    self.header.checksum.name(),
                    self.blocks_done.saturating_sub(u64::from(self.in_strip)),
                    self.blocks_done
                ),
                offset: at,
                stored: hex(&stored),
                computed: hex(&computed),
            }));
        }
        self.in_strip = 0;
        if self.header.reseed {
            self.sum = Sum::new(self.header.checksum);
        }
        Ok(())
    }

    /// Reads up to `max_blocks` consecutive used blocks into `buf` (resized); returns the
    /// first block's number and the count, or `None` after the last block (its final checksum
    /// checked).
    pub fn next_run(
        &mut self,
        max_blocks: u64,
        buf: &mut Vec<u8>,
    ) -> Result<Option<(u64, u64)>, ReadError> {
        if self.finished {
            return Ok(None);
        }
        let (first, left) = match self.current.take() {
            Some(c) => c,
            None => match (Runs {
                map: &self.bitmap,
                next: self.scan,
            })
            .next()
            {
                Some(r) => {
                    self.scan = r.0.saturating_add(r.1);
                    r
                }
                None => {
                    if self.in_strip > 0 {
                        self.check_sum()?;
                    }
                    self.finished = true;
                    return Ok(None);
                }
            },
        };
        let n = left.min(max_blocks.max(1));
        let bs = usize::try_from(self.header.block_size).unwrap_or(0);
        let total = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(bs))
            .ok_or(ReadError::Image(invalid(self.pos, "run too large")))?;
        buf.clear();
        buf.resize(total, 0);
        let bpc = self.header.blocks_per_checksum;
        let mut off = 0usize;
        for _ in 0..n {
            let end = off.saturating_add(bs);
            let Some(slot) = buf.get_mut(off..end) else {
                return Err(ReadError::Image(invalid(self.pos, "internal: block slot")));
            };
            self.read_exact(slot, "a data block")?;
            self.sum.update(slot);
            off = end;
            self.blocks_done = self.blocks_done.saturating_add(1);
            if bpc > 0 {
                self.in_strip = self.in_strip.saturating_add(1);
                if self.in_strip == bpc {
                    self.check_sum()?;
                }
            }
        }
        if n < left {
            self.current = Some((first.saturating_add(n), left.saturating_sub(n)));
        }
        Ok(Some((first, n)))
    }

    /// After the last block: is there anything left in the stream? (A longer stream means the
    /// wrong bitmap or a damaged image.)
    pub fn expect_end(&mut self) -> Result<(), ReadError> {
        let mut b = [0u8; 1];
        loop {
            match self.r.read(&mut b) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    return Err(ReadError::Image(invalid(
                        self.pos,
                        "data continues after the last used block and its checksum",
                    )))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }
}

/// A failure while reading the data: the image's fault, or the underlying stream's (I/O or
/// decompression).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The image is damaged.
    #[error(transparent)]
    Image(PcError),
    /// Reading or decompressing failed.
    #[error(transparent)]
    Io(std::io::Error),
}

/// Reads and checks the header and bitmap from the start of a stream; returns them and the
/// number of bytes consumed.
pub fn read_head<R: Read>(r: &mut R, limit: u64) -> Result<(Header, Bitmap, u64), ReadError> {
    let mut first = vec![0u8; V2_HEADER_LEN];
    read_full(r, &mut first, 0, "the header")?;
    let len = header_len(&first).map_err(ReadError::Image)?;
    if len > V2_HEADER_LEN {
        let mut rest = vec![0u8; len.saturating_sub(V2_HEADER_LEN)];
        read_full(
            r,
            &mut rest,
            u64::try_from(V2_HEADER_LEN).unwrap_or(0),
            "the header",
        )?;
        first.extend_from_slice(&rest);
    }
    let h = parse_header(&first, limit).map_err(ReadError::Image)?;
    let blen = bitmap_len(&h).map_err(ReadError::Image)?;
    let at = u64::try_from(len).unwrap_or(0);
    // Bounded: the header's geometry was checked against the partition's size.
    let blen_usize = usize::try_from(blen)
        .map_err(|_| ReadError::Image(invalid(at, format!("bitmap of {blen} bytes"))))?;
    let mut bits = vec![0u8; blen_usize];
    read_full(r, &mut bits, at, "the bitmap")?;
    let bitmap = parse_bitmap(&h, &bits).map_err(ReadError::Image)?;
    Ok((h, bitmap, at.saturating_add(blen)))
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8], at: u64, what: &str) -> Result<(), ReadError> {
    let mut got = 0usize;
    while got < buf.len() {
        let Some(rest) = buf.get_mut(got..) else {
            break;
        };
        match r.read(rest) {
            Ok(0) => {
                return Err(ReadError::Image(PcError::Truncated {
                    offset: at.saturating_add(u64::try_from(got).unwrap_or(0)),
                    detail: format!("{what} ({} of {} bytes)", got, buf.len()),
                }))
            }
            Ok(n) => got = got.saturating_add(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(())
}

/// Builds a partclone image in memory (for tests and the fuzz corpus): format 0002 with the
/// given checksum mode and strip length, or format 0001 when `v1` is set.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn build_image(
    fs: &str,
    block_size: u32,
    used: &[bool],
    block: impl Fn(u64) -> Vec<u8>,
    mode: ChecksumMode,
    bpc: u32,
    reseed: bool,
    bitmap: BitmapMode,
) -> Vec<u8> {
    let total = u64::try_from(used.len()).unwrap_or(0);
    let n_used = u64::try_from(used.iter().filter(|&&u| u).count()).unwrap_or(0);
    let mut out = Vec::new();
    let v1 = mode == ChecksumMode::Crc32V1;
    let device_size = total.saturating_mul(u64::from(block_size));
    if v1 {
        out.extend_from_slice(MAGIC);
        let mut f = fs.as_bytes().to_vec();
        f.resize(15, 0);
        out.extend_from_slice(&f);
        out.extend_from_slice(b"0001");
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&block_size.to_le_bytes());
        out.extend_from_slice(&device_size.to_le_bytes());
        out.extend_from_slice(&total.to_le_bytes());
        out.extend_from_slice(&n_used.to_le_bytes());
        out.resize(V1_HEADER_LEN, 0);
        for &u in used {
            out.push(u8::from(u));
        }
        out.extend_from_slice(BYTE_BITMAP_MAGIC);
    } else {
        out.extend_from_slice(MAGIC);
        out.push(0);
        let mut v = b"0.3.23".to_vec();
        v.resize(14, 0);
        out.extend_from_slice(&v);
        out.extend_from_slice(b"0002");
        out.extend_from_slice(&0xC0DEu16.to_le_bytes());
        let mut f = fs.as_bytes().to_vec();
        f.resize(16, 0);
        out.extend_from_slice(&f);
        out.extend_from_slice(&device_size.to_le_bytes());
        out.extend_from_slice(&total.to_le_bytes());
        out.extend_from_slice(&n_used.to_le_bytes());
        out.extend_from_slice(&n_used.to_le_bytes());
        out.extend_from_slice(&block_size.to_le_bytes());
        out.extend_from_slice(&18u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&64u16.to_le_bytes());
        let code: u16 = match mode {
            ChecksumMode::None | ChecksumMode::Crc32V1 => 0,
            ChecksumMode::Crc32 => 0x20,
            ChecksumMode::Xxh64 => 0x30,
            ChecksumMode::Xxh128 => 0x31,
        };
        out.extend_from_slice(&code.to_le_bytes());
        out.extend_from_slice(&u16::try_from(mode.size()).unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&bpc.to_le_bytes());
        out.push(u8::from(reseed));
        out.push(match bitmap {
            BitmapMode::Bit => 1,
            BitmapMode::Byte => 8,
            BitmapMode::None => 0,
        });
        let crc = pc_crc(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        match bitmap {
            BitmapMode::Bit => {
                let mut bits = vec![0u8; used.len().div_ceil(8)];
                for (i, &u) in used.iter().enumerate() {
                    if u {
                        if let Some(b) = bits.get_mut(i / 8) {
                            *b |= 1 << (i % 8);
                        }
                    }
                }
                let crc = pc_crc(&bits);
                out.extend_from_slice(&bits);
                out.extend_from_slice(&crc.to_le_bytes());
            }
            BitmapMode::Byte => {
                for &u in used {
                    out.push(u8::from(u));
                }
                out.extend_from_slice(BYTE_BITMAP_MAGIC);
            }
            BitmapMode::None => {}
        }
    }
    let (bpc, reseed) = if v1 { (1, false) } else { (bpc, reseed) };
    let mut sum = Sum::new(mode);
    let mut in_strip = 0u32;
    for (i, &u) in used.iter().enumerate() {
        if !u {
            continue;
        }
        let data = block(u64::try_from(i).unwrap_or(0));
        sum.update(&data);
        out.extend_from_slice(&data);
        if mode != ChecksumMode::None {
            in_strip = in_strip.saturating_add(1);
            if in_strip == bpc {
                out.extend_from_slice(&sum.digest());
                in_strip = 0;
                if reseed {
                    sum = Sum::new(mode);
                }
            }
        }
    }
    if in_strip > 0 {
        out.extend_from_slice(&sum.digest());
    }
    out
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::as_conversions,
    clippy::panic
)]
mod tests {
    use super::*;

    fn pattern(i: u64, bs: u32) -> Vec<u8> {
        (0..bs).map(|j| (i as u32 * 7 + j * 13) as u8).collect()
    }

    fn used_map(n: usize) -> Vec<bool> {
        (0..n).map(|i| i % 3 != 1 || i > 40).collect()
    }

    /// Reads a whole in-memory image back: (block, bytes) for every used block.
    fn read_all(img: &[u8], limit: u64) -> Result<Vec<(u64, Vec<u8>)>, ReadError> {
        let mut r = img;
        let (h, bm, pos) = read_head(&mut r, limit)?;
        let bs = h.block_size as usize;
        let mut dr = DataReader::new(r, h, bm, pos, true);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some((first, n)) = dr.next_run(5, &mut buf)? {
            for k in 0..n {
                out.push((
                    first + k,
                    buf[k as usize * bs..(k as usize + 1) * bs].to_vec(),
                ));
            }
        }
        dr.expect_end()?;
        Ok(out)
    }

    #[test]
    fn crc_is_zlib_without_final_xor() {
        assert_eq!(pc_crc(b"123456789"), !0xCBF4_3926);
        let s = pc_crc_update(0xFFFF_FFFF, b"1234");
        assert_eq!(pc_crc_update(s, b"56789"), pc_crc(b"123456789"));
        // Format 0001 hashes the first byte `len` times.
        assert_eq!(crc32_v1_update(0xFFFF_FFFF, b"abc"), pc_crc(b"aaa"));
    }

    #[test]
    fn real_partclone_header_parses() {
        // The first 110 bytes of `partclone.ext4 -c -a1 -k 100` (0.3.23) of a 200 MiB ext4.
        let hex = "70617274636c6f6e652d696d61676500302e332e3233000000000000000030303032dec0\
                   455854465300000000000000000000000000800c0000000000c80000000000006e650000\
                   000000006e6500000000000000100000120000000200400020000400640000000101e5fd\
                   b6b4";
        let bytes: Vec<u8> = hex
            .split_whitespace()
            .collect::<String>()
            .as_bytes()
            .chunks(2)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
            .collect();
        assert_eq!(bytes.len(), V2_HEADER_LEN);
        let h = parse_header(&bytes, 200 << 20).unwrap();
        assert_eq!(h.fs, "EXTFS");
        assert_eq!(h.tool_version, "0.3.23");
        assert_eq!(h.block_size, 4096);
        assert_eq!(h.total_blocks, 51200);
        assert_eq!(h.used_blocks, 25966);
        assert_eq!(h.checksum, ChecksumMode::Crc32);
        assert_eq!(h.blocks_per_checksum, 100);
        assert!(h.reseed);
        assert_eq!(h.bitmap, BitmapMode::Bit);
        assert!(parse_header(&bytes, (200 << 20) - 1).is_err());
        let mut bad = bytes.clone();
        bad[60] ^= 1;
        assert!(matches!(
            parse_header(&bad, 1 << 40),
            Err(PcError::Checksum { .. })
        ));
    }

    #[test]
    fn every_mode_round_trips() {
        let used = used_map(100);
        for (mode, bpc, reseed, bm) in [
            (ChecksumMode::None, 0, true, BitmapMode::Bit),
            (ChecksumMode::Crc32, 1, true, BitmapMode::Bit),
            (ChecksumMode::Crc32, 7, true, BitmapMode::Bit),
            (ChecksumMode::Crc32, 7, false, BitmapMode::Bit),
            (ChecksumMode::Xxh64, 4, true, BitmapMode::Bit),
            (ChecksumMode::Xxh64, 4, false, BitmapMode::Byte),
            (ChecksumMode::Xxh128, 3, true, BitmapMode::Bit),
            (ChecksumMode::Xxh128, 1000, false, BitmapMode::None),
            (ChecksumMode::Crc32V1, 1, false, BitmapMode::Byte),
        ] {
            let u = if bm == BitmapMode::None {
                vec![true; 100]
            } else {
                used.clone()
            };
            let img = build_image("EXTFS", 512, &u, |i| pattern(i, 512), mode, bpc, reseed, bm);
            let got = read_all(&img, 100 * 512).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            let want: Vec<u64> = (0..100u64).filter(|&i| u[i as usize]).collect();
            assert_eq!(
                got.iter().map(|g| g.0).collect::<Vec<_>>(),
                want,
                "{mode:?}"
            );
            for (i, data) in &got {
                assert_eq!(data, &pattern(*i, 512));
            }
            // Flip one data byte near the end: a checksum mode catches it.
            let mut bad = img.clone();
            let at = bad.len() - 40;
            bad[at] ^= 0x40;
            let r = read_all(&bad, 100 * 512);
            // Format 0001's CRC only sees the first byte of each block.
            if mode == ChecksumMode::None || mode == ChecksumMode::Crc32V1 {
                assert!(r.is_ok());
            } else {
                assert!(
                    matches!(r, Err(ReadError::Image(PcError::Checksum { .. }))),
                    "{mode:?} {bpc} {reseed}: {:?}",
                    r.err()
                );
            }
        }
    }

    #[test]
    fn xxh128_is_stored_low_half_first() {
        let img = build_image(
            "NTFS",
            4096,
            &[true],
            |_| vec![0xAB; 4096],
            ChecksumMode::Xxh128,
            1,
            true,
            BitmapMode::Bit,
        );
        let stored = &img[img.len() - 16..];
        let h = xxhash_rust::xxh3::xxh3_128(&[0xAB; 4096]);
        assert_eq!(stored[..8], (h as u64).to_le_bytes());
        assert_eq!(stored[8..], ((h >> 64) as u64).to_le_bytes());
        let x = build_image(
            "NTFS",
            4096,
            &[true],
            |_| vec![1; 4096],
            ChecksumMode::Xxh64,
            1,
            true,
            BitmapMode::Bit,
        );
        assert_eq!(
            x[x.len() - 8..],
            xxhash_rust::xxh64::xxh64(&[1; 4096], 0).to_le_bytes()
        );
    }

    #[test]
    fn truncations_and_damage_never_panic() {
        let img = build_image(
            "FAT16",
            512,
            &used_map(50),
            |i| pattern(i, 512),
            ChecksumMode::Crc32,
            4,
            true,
            BitmapMode::Bit,
        );
        for cut in 0..img.len() {
            assert!(read_all(&img[..cut], 50 * 512).is_err(), "cut at {cut}");
        }
        let mut longer = img.clone();
        longer.push(0);
        assert!(read_all(&longer, 50 * 512).is_err());
        // Every single byte of the header and bitmap flipped: refused or still consistent.
        for i in 0..V2_HEADER_LEN + 11 {
            let mut bad = img.clone();
            bad[i] ^= 0x01;
            assert!(read_all(&bad, 50 * 512).is_err(), "flip at {i}");
        }
        let v1 = build_image(
            "EXTFS",
            512,
            &used_map(30),
            |i| pattern(i, 512),
            ChecksumMode::Crc32V1,
            1,
            false,
            BitmapMode::Byte,
        );
        for cut in (0..v1.len()).step_by(97) {
            assert!(read_all(&v1[..cut], 30 * 512).is_err());
        }
    }

    #[test]
    fn absurd_headers_are_refused() {
        let base = build_image(
            "X",
            512,
            &[true; 8],
            |i| pattern(i, 512),
            ChecksumMode::Crc32,
            2,
            true,
            BitmapMode::Bit,
        );
        let reseal = |mut b: Vec<u8>| {
            let c = pc_crc(&b[..106]);
            b[106..110].copy_from_slice(&c.to_le_bytes());
            b
        };
        let set = |off: usize, v: &[u8]| {
            let mut b = base.clone();
            b[off..off + v.len()].copy_from_slice(v);
            reseal(b)
        };
        for (what, b) in [
            ("block size 0", set(84, &0u32.to_le_bytes())),
            ("block size huge", set(84, &(1u32 << 30).to_le_bytes())),
            ("total overflow", set(60, &u64::MAX.to_le_bytes())),
            ("device huge", set(52, &(1u64 << 62).to_le_bytes())),
            ("used > total", set(76, &9u64.to_le_bytes())),
            ("mode", set(96, &0x21u16.to_le_bytes())),
            ("cs size", set(98, &8u16.to_le_bytes())),
            ("bpc 0", set(100, &0u32.to_le_bytes())),
            ("reseed 2", set(104, &[2])),
            ("bitmap 3", set(105, &[3])),
            ("endian", set(34, &[0xC0, 0xDE])),
            ("version", set(30, b"0003")),
        ] {
            let r = read_all(&b, 1 << 20);
            assert!(r.is_err(), "{what}");
        }
        // A large device size whose bitmap would be huge is refused by the partition limit.
        let big = set(60, &(1u64 << 40).to_le_bytes());
        assert!(read_all(&big, 1 << 20).is_err());
        assert_eq!(header_len(b"nope"), Err(PcError::NotPartclone));
    }

    #[test]
    fn bitmap_runs() {
        let used = [
            true, true, false, false, true, false, true, true, true, true, true,
        ];
        let img = build_image(
            "X",
            512,
            &used,
            |i| pattern(i, 512),
            ChecksumMode::None,
            0,
            true,
            BitmapMode::Bit,
        );
        let mut r = &img[..];
        let (_, bm, _) = read_head(&mut r, 1 << 20).unwrap();
        assert_eq!(bm.runs().collect::<Vec<_>>(), vec![(0, 2), (4, 1), (6, 5)]);
        assert_eq!(bm.used(), 8);
        assert_eq!(Bitmap::all(3).runs().collect::<Vec<_>>(), vec![(0, 3)]);
        // Bits beyond the last block do not count.
        let mut b = img.clone();
        let bits_at = V2_HEADER_LEN + 1;
        b[bits_at] |= 0x80;
        let c = pc_crc(&b[V2_HEADER_LEN..V2_HEADER_LEN + 2]);
        b[V2_HEADER_LEN + 2..V2_HEADER_LEN + 6].copy_from_slice(&c.to_le_bytes());
        let mut r = &b[..];
        let (_, bm, _) = read_head(&mut r, 1 << 20).unwrap();
        assert_eq!(bm.used(), 8);
    }
}
