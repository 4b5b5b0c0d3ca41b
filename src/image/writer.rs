//! Writing streams: blocks are encoded on worker threads ([`encode_block`]) and appended in
//! order by one [`StreamWriter`], which splits them into volumes and writes the map and index.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::fs::Extents;
use crate::image::format::{
    encode_index, encode_map, Encoding, IndexEntry, RecordHeader, RECORD_HEADER_LEN,
};
use crate::image::manifest::{FileRef, Manifest, StreamInfo, MANIFEST_FILE, MANIFEST_SHA_FILE};
use crate::image::ImageError;
use sha2::{Digest, Sha256};

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A block ready to be written.
#[derive(Debug)]
pub struct Encoded {
    /// How the payload is kept.
    pub encoding: Encoding,
    /// Uncompressed length.
    pub len: u32,
    /// CRC32 of the uncompressed bytes.
    pub crc: u32,
    /// The buffer holding the payload in its first `payload_len` bytes (a compression buffer
    /// keeps its full length, so that reusing it never zero-fills it again).
    pub payload: Vec<u8>,
    /// Length of the payload (0 for zero blocks).
    pub payload_len: usize,
}

impl Encoded {
    /// The bytes to store.
    pub fn bytes(&self) -> &[u8] {
        self.payload
            .get(..self.payload_len)
            .unwrap_or(&self.payload)
    }
}

/// Encodes one block: all-zero → a hole, else LZ4, else stored when LZ4 does not gain.
pub fn encode_block(data: &[u8]) -> Encoded {
    let (enc, _) = encode_block_owned(data.to_vec(), Vec::new());
    enc
}

/// Encodes `data`, compressing into `scratch`; returns the encoded block and whichever buffer
/// it did not keep, for reuse (the pipeline recycles buffers instead of allocating per block).
pub fn encode_block_owned(data: Vec<u8>, mut scratch: Vec<u8>) -> (Encoded, Vec<u8>) {
    let len = data.len() as u32;
    let crc = crc32fast::hash(&data);
    if is_zero(&data) {
        let enc = Encoded {
            encoding: Encoding::Zero,
            len,
            crc,
            payload: Vec::new(),
            payload_len: 0,
        };
        return (enc, data);
    }
    let need = lz4_flex::block::get_maximum_output_size(data.len());
    if scratch.len() < need {
        scratch.resize(need, 0);
    }
    match lz4_flex::block::compress_into(&data, &mut scratch) {
        Ok(n) if n < data.len() => {
            let enc = Encoded {
                encoding: Encoding::Lz4,
                len,
                crc,
                payload: scratch,
                payload_len: n,
            };
            (enc, data)
        }
        _ => {
            let payload_len = data.len();
            let enc = Encoded {
                encoding: Encoding::Stored,
                len,
                crc,
                payload: data,
                payload_len,
            };
            (enc, scratch)
        }
    }
}

/// True when every byte is zero (compared 16 bytes at a time).
pub fn is_zero(data: &[u8]) -> bool {
    let mut chunks = data.chunks_exact(16);
    chunks.all(|c| c == [0u8; 16]) && chunks.remainder().iter().all(|&b| b == 0)
}

struct Volume {
    out: BufWriter<File>,
    path: PathBuf,
    name: String,
    written: u64,
    /// Bytes handed to the kernel for writeback so far.
    flushed: u64,
    hasher: crc32fast::Hasher,
    sha: Sha256,
}

/// Writeback is started every this many bytes, so the final fsync has little left to do and
/// dirty pages do not pile up in memory.
const WRITEBACK_EVERY: u64 = 32 << 20;

/// Appends a stream's blocks, in order, to volume files `<name>.000`, `<name>.001`, …
pub struct StreamWriter {
    dir: PathBuf,
    name: String,
    volume_size: u64,
    current: Option<Volume>,
    volumes: Vec<FileRef>,
    entries: Vec<IndexEntry>,
    image_bytes: u64,
}

fn write_err(file: &Path, offset: u64, e: std::io::Error, remaining: u64) -> ImageError {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        let free = nix::sys::statvfs::statvfs(file.parent().unwrap_or(Path::new(".")))
            .map(|s| s.blocks_available() * s.fragment_size())
            .unwrap_or(0);
        ImageError::Full {
            file: file.to_path_buf(),
            offset,
            needed: remaining,
            free,
        }
    } else {
        ImageError::Io {
            op: "writing",
            file: file.to_path_buf(),
            source: e,
        }
    }
}

impl StreamWriter {
    /// A writer for stream `name` in `dir`.
    pub fn new(dir: &Path, name: &str, volume_size: u64) -> StreamWriter {
        StreamWriter {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            volume_size,
            current: None,
            volumes: Vec::new(),
            entries: Vec::new(),
            image_bytes: 0,
        }
    }

    fn open_volume(&mut self) -> Result<(), ImageError> {
        let name = format!("{}.{:03}", self.name, self.volumes.len());
        let path = self.dir.join(&name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| ImageError::Io {
                op: "creating",
                file: path.clone(),
                source: e,
            })?;
        self.current = Some(Volume {
            // Smaller than a block: full payloads go straight to write(2) instead of being copied
            // into the buffer first; headers and small payloads are gathered.
            out: BufWriter::with_capacity(256 << 10, file),
            path,
            name,
            written: 0,
            flushed: 0,
            hasher: crc32fast::Hasher::new(),
            sha: Sha256::new(),
        });
        Ok(())
    }

    fn close_volume(&mut self) -> Result<(), ImageError> {
        if let Some(mut v) = self.current.take() {
            let written = v.written;
            v.out
                .flush()
                .map_err(|e| write_err(&v.path, written, e, 0))?;
            let file = v.out.into_inner().map_err(|e| ImageError::Io {
                op: "flushing",
                file: v.path.clone(),
                source: e.into_error(),
            })?;
            file.sync_all()
                .map_err(|e| write_err(&v.path, written, e, 0))?;
            self.volumes.push(FileRef {
                file: v.name,
                size: v.written,
                crc32: v.hasher.finalize(),
                sha256: hex(&v.sha.finalize()),
            });
        }
        Ok(())
    }

    /// Appends block number `block` (blocks must come in order, from 0).
    /// `remaining` is an estimate of the bytes still to come, for a "repository full" error.
    pub fn push(&mut self, block: u64, enc: &Encoded, remaining: u64) -> Result<(), ImageError> {
        debug_assert_eq!(block, self.entries.len() as u64);
        if enc.encoding == Encoding::Zero {
            self.entries.push(IndexEntry {
                encoding: Encoding::Zero,
                len: enc.len,
                stored_len: 0,
                crc: enc.crc,
                volume: 0,
                offset: 0,
            });
            return Ok(());
        }
        let payload = enc.bytes();
        let rec_len = (RECORD_HEADER_LEN + payload.len()) as u64;
        let roll = match &self.current {
            None => true,
            Some(v) => v.written > 0 && v.written + rec_len > self.volume_size,
        };
        if roll {
            self.close_volume()?;
            self.open_volume()?;
        }
        let volume = self.volumes.len() as u32;
        let Some(v) = self.current.as_mut() else {
            return Err(ImageError::Corrupt {
                file: self.dir.clone(),
                detail: "internal: no open volume".into(),
            });
        };
        let header = RecordHeader {
            encoding: enc.encoding,
            block,
            len: enc.len,
            stored_len: payload.len() as u32,
            crc: enc.crc,
        }
        .encode();
        let offset = v.written;
        v.out
            .write_all(&header)
            .and_then(|()| v.out.write_all(payload))
            .map_err(|e| write_err(&v.path, offset, e, remaining))?;
        v.hasher.update(&header);
        v.hasher.update(payload);
        v.sha.update(header);
        v.sha.update(payload);
        v.written += rec_len;
        let in_file = v.written - v.out.buffer().len() as u64;
        if in_file >= v.flushed + WRITEBACK_EVERY {
            crate::disk::ioctl::start_writeback(v.out.get_ref(), v.flushed, in_file - v.flushed);
            v.flushed = in_file;
        }
        self.image_bytes += rec_len;
        self.entries.push(IndexEntry {
            encoding: enc.encoding,
            len: enc.len,
            stored_len: payload.len() as u32,
            crc: enc.crc,
            volume,
            offset,
        });
        Ok(())
    }

    /// Closes the last volume and writes the map and index files, all synced to disk.
    pub fn finish(
        mut self,
        map: &Extents,
        base: u64,
        length: u64,
        block_size: u32,
    ) -> Result<StreamInfo, ImageError> {
        self.close_volume()?;
        let map_ref = write_small(&self.dir, &format!("{}.map", self.name), &encode_map(map))?;
        let index_ref = write_small(
            &self.dir,
            &format!("{}.idx", self.name),
            &encode_index(&self.entries),
        )?;
        Ok(StreamInfo {
            name: self.name,
            base,
            length,
            block_size,
            stored_bytes: map.total(),
            image_bytes: self.image_bytes,
            blocks: self.entries.len() as u64,
            map: map_ref,
            index: index_ref,
            volumes: self.volumes,
        })
    }
}

/// Completes an image directory: writes `manifest.json` (after every other file, which the
/// caller has synced) and its detached `manifest.sha256`, and syncs the directory.
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), ImageError> {
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| ImageError::Corrupt {
        file: dir.join(MANIFEST_FILE),
        detail: format!("encoding the manifest: {e}"),
    })?;
    sync_dir(dir);
    write_small(dir, MANIFEST_FILE, &json)?;
    let digest = hex(&Sha256::digest(&json));
    write_small(
        dir,
        MANIFEST_SHA_FILE,
        format!("{digest}  {MANIFEST_FILE}\n").as_bytes(),
    )?;
    sync_dir(dir);
    Ok(())
}

/// Syncs a directory's entries (advice: errors change nothing but durability).
pub fn sync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Writes a small file whole and syncs it.
pub fn write_small(dir: &Path, name: &str, data: &[u8]) -> Result<FileRef, ImageError> {
    let path = dir.join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| ImageError::Io {
            op: "creating",
            file: path.clone(),
            source: e,
        })?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| write_err(&path, 0, e, data.len() as u64))?;
    Ok(FileRef {
        file: name.to_string(),
        size: data.len() as u64,
        crc32: crc32fast::hash(data),
        sha256: hex(&Sha256::digest(data)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 4097]));
        let mut v = vec![0u8; 4097];
        v[4096] = 1;
        assert!(!is_zero(&v));
        v[4096] = 0;
        v[17] = 1;
        assert!(!is_zero(&v));
        assert!(is_zero(&[]));
    }

    #[test]
    fn encode_picks_encoding() {
        assert_eq!(encode_block(&[0u8; 1000]).encoding, Encoding::Zero);
        assert_eq!(encode_block(&[7u8; 1000]).encoding, Encoding::Lz4);
        let noise: Vec<u8> = (0..1000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let e = encode_block(&noise);
        assert!(e.encoding == Encoding::Stored || e.bytes().len() < 1000);
    }
}
