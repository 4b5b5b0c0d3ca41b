//! Reading other tools' images: Clonezilla / Rescuezilla image directories and the partclone
//! images inside them (shared/reference/peers.md §3). Nothing here writes a disk: `clonezilla`
//! opens and checks a directory and describes the disk it holds (table sectors, partitions,
//! where each partition's data comes from), `source` streams a partition's used bytes with
//! every checksum checked, and the engine (`engine::restore`, `engine::verify`,
//! `engine::convert`) does the writing, as for native images.

pub mod clonezilla;
pub mod ntfsclone;
pub mod partclone;
pub mod pieces;
pub mod source;

use std::path::{Path, PathBuf};

/// Errors reading a foreign image; each names the file and, where it matters, the offset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
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
    /// A file the image needs is missing.
    #[error("missing {}: {detail}", file.display())]
    Missing {
        /// Which file.
        file: PathBuf,
        /// What it is for.
        detail: String,
    },
    /// A file is damaged.
    #[error("{}: {detail}", file.display())]
    Corrupt {
        /// Which file.
        file: PathBuf,
        /// What and where.
        detail: String,
    },
    /// A valid image this build does not read.
    #[error("{}: {detail}", file.display())]
    Unsupported {
        /// Which file.
        file: PathBuf,
        /// What is not supported, and what to do.
        detail: String,
    },
}

impl ImportError {
    pub(crate) fn io(op: &'static str, file: &Path, source: std::io::Error) -> ImportError {
        ImportError::Io {
            op,
            file: file.to_path_buf(),
            source,
        }
    }

    /// True for damage or missing pieces (exit code 3 from verify), false otherwise.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            ImportError::Missing { .. } | ImportError::Corrupt { .. }
        )
    }
}
