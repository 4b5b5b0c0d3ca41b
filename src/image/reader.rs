//! Reading an image: open and check the manifest, check every file's presence and size and
//! the map and index checksums before anything else, then stream blocks volume by volume.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::fs::Extents;
use crate::image::format::{
    decode_index, decode_map, u64_of, Encoding, IndexEntry, RecordHeader, MAX_BLOCK_SIZE,
    RECORD_HEADER_LEN, VERSION,
};
use crate::image::manifest::{
    valid_file_name, FileRef, Manifest, StreamInfo, FORMAT_NAME, MANIFEST_FILE, MANIFEST_SHA_FILE,
    MAX_MANIFEST_BYTES,
};
use crate::image::writer::hex;
use crate::image::ImageError;
use sha2::{Digest, Sha256};

/// An opened image whose manifest parsed.
#[derive(Debug)]
pub struct Image {
    /// The image directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

/// A stream whose map and index were read and checked.
#[derive(Debug, Clone)]
pub struct LoadedStream {
    /// The manifest's entry.
    pub info: StreamInfo,
    /// Used extents, relative to `info.base`.
    pub map: Extents,
    /// One entry per block.
    pub index: Vec<IndexEntry>,
}

fn corrupt(file: &Path, detail: impl Into<String>) -> ImageError {
    ImageError::Corrupt {
        file: file.to_path_buf(),
        detail: detail.into(),
    }
}

fn read_file_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ImageError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ImageError::Missing {
                file: path.to_path_buf(),
            }
        } else {
            ImageError::Io {
                op: "reading",
                file: path.to_path_buf(),
                source: e,
            }
        }
    })?;
    if meta.len() > limit {
        return Err(corrupt(
            path,
            format!("{} bytes, more than the {limit} allowed", meta.len()),
        ));
    }
    std::fs::read(path).map_err(|e| ImageError::Io {
        op: "reading",
        file: path.to_path_buf(),
        source: e,
    })
}

impl Image {
    /// Opens `dir` and parses its manifest. An image without one (`IMAGE.partial`, an
    /// interrupted save) is refused.
    pub fn open(dir: &Path) -> Result<Image, ImageError> {
        if !dir.is_dir() {
            let partial = PathBuf::from(format!("{}.partial", dir.display()));
            let detail = if partial.is_dir() {
                format!(
                    "not found, but {} exists: a save into it did not finish; it cannot be \
                     restored (remove it)",
                    partial.display()
                )
            } else {
                "not found or not a directory".to_string()
            };
            return Err(ImageError::NotAnImage {
                dir: dir.to_path_buf(),
                detail,
            });
        }
        let mpath = dir.join(MANIFEST_FILE);
        if !mpath.exists() {
            return Err(ImageError::NotAnImage {
                dir: dir.to_path_buf(),
                detail: format!(
                    "no {MANIFEST_FILE}: the image is incomplete (its save did not finish) or \
                     this is not a ferroclone image"
                ),
            });
        }
        let bytes = read_file_limited(&mpath, MAX_MANIFEST_BYTES)?;
        let image = Image::parse(dir, &bytes)?;
        let spath = dir.join(MANIFEST_SHA_FILE);
        let line = read_file_limited(&spath, 4096)?;
        let want = String::from_utf8_lossy(&line)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let have = hex(&Sha256::digest(&bytes));
        if want != have {
            return Err(corrupt(
                &mpath,
                format!(
                    "SHA-256 {have}, {MANIFEST_SHA_FILE} says {want}: the manifest was altered"
                ),
            ));
        }
        Ok(image)
    }

    /// SHA-256 of the manifest as recorded in `manifest.sha256`.
    pub fn manifest_sha256(&self) -> String {
        std::fs::read_to_string(self.dir.join(MANIFEST_SHA_FILE))
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_string))
            .unwrap_or_default()
    }

    /// Parses and checks manifest bytes as if read from `dir/manifest.json` (no other file is
    /// read).
    pub fn parse(dir: &Path, bytes: &[u8]) -> Result<Image, ImageError> {
        let mpath = dir.join(MANIFEST_FILE);
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            corrupt(
                &mpath,
                format!("not valid JSON ({e}); the manifest is damaged or truncated"),
            )
        })?;
        if value.get("format").and_then(|v| v.as_str()) != Some(FORMAT_NAME) {
            return Err(corrupt(
                &mpath,
                "not a ferroclone manifest (no \"format\": \"ferroclone-image\")",
            ));
        }
        let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        if version != u64::from(VERSION) {
            return Err(corrupt(
                &mpath,
                format!(
                    "format version {version}; this build of ferroclone reads version {VERSION}"
                ),
            ));
        }
        let manifest: Manifest = serde_json::from_value(value)
            .map_err(|e| corrupt(&mpath, format!("invalid manifest: {e}")))?;
        let image = Image {
            dir: dir.to_path_buf(),
            manifest,
        };
        image.check_manifest()?;
        Ok(image)
    }

    fn mpath(&self) -> PathBuf {
        self.dir.join(MANIFEST_FILE)
    }

    /// Field checks that need no other file.
    fn check_manifest(&self) -> Result<(), ImageError> {
        let m = &self.manifest;
        let mp = self.mpath();
        let disk_len = m.source.size_bytes;
        for s in &m.streams {
            if !valid_file_name(&s.name) {
                return Err(corrupt(
                    &mp,
                    format!("stream name {:?} is not allowed", s.name),
                ));
            }
            for f in s.volumes.iter().chain([&s.map, &s.index]) {
                if !valid_file_name(&f.file) {
                    return Err(corrupt(
                        &mp,
                        format!("file name {:?} is not allowed", f.file),
                    ));
                }
            }
            if s.block_size == 0 || s.block_size > MAX_BLOCK_SIZE {
                return Err(corrupt(
                    &mp,
                    format!("stream {}: block size {}", s.name, s.block_size),
                ));
            }
            if s.base.checked_add(s.length).is_none_or(|e| e > disk_len) {
                return Err(corrupt(
                    &mp,
                    format!(
                        "stream {} covers bytes beyond the source disk's size",
                        s.name
                    ),
                ));
            }
        }
        for p in &m.partitions {
            let Some(src) = m.source_partition(p.number) else {
                return Err(corrupt(
                    &mp,
                    format!("partition {} is not in the source table", p.number),
                ));
            };
            let Some(s) = m.stream(&p.stream) else {
                return Err(corrupt(
                    &mp,
                    format!("partition {}: no stream {:?}", p.number, p.stream),
                ));
            };
            if s.base != src.start_bytes || s.length != src.size_bytes {
                return Err(corrupt(
                    &mp,
                    format!(
                        "partition {}: stream {} does not match its place on the disk",
                        p.number, s.name
                    ),
                ));
            }
        }
        if m.stream("disk").is_none() && m.source.table != "none" {
            return Err(corrupt(
                &mp,
                "no \"disk\" stream with the boot area and partition tables",
            ));
        }
        Ok(())
    }

    /// Checks one stream's files without reading its volumes' contents: present, sized as
    /// recorded; map and index decoded, checksummed and consistent with the volumes.
    pub fn load_stream(&self, info: &StreamInfo) -> Result<LoadedStream, ImageError> {
        let map_path = self.dir.join(&info.map.file);
        let map_bytes = read_file_limited(&map_path, 1 << 32)?;
        check_ref(&map_path, &info.map, &map_bytes)?;
        let map =
            decode_map(&map_bytes, info.length).map_err(|e| corrupt(&map_path, e.to_string()))?;
        let idx_path = self.dir.join(&info.index.file);
        let idx_bytes = read_file_limited(&idx_path, 1 << 32)?;
        check_ref(&idx_path, &info.index, &idx_bytes)?;
        let index = decode_index(&idx_bytes).map_err(|e| corrupt(&idx_path, e.to_string()))?;
        let bs = u64::from(info.block_size);
        let expect_blocks = map.total().div_ceil(bs);
        if u64_of(index.len()) != expect_blocks || info.blocks != expect_blocks {
            return Err(corrupt(
                &idx_path,
                format!(
                    "{} blocks listed, the map needs {expect_blocks}",
                    index.len()
                ),
            ));
        }
        for f in &info.volumes {
            let p = self.dir.join(&f.file);
            let meta =
                std::fs::metadata(&p).map_err(|_| ImageError::Missing { file: p.clone() })?;
            if meta.len() != f.size {
                return Err(corrupt(
                    &p,
                    format!(
                        "{} bytes, the manifest says {}: the volume is truncated or not the one this image wrote",
                        meta.len(),
                        f.size
                    ),
                ));
            }
        }
        let mut next_offset = vec![0u64; info.volumes.len()];
        for (i, e) in index.iter().enumerate() {
            let i = u64_of(i);
            // Every block is `bs` long but the last, which holds what is left.
            let want_len = if i.saturating_add(1) == expect_blocks {
                map.total().saturating_sub(i.saturating_mul(bs))
            } else {
                bs
            };
            if u64::from(e.len) != want_len {
                return Err(corrupt(
                    &idx_path,
                    format!("block {i}: length {} instead of {want_len}", e.len),
                ));
            }
            if e.encoding == Encoding::Zero {
                continue;
            }
            let Some(next) = usize::try_from(e.volume)
                .ok()
                .and_then(|v| next_offset.get_mut(v))
            else {
                return Err(corrupt(
                    &idx_path,
                    format!("block {i}: volume {} does not exist", e.volume),
                ));
            };
            if e.offset != *next {
                return Err(corrupt(
                    &idx_path,
                    format!("block {i}: offset {:#x}, expected {:#x}", e.offset, *next),
                ));
            }
            *next = e
                .offset
                .saturating_add(u64_of(RECORD_HEADER_LEN))
                .saturating_add(u64::from(e.stored_len));
        }
        for (n, f) in next_offset.iter().zip(&info.volumes) {
            if *n != f.size {
                return Err(corrupt(
                    &self.dir.join(&f.file),
                    format!("the index accounts for {n} bytes of {}", f.size),
                ));
            }
        }
        Ok(LoadedStream {
            info: info.clone(),
            map,
            index,
        })
    }

    /// Checks every stream's structure (see [`Image::load_stream`]).
    pub fn load_all(&self) -> Result<Vec<LoadedStream>, ImageError> {
        self.manifest
            .streams
            .iter()
            .map(|s| self.load_stream(s))
            .collect()
    }
}

fn check_ref(path: &Path, r: &FileRef, bytes: &[u8]) -> Result<(), ImageError> {
    if u64_of(bytes.len()) != r.size {
        return Err(corrupt(
            path,
            format!("{} bytes, the manifest says {}", bytes.len(), r.size),
        ));
    }
    let crc = crc32fast::hash(bytes);
    if crc != r.crc32 {
        return Err(corrupt(
            path,
            format!("CRC32 {crc:#010x}, the manifest says {:#010x}", r.crc32),
        ));
    }
    let sha = hex(&Sha256::digest(bytes));
    if sha != r.sha256 {
        return Err(corrupt(
            path,
            format!("SHA-256 {sha}, the manifest says {}", r.sha256),
        ));
    }
    Ok(())
}

/// A block as read from a volume, not yet decoded.
#[derive(Debug)]
pub struct RawBlock {
    /// Block number.
    pub block: u64,
    /// Its index entry.
    pub entry: IndexEntry,
    /// The payload (empty for zero blocks).
    pub payload: Vec<u8>,
    /// Volume file it came from.
    pub file: PathBuf,
}

/// The volume being read: index, reader, path, bytes read, running checksums.
type OpenVolume = (
    usize,
    BufReader<File>,
    PathBuf,
    u64,
    (crc32fast::Hasher, Sha256),
);

/// Reads a stream's blocks in order, checking each record header against the index and each
/// volume's whole-file CRC32 at its end.
pub struct BlockStream<'a> {
    dir: &'a Path,
    stream: &'a LoadedStream,
    next: usize,
    volume: Option<OpenVolume>,
}

impl<'a> BlockStream<'a> {
    /// A reader over `stream` of the image in `dir`.
    pub fn new(dir: &'a Path, stream: &'a LoadedStream) -> BlockStream<'a> {
        BlockStream {
            dir,
            stream,
            next: 0,
            volume: None,
        }
    }

    fn finish_volume(&mut self) -> Result<(), ImageError> {
        if let Some((vi, _, path, pos, (crc, sha))) = self.volume.take() {
            let Some(r) = self.stream.info.volumes.get(vi) else {
                return Err(corrupt(&path, "volume out of range"));
            };
            if pos != r.size {
                return Err(corrupt(&path, format!("read {pos} bytes of {}", r.size)));
            }
            let crc = crc.finalize();
            if crc != r.crc32 {
                return Err(corrupt(
                    &path,
                    format!(
                        "whole-volume CRC32 {crc:#010x}, the manifest says {:#010x}",
                        r.crc32
                    ),
                ));
            }
            let sha = hex(&sha.finalize());
            if sha != r.sha256 {
                return Err(corrupt(
                    &path,
                    format!(
                        "whole-volume SHA-256 {sha}, the manifest says {}: the volume was \
                         altered or swapped",
                        r.sha256
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The next block, or `None` at the end (after the last volume's CRC was checked).
    pub fn next_block(&mut self) -> Result<Option<RawBlock>, ImageError> {
        let Some(&entry) = self.stream.index.get(self.next) else {
            self.finish_volume()?;
            return Ok(None);
        };
        let block = u64_of(self.next);
        self.next = self.next.saturating_add(1);
        let info = &self.stream.info;
        if entry.encoding == Encoding::Zero {
            return Ok(Some(RawBlock {
                block,
                entry,
                payload: Vec::new(),
                file: PathBuf::new(),
            }));
        }
        let vi = usize::try_from(entry.volume).unwrap_or(usize::MAX);
        if self.volume.as_ref().map(|v| v.0) != Some(vi) {
            self.finish_volume()?;
            let r = info
                .volumes
                .get(vi)
                .ok_or_else(|| corrupt(self.dir, "volume out of range"))?;
            let path = self.dir.join(&r.file);
            let f = File::open(&path).map_err(|e| ImageError::Io {
                op: "opening",
                file: path.clone(),
                source: e,
            })?;
            self.volume = Some((
                vi,
                BufReader::with_capacity(256 << 10, f),
                path,
                0,
                (crc32fast::Hasher::new(), Sha256::new()),
            ));
        }
        let Some((_, reader, path, pos, hasher)) = self.volume.as_mut() else {
            return Err(corrupt(self.dir, "internal: no volume open"));
        };
        let bad = |detail: String, path: &Path| ImageError::BadBlock {
            stream: info.name.clone(),
            block,
            file: path.to_path_buf(),
            offset: entry.offset,
            range_start: block.saturating_mul(u64::from(info.block_size)),
            range_end: block
                .saturating_mul(u64::from(info.block_size))
                .saturating_add(u64::from(entry.len)),
            detail,
        };
        let mut h = [0u8; RECORD_HEADER_LEN];
        reader
            .read_exact(&mut h)
            .map_err(|e| bad(format!("reading the record header: {e}"), path))?;
        hasher.0.update(&h);
        hasher.1.update(h);
        *pos = pos.saturating_add(u64_of(RECORD_HEADER_LEN));
        let rec = RecordHeader::decode(&h, entry.offset).map_err(|e| bad(e.to_string(), path))?;
        if rec.block != block
            || rec.len != entry.len
            || rec.stored_len != entry.stored_len
            || rec.crc != entry.crc
            || rec.encoding != entry.encoding
        {
            return Err(bad(
                format!(
                    "the record is block {} of a stream, not the one the index expects; \
                     volumes swapped or reordered?",
                    rec.block
                ),
                path,
            ));
        }
        // stored_len is at most MAX_BLOCK_SIZE (checked when the index was decoded).
        let mut payload = vec![0u8; usize::try_from(entry.stored_len).unwrap_or(0)];
        reader
            .read_exact(&mut payload)
            .map_err(|e| bad(format!("reading the payload: {e}"), path))?;
        hasher.0.update(&payload);
        hasher.1.update(&payload);
        *pos = pos.saturating_add(u64::from(entry.stored_len));
        Ok(Some(RawBlock {
            block,
            entry,
            payload,
            file: path.clone(),
        }))
    }
}

/// Decodes a block into `out` (resized to its length) and checks its CRC32.
pub fn decode_block(
    stream: &StreamInfo,
    raw: &RawBlock,
    out: &mut Vec<u8>,
) -> Result<(), ImageError> {
    // len is at most MAX_BLOCK_SIZE (checked when the index was decoded).
    let len = usize::try_from(raw.entry.len).unwrap_or(0);
    // Every encoding overwrites all `len` bytes (zero blocks are filled below), so a reused
    // buffer is not cleared first.
    out.resize(len, 0);
    let bs = u64::from(stream.block_size);
    let bad = |detail: String| ImageError::BadBlock {
        stream: stream.name.clone(),
        block: raw.block,
        file: raw.file.clone(),
        offset: raw.entry.offset,
        range_start: raw.block.saturating_mul(bs),
        range_end: raw.block.saturating_mul(bs).saturating_add(u64_of(len)),
        detail,
    };
    match raw.entry.encoding {
        Encoding::Zero => out.fill(0),
        Encoding::Stored => {
            if raw.payload.len() != len {
                return Err(bad(format!(
                    "stored block of {} bytes, expected {len}",
                    raw.payload.len()
                )));
            }
            out.copy_from_slice(&raw.payload);
        }
        Encoding::Lz4 => {
            let n = lz4_flex::block::decompress_into(&raw.payload, out)
                .map_err(|e| bad(format!("LZ4 data damaged: {e}")))?;
            if n != len {
                return Err(bad(format!("decompressed to {n} bytes, expected {len}")));
            }
        }
    }
    let crc = crc32fast::hash(out);
    if crc != raw.entry.crc {
        return Err(bad(format!(
            "CRC32 mismatch: stored {:#010x}, computed {crc:#010x}",
            raw.entry.crc
        )));
    }
    Ok(())
}
