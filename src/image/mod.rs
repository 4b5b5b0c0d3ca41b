//! The image: a directory holding a manifest, and per stream a map, an index and volumes.
//! docs/FORMAT.md specifies it.

pub mod format;
pub mod manifest;
pub mod reader;
pub mod writer;

use std::path::PathBuf;

pub use manifest::Manifest;

/// Errors reading or writing an image; every one names the file and, where it matters, the
/// byte offset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// I/O on an image file.
    #[error("{op} {}: {source}", file.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// Which file.
        file: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The repository is full.
    #[error("repository full while writing {} at byte {offset:#x}: up to {needed} more bytes of data to store (before compression), {free} bytes free; the partial image was removed", file.display())]
    Full {
        /// Which file.
        file: PathBuf,
        /// Offset in it.
        offset: u64,
        /// Bytes still to write (estimate).
        needed: u64,
        /// Bytes free.
        free: u64,
    },
    /// A file is missing.
    #[error("missing {}: the image is incomplete or damaged", file.display())]
    Missing {
        /// Which file.
        file: PathBuf,
    },
    /// Structure damage in a file.
    #[error("{}: {detail}", file.display())]
    Corrupt {
        /// Which file.
        file: PathBuf,
        /// What and where.
        detail: String,
    },
    /// A block's data does not match its checksum.
    #[error("{}: block {block} of stream {stream} (bytes {range_start:#x}..{range_end:#x} of the stream) at byte {offset:#x}: {detail}", file.display())]
    BadBlock {
        /// Stream name.
        stream: String,
        /// Block number.
        block: u64,
        /// Volume file.
        file: PathBuf,
        /// Offset of its record.
        offset: u64,
        /// First stream byte.
        range_start: u64,
        /// One past the last stream byte.
        range_end: u64,
        /// What is wrong.
        detail: String,
    },
    /// The image is not complete (no manifest) or not an image.
    #[error("{}: {detail}", dir.display())]
    NotAnImage {
        /// The directory.
        dir: PathBuf,
        /// Why.
        detail: String,
    },
}

impl ImageError {
    /// True for damage (exit code 3 from verify), false for I/O trouble.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            ImageError::Missing { .. } | ImageError::Corrupt { .. } | ImageError::BadBlock { .. }
        )
    }
}
