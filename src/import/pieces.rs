//! A data file of a Clonezilla image: one file, or pieces `NAME.aa`, `NAME.ab`, … made by
//! `split -a 2` (3 letters on WebDAV) that are read as one stream in order, then decompressed
//! by what its first bytes say (gzip, zstd, lz4 frame, xz, lzma, bzip2, or none).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::import::ImportError;

/// The pieces of one data file, in order, with their sizes.
#[derive(Debug, Clone)]
pub struct Pieces {
    /// Files in reading order.
    pub files: Vec<(PathBuf, u64)>,
}

/// Most pieces accepted (26³, the 3-letter suffix space).
const MAX_PIECES: usize = 26 * 26 * 26;

fn suffix_index(s: &str) -> Option<usize> {
    if !(2..=3).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    Some(
        s.bytes()
            .fold(0usize, |acc, b| acc * 26 + usize::from(b - b'a')),
    )
}

fn suffix_name(mut i: usize, len: usize) -> String {
    let mut v = vec![b'a'; len];
    for slot in v.iter_mut().rev() {
        *slot = b'a' + (i % 26) as u8;
        i /= 26;
    }
    String::from_utf8(v).unwrap_or_default()
}

impl Pieces {
    /// Finds `dir/name`, or its pieces `dir/name.aa`, `.ab`, …; every piece up to the last
    /// one present must exist.
    pub fn find(dir: &Path, name: &str) -> Result<Pieces, ImportError> {
        let whole = dir.join(name);
        if whole.is_file() {
            let size = std::fs::metadata(&whole)
                .map_err(|e| ImportError::io("reading", &whole, e))?
                .len();
            return Ok(Pieces {
                files: vec![(whole, size)],
            });
        }
        let prefix = format!("{name}.");
        let mut found: Vec<(usize, usize, PathBuf)> = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| ImportError::io("listing", dir, e))?;
        for e in entries {
            let e = e.map_err(|e| ImportError::io("listing", dir, e))?;
            let fname = e.file_name();
            let Some(fname) = fname.to_str() else {
                continue;
            };
            let Some(suffix) = fname.strip_prefix(&prefix) else {
                continue;
            };
            if let Some(i) = suffix_index(suffix) {
                found.push((suffix.len(), i, e.path()));
            }
        }
        if found.is_empty() {
            return Err(ImportError::Missing {
                file: whole,
                detail: "neither the file nor its pieces (.aa, .ab, …) exist".into(),
            });
        }
        let len = found[0].0;
        if found.iter().any(|f| f.0 != len) {
            return Err(ImportError::Corrupt {
                file: whole,
                detail: "its pieces have suffixes of different lengths (.aa and .aaa)".into(),
            });
        }
        if found.len() > MAX_PIECES {
            return Err(ImportError::Corrupt {
                file: whole,
                detail: format!("{} pieces", found.len()),
            });
        }
        found.sort_by_key(|f| f.1);
        let mut files = Vec::with_capacity(found.len());
        for (want, (_, i, path)) in found.into_iter().enumerate() {
            if i != want {
                return Err(ImportError::Missing {
                    file: dir.join(format!("{name}.{}", suffix_name(want, len))),
                    detail: format!(
                        "piece {} of {name} is missing (the pieces after it exist)",
                        want + 1
                    ),
                });
            }
            let size = std::fs::metadata(&path)
                .map_err(|e| ImportError::io("reading", &path, e))?
                .len();
            files.push((path, size));
        }
        Ok(Pieces { files })
    }

    /// Total bytes of all pieces.
    pub fn total(&self) -> u64 {
        self.files.iter().map(|f| f.1).sum()
    }

    /// A name for messages: the first file, or `name.aa…ax`.
    pub fn describe(&self) -> String {
        match self.files.as_slice() {
            [] => String::new(),
            [(one, _)] => one.display().to_string(),
            [(first, _), .., (last, _)] => {
                let l = last
                    .extension()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default();
                format!("{} … .{l} ({} pieces)", first.display(), self.files.len())
            }
        }
    }

    /// Which piece holds byte `pos` of the concatenation, and the offset in it.
    pub fn locate(&self, pos: u64) -> (PathBuf, u64) {
        let mut at = 0u64;
        for (p, size) in &self.files {
            if pos < at + size {
                return (p.clone(), pos - at);
            }
            at += size;
        }
        match self.files.last() {
            Some((p, size)) => (p.clone(), *size),
            None => (PathBuf::new(), 0),
        }
    }
}

/// Reads the pieces one after another; counts bytes read for error messages.
pub struct Chain {
    pieces: Vec<(PathBuf, u64)>,
    next: usize,
    current: Option<BufReader<File>>,
    current_left: u64,
    pos: Arc<AtomicU64>,
    piece: Arc<AtomicUsize>,
}

impl Chain {
    /// A reader over `pieces`.
    pub fn new(pieces: &Pieces) -> Chain {
        Chain {
            pieces: pieces.files.clone(),
            next: 0,
            current: None,
            current_left: 0,
            pos: Arc::new(AtomicU64::new(0)),
            piece: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A shared counter of the bytes read so far (compressed bytes, across pieces).
    pub fn position(&self) -> Arc<AtomicU64> {
        self.pos.clone()
    }
}

impl Read for Chain {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(r) = self.current.as_mut() {
                let n = r.read(buf)?;
                if n > 0 {
                    self.current_left = self.current_left.saturating_sub(n as u64);
                    self.pos.fetch_add(n as u64, Ordering::Relaxed);
                    return Ok(n);
                }
                if self.current_left != 0 {
                    let p = &self.pieces[self.next - 1].0;
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{} is shorter than when the image was opened", p.display()),
                    ));
                }
                self.current = None;
            }
            let Some((path, size)) = self.pieces.get(self.next) else {
                return Ok(0);
            };
            let f = File::open(path).map_err(|e| {
                io::Error::new(e.kind(), format!("opening {}: {e}", path.display()))
            })?;
            self.current = Some(BufReader::with_capacity(1 << 20, f));
            self.current_left = *size;
            self.piece.store(self.next, Ordering::Relaxed);
            self.next += 1;
        }
    }
}

/// Compression of a data file, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Stored as is.
    None,
    /// gzip / pigz (several members are read as one stream).
    Gzip,
    /// zstd / zstdmt (several frames).
    Zstd,
    /// lz4 frame format.
    Lz4,
    /// xz (several streams).
    Xz,
    /// The legacy `.lzma` format.
    Lzma,
    /// bzip2 / lbzip2 / pbzip2.
    Bzip2,
}

impl Compression {
    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
            Compression::Xz => "xz",
            Compression::Lzma => "lzma",
            Compression::Bzip2 => "bzip2",
        }
    }

    /// Detects the compression from the first bytes of a file; refuses the formats that are
    /// recognised but not read (lzop, lzip, lrzip).
    pub fn detect(head: &[u8]) -> Result<Compression, String> {
        let starts = |m: &[u8]| head.starts_with(m);
        if starts(&[0x1f, 0x8b]) {
            Ok(Compression::Gzip)
        } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Ok(Compression::Zstd)
        } else if starts(&[0x04, 0x22, 0x4d, 0x18]) {
            Ok(Compression::Lz4)
        } else if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Ok(Compression::Xz)
        } else if starts(b"BZh") {
            Ok(Compression::Bzip2)
        } else if starts(&[0x89, b'L', b'Z', b'O']) {
            Err(
                "lzop compression (Clonezilla -z3) is not supported; decompress the pieces with \
                 `cat NAME.* | lzop -dc > NAME` first"
                    .into(),
            )
        } else if starts(b"LZIP") {
            Err(
                "lzip compression (Clonezilla -z6) is not supported; decompress the pieces with \
                 `cat NAME.* | lzip -dc > NAME` first"
                    .into(),
            )
        } else if starts(b"LRZI") {
            Err("lrzip compression (Clonezilla -z7) is not supported".into())
        } else if head.len() >= 13
            && head[0] <= 224
            && crate::bytes::le32(head, 1).is_some_and(|d| d >= 4096)
            && head[5..13].iter().all(|&b| b == 0xff)
        {
            Ok(Compression::Lzma)
        } else {
            Ok(Compression::None)
        }
    }
}

/// A decompressed data stream with what is needed to say where a failure happened.
pub struct Stream {
    /// The decompressed bytes.
    pub reader: Box<dyn Read + Send>,
    /// How it was compressed.
    pub compression: Compression,
    /// Compressed bytes consumed so far.
    pub consumed: Arc<AtomicU64>,
    /// The pieces.
    pub pieces: Pieces,
}

impl Stream {
    /// Where the compressed reading has got to, for messages: "piece X near byte N".
    pub fn whereabouts(&self) -> String {
        let pos = self.consumed.load(Ordering::Relaxed);
        let (file, off) = self.pieces.locate(pos.saturating_sub(1));
        if self.compression == Compression::None {
            format!("{} at byte {off:#x}", file.display())
        } else {
            format!(
                "{} ({}), having read up to byte {off:#x} of it",
                file.display(),
                self.compression.name()
            )
        }
    }
}

/// Opens the pieces as one decompressed stream.
pub fn open(pieces: &Pieces) -> Result<Stream, ImportError> {
    let Some((first, _)) = pieces.files.first() else {
        return Err(ImportError::Missing {
            file: PathBuf::new(),
            detail: "no pieces".into(),
        });
    };
    let mut head = [0u8; 16];
    let n = {
        let mut f = File::open(first).map_err(|e| ImportError::io("opening", first, e))?;
        let mut got = 0;
        while got < head.len() {
            match f.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ImportError::io("reading", first, e)),
            }
        }
        got
    };
    let compression =
        Compression::detect(&head[..n]).map_err(|detail| ImportError::Unsupported {
            file: first.clone(),
            detail,
        })?;
    let chain = Chain::new(pieces);
    let consumed = chain.position();
    let reader: Box<dyn Read + Send> = match compression {
        Compression::None => Box::new(chain),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(chain))),
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(chain)
                .map_err(|e| ImportError::io("starting zstd on", first, e))?;
            // Clonezilla's zstd uses long windows with -T0 at high levels.
            d.window_log_max(31)
                .map_err(|e| ImportError::io("starting zstd on", first, e))?;
            Box::new(d)
        }
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(BufReader::new(chain))),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(chain)),
        Compression::Lzma => {
            let stream = liblzma::stream::Stream::new_lzma_decoder(u64::MAX)
                .map_err(|e| ImportError::io("starting lzma on", first, e.into()))?;
            Box::new(liblzma::read::XzDecoder::new_stream(chain, stream))
        }
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(chain)),
    };
    Ok(Stream {
        reader,
        compression,
        consumed,
        pieces: pieces.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes() {
        assert_eq!(suffix_index("aa"), Some(0));
        assert_eq!(suffix_index("ab"), Some(1));
        assert_eq!(suffix_index("ba"), Some(26));
        assert_eq!(suffix_index("aaa"), Some(0));
        assert_eq!(suffix_index("a"), None);
        assert_eq!(suffix_index("aB"), None);
        assert_eq!(suffix_index("gz"), Some(6 * 26 + 25));
        assert_eq!(suffix_name(27, 2), "bb");
        assert_eq!(suffix_name(0, 3), "aaa");
    }

    #[test]
    fn finds_pieces_in_order_and_names_the_missing_one() {
        let d = tempfile::tempdir().unwrap();
        for (s, body) in [("aa", "one"), ("ab", "two"), ("ac", "three")] {
            std::fs::write(d.path().join(format!("x.gz.{s}")), body).unwrap();
        }
        let p = Pieces::find(d.path(), "x.gz").unwrap();
        assert_eq!(p.files.len(), 3);
        assert_eq!(p.total(), 11);
        let mut all = String::new();
        Chain::new(&p).read_to_string(&mut all).unwrap();
        assert_eq!(all, "onetwothree");
        assert_eq!(p.locate(4).1, 1);
        std::fs::remove_file(d.path().join("x.gz.ab")).unwrap();
        let e = Pieces::find(d.path(), "x.gz").unwrap_err().to_string();
        assert!(e.contains("x.gz.ab") && e.contains("missing"), "{e}");
        let e = Pieces::find(d.path(), "y.gz").unwrap_err().to_string();
        assert!(e.contains("y.gz"), "{e}");
    }

    #[test]
    fn detects_compressions() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Ok(Compression::Gzip));
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Ok(Compression::Zstd)
        );
        assert_eq!(
            Compression::detect(b"partclone-image\0"),
            Ok(Compression::None)
        );
        assert_eq!(Compression::detect(b""), Ok(Compression::None));
        assert!(Compression::detect(b"\x89LZO\0").is_err());
        assert!(Compression::detect(b"LZIP").is_err());
    }
}
