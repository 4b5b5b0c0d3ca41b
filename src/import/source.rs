//! A partition's data, streamed: the pieces are concatenated, decompressed and parsed
//! (partclone, ntfsclone or raw), every checksum is checked, and the used bytes come out as
//! chunks `(partition offset, bytes)` of at most 1 MiB in ascending order.

use std::io::{ErrorKind, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::import::clonezilla::{swap_header, CzPart, DataKind};
use crate::import::ntfsclone;
use crate::import::partclone::{self, DataReader, PcError, ReadError};
use crate::import::pieces::{self, Compression, Pieces};
use crate::import::ImportError;

/// Largest chunk handed out.
pub const CHUNK: u64 = 1 << 20;

/// What the start of a data file says.
#[derive(Debug, Clone)]
pub struct Head {
    /// Its compression.
    pub compression: Compression,
    /// Bytes of partition data it holds.
    pub stored_bytes: u64,
    /// The partclone header, for partclone images.
    pub partclone: Option<partclone::Header>,
}

/// Where in a data file a reader is, for messages.
#[derive(Clone)]
struct Where {
    compression: Compression,
    consumed: Arc<AtomicU64>,
    pieces: Pieces,
    name: String,
}

impl Where {
    fn piece(&self) -> (PathBuf, u64) {
        let pos = self.consumed.load(Ordering::Relaxed);
        self.pieces.locate(pos.saturating_sub(1))
    }

    /// An error at byte `pos` of the decompressed stream.
    fn damage(&self, pos: u64, detail: impl std::fmt::Display) -> ImportError {
        let (file, off) = self.piece();
        let at = if self.compression == Compression::None {
            String::new()
        } else {
            format!(
                " ({} data; byte {pos:#x} of the decompressed stream, read up to byte {off:#x} of this piece)",
                self.compression.name()
            )
        };
        ImportError::Corrupt {
            file,
            detail: format!("{detail}{at}"),
        }
    }

    fn read_error(&self, pos: u64, e: ReadError) -> ImportError {
        match e {
            ReadError::Image(pc) => self.damage(
                pos,
                format!("{} image {}: {pc}", self.kind_name(), self.name),
            ),
            ReadError::Io(e) => self.io(pos, e),
        }
    }

    fn io(&self, pos: u64, e: std::io::Error) -> ImportError {
        match e.kind() {
            ErrorKind::InvalidData
            | ErrorKind::InvalidInput
            | ErrorKind::UnexpectedEof
            | ErrorKind::Other => {
                let what = if self.compression == Compression::None {
                    "reading".to_string()
                } else {
                    format!("decompressing ({})", self.compression.name())
                };
                self.damage(pos, format!("{what} failed: {e}"))
            }
            _ => {
                let (file, _) = self.piece();
                ImportError::Io {
                    op: "reading",
                    file,
                    source: e,
                }
            }
        }
    }

    fn kind_name(&self) -> &'static str {
        "partclone"
    }
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Opens a data file and checks its start: the partclone header and bitmap (with their CRCs)
/// or the ntfsclone header; for an uncompressed partclone image also that the pieces hold
/// exactly the bytes the header and bitmap call for (a missing last piece shows here).
pub fn check_head(pieces: &Pieces, kind: &DataKind, part_size: u64) -> Result<Head, ImportError> {
    let s = pieces::open(pieces)?;
    let w = Where {
        compression: s.compression,
        consumed: s.consumed.clone(),
        pieces: pieces.clone(),
        name: pieces.describe(),
    };
    let mut reader = s.reader;
    match kind {
        DataKind::Partclone { .. } => {
            let (h, bitmap, pos) =
                partclone::read_head(&mut reader, part_size).map_err(|e| w.read_error(0, e))?;
            let stored = bitmap.used().saturating_mul(u64::from(h.block_size));
            if s.compression == Compression::None {
                let want = partclone::data_len(&h, bitmap.used())
                    .and_then(|d| d.checked_add(pos))
                    .unwrap_or(u64::MAX);
                let have = pieces.total();
                if have != want {
                    let (last, _) = pieces.locate(have.saturating_sub(1));
                    return Err(ImportError::Corrupt {
                        file: last,
                        detail: format!(
                            "the pieces of {} hold {have} bytes, but its header and bitmap call for \
                             {want} ({} used blocks of {} bytes): {}",
                            pieces.describe(),
                            bitmap.used(),
                            h.block_size,
                            if have < want {
                                "truncated, or its last piece is missing"
                            } else {
                                "there is data after the image"
                            }
                        ),
                    });
                }
            }
            Ok(Head {
                compression: s.compression,
                stored_bytes: stored,
                partclone: Some(h),
            })
        }
        DataKind::Ntfsclone => {
            let mut b = [0u8; ntfsclone::HEADER_LEN];
            let n = read_full(&mut reader, &mut b).map_err(|e| w.io(0, e))?;
            let h = ntfsclone::parse_header(&b[..n], part_size)
                .map_err(|d| w.damage(0, format!("ntfsclone image {}: {d}", w.name)))?;
            Ok(Head {
                compression: s.compression,
                stored_bytes: h.in_use.saturating_mul(u64::from(h.cluster_size)),
                partclone: None,
            })
        }
        DataKind::Raw => {
            if s.compression == Compression::None && pieces.total() > part_size {
                return Err(ImportError::Corrupt {
                    file: pieces.files[0].0.clone(),
                    detail: format!(
                        "{} bytes of raw data for a {part_size}-byte partition",
                        pieces.total()
                    ),
                });
            }
            let mut b = [0u8; 16];
            let n = read_full(&mut reader, &mut b).map_err(|e| w.io(0, e))?;
            if b[..n].starts_with(partclone::MAGIC) {
                return Err(w.damage(0, "named as raw (dd) data but holds a partclone image"));
            }
            Ok(Head {
                compression: s.compression,
                stored_bytes: part_size,
                partclone: None,
            })
        }
    }
}

enum Inner {
    Partclone {
        r: Box<DataReader<Box<dyn Read + Send>>>,
        block: u64,
        /// NTFS: the boot sector, kept to put its copy at the volume's end (below).
        ntfs_boot: Option<Vec<u8>>,
        is_ntfs: bool,
        /// One past the last byte handed out.
        end: u64,
    },
    Raw {
        r: Box<dyn Read + Send>,
        pos: u64,
    },
    Ntfs {
        r: Box<dyn Read + Send>,
        h: ntfsclone::Header,
        cluster: u64,
        pos: u64,
        /// Consecutive data clusters left in the current run.
        next_is_data: bool,
    },
    Swap(Option<Vec<u8>>),
}

/// Streams one partition's data.
pub struct PartReader {
    inner: Inner,
    w: Option<Where>,
    size: u64,
    done: bool,
    /// Bytes of partition data expected (for progress).
    pub expected: u64,
}

/// Opens partition `p`'s data (or its swap header) for reading; with `check` off, partclone
/// checksums are skipped (they are still read).
pub fn open(p: &CzPart, check: bool) -> Result<PartReader, ImportError> {
    let Some(d) = &p.data else {
        let (uuid, label) = p.swap.clone().unwrap_or_default();
        let h = swap_header(p.size, &uuid, &label).map_err(|detail| ImportError::Corrupt {
            file: PathBuf::from(format!("swappt-{}.info", p.name)),
            detail,
        })?;
        return Ok(PartReader {
            inner: Inner::Swap(Some(h)),
            w: None,
            size: p.size,
            done: false,
            expected: 4096,
        });
    };
    let s = pieces::open(&d.pieces)?;
    let w = Where {
        compression: s.compression,
        consumed: s.consumed.clone(),
        pieces: d.pieces.clone(),
        name: d.pieces.describe(),
    };
    let mut reader = s.reader;
    let inner = match &d.kind {
        DataKind::Partclone { .. } => {
            let (h, bitmap, pos) =
                partclone::read_head(&mut reader, p.size).map_err(|e| w.read_error(0, e))?;
            let block = u64::from(h.block_size);
            Inner::Partclone {
                is_ntfs: h.fs == "NTFS",
                r: Box::new(DataReader::new(reader, h, bitmap, pos, check)),
                block,
                ntfs_boot: None,
                end: 0,
            }
        }
        DataKind::Raw => Inner::Raw { r: reader, pos: 0 },
        DataKind::Ntfsclone => {
            let mut b = [0u8; ntfsclone::HEADER_LEN];
            let n = read_full(&mut reader, &mut b).map_err(|e| w.io(0, e))?;
            let h = ntfsclone::parse_header(&b[..n], p.size)
                .map_err(|d| w.damage(0, format!("ntfsclone image {}: {d}", w.name)))?;
            let skip = h.data_offset - ntfsclone::HEADER_LEN as u64;
            let mut pad = vec![0u8; skip as usize];
            let got = read_full(&mut reader, &mut pad).map_err(|e| w.io(50, e))?;
            if got != pad.len() {
                return Err(w.damage(50, "ntfsclone image: truncated after its header"));
            }
            Inner::Ntfs {
                r: reader,
                pos: h.data_offset,
                h,
                cluster: 0,
                next_is_data: false,
            }
        }
    };
    Ok(PartReader {
        inner,
        w: Some(w),
        size: p.size,
        done: false,
        expected: d.stored_bytes,
    })
}

impl PartReader {
    /// The next chunk into `buf`: returns its offset in the partition, or `None` after the
    /// last one (once the stream was seen to end where it should).
    pub fn next_chunk(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>, ImportError> {
        if self.done {
            return Ok(None);
        }
        let size = self.size;
        let w = self.w.clone();
        let w = || {
            w.clone().unwrap_or(Where {
                compression: Compression::None,
                consumed: Arc::new(AtomicU64::new(0)),
                pieces: Pieces { files: Vec::new() },
                name: String::new(),
            })
        };
        match &mut self.inner {
            Inner::Swap(h) => match h.take() {
                Some(h) => {
                    *buf = h;
                    Ok(Some(0))
                }
                None => {
                    self.done = true;
                    Ok(None)
                }
            },
            Inner::Partclone {
                r,
                block,
                ntfs_boot,
                is_ntfs,
                end,
            } => {
                let max = (CHUNK / *block).max(1);
                match r.next_run(max, buf) {
                    Ok(Some((first, _))) => {
                        let off = first * *block;
                        if off == 0 && *is_ntfs {
                            *ntfs_boot = Some(buf[..buf.len().min(4096)].to_vec());
                        }
                        *end = off + buf.len() as u64;
                        Ok(Some(off))
                    }
                    Ok(None) => {
                        let pos = r.position();
                        r.expect_end().map_err(|e| w().read_error(pos, e))?;
                        self.done = true;
                        // partclone does not store NTFS's backup boot sector (the sector after
                        // the volume); a restore puts the copy NTFS keeps there back, as the
                        // source had it, or ntfsfix and chkdsk call the volume damaged.
                        if let Some(boot) = ntfs_boot.take() {
                            if let Some(at) = ntfs_backup_boot(&boot, size) {
                                if at >= *end {
                                    let bps =
                                        usize::from(crate::bytes::le16(&boot, 0x0B).unwrap_or(512));
                                    if let Some(sector) = boot.get(..bps) {
                                        buf.clear();
                                        buf.extend_from_slice(sector);
                                        return Ok(Some(at));
                                    }
                                }
                            }
                        }
                        Ok(None)
                    }
                    Err(e) => Err(w().read_error(r.position(), e)),
                }
            }
            Inner::Raw { r, pos } => {
                buf.resize(CHUNK as usize, 0);
                let n = read_full(r.as_mut(), buf).map_err(|e| w().io(*pos, e))?;
                buf.truncate(n);
                if n == 0 {
                    self.done = true;
                    return Ok(None);
                }
                let at = *pos;
                if at + n as u64 > size {
                    return Err(w().damage(
                        at,
                        format!("raw data longer than the {size}-byte partition"),
                    ));
                }
                *pos += n as u64;
                Ok(Some(at))
            }
            Inner::Ntfs {
                r,
                h,
                cluster,
                pos,
                next_is_data,
            } => {
                let cs = u64::from(h.cluster_size);
                let max_clusters = h.device_size / cs;
                buf.clear();
                let mut start = *cluster;
                loop {
                    let mut cmd = [0u8; 1];
                    if !*next_is_data {
                        let n = read_full(r.as_mut(), &mut cmd).map_err(|e| w().io(*pos, e))?;
                        if n == 0 {
                            if buf.is_empty() {
                                self.done = true;
                                return Ok(None);
                            }
                            return Ok(Some(start * cs));
                        }
                        *pos += 1;
                        match cmd[0] {
                            0 => {
                                let mut c = [0u8; 8];
                                let n =
                                    read_full(r.as_mut(), &mut c).map_err(|e| w().io(*pos, e))?;
                                if n != 8 {
                                    return Err(w().damage(
                                        *pos,
                                        "ntfsclone image truncated in a gap command",
                                    ));
                                }
                                *pos += 8;
                                let count = u64::from_le_bytes(c);
                                let next =
                                    cluster.checked_add(count).filter(|c| *c <= max_clusters);
                                let Some(next) = next else {
                                    return Err(w().damage(
                                        *pos - 9,
                                        format!("ntfsclone gap of {count} clusters runs past the volume's end"),
                                    ));
                                };
                                *cluster = next;
                                if !buf.is_empty() {
                                    return Ok(Some(start * cs));
                                }
                                start = *cluster;
                                continue;
                            }
                            1 => *next_is_data = true,
                            c => {
                                return Err(w().damage(
                                    *pos - 1,
                                    format!("ntfsclone command byte {c:#04x} (expected 0 or 1)"),
                                ))
                            }
                        }
                    }
                    if *cluster >= max_clusters {
                        return Err(w().damage(*pos, "ntfsclone cluster past the volume's end"));
                    }
                    let at = buf.len();
                    buf.resize(at + cs as usize, 0);
                    let n = read_full(r.as_mut(), &mut buf[at..]).map_err(|e| w().io(*pos, e))?;
                    if n as u64 != cs {
                        return Err(w().damage(*pos, "ntfsclone image truncated inside a cluster"));
                    }
                    *pos += cs;
                    *cluster += 1;
                    *next_is_data = false;
                    if buf.len() as u64 >= CHUNK {
                        return Ok(Some(start * cs));
                    }
                }
            }
        }
    }
}

/// A name for a partition's data in messages.
pub fn describe(p: &CzPart) -> String {
    match &p.data {
        Some(d) => d.pieces.describe(),
        None => format!("swappt-{}.info", p.name),
    }
}

impl From<PcError> for ReadError {
    fn from(e: PcError) -> ReadError {
        ReadError::Image(e)
    }
}

/// Where an NTFS volume's backup boot sector lives (the sector numbered by the boot sector's
/// total-sectors field), when it fits in a partition of `size` bytes.
fn ntfs_backup_boot(boot: &[u8], size: u64) -> Option<u64> {
    if boot.get(3..11) != Some(b"NTFS    ") || boot.get(510..512) != Some(&[0x55, 0xAA]) {
        return None;
    }
    let bps = u64::from(crate::bytes::le16(boot, 0x0B)?);
    if !(512..=4096).contains(&bps) || !bps.is_power_of_two() || (boot.len() as u64) < bps {
        return None;
    }
    let at = crate::bytes::le64(boot, 0x28)?.checked_mul(bps)?;
    (at.checked_add(bps)? <= size).then_some(at)
}
