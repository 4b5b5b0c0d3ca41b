//! The manifest: `manifest.json`, written last. Its presence is what makes an image complete.

use serde::{Deserialize, Serialize};

use crate::fs::FsKind;

/// The value of `format`.
pub const FORMAT_NAME: &str = "ferroclone-image";
/// The manifest's file name.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest's detached checksum, in `sha256sum` format (`sha256sum -c manifest.sha256`).
pub const MANIFEST_SHA_FILE: &str = "manifest.sha256";
/// Largest manifest a reader accepts.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// A file of the image with its expected size and checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Name inside the image directory (no path separators).
    pub file: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC32 of the whole file.
    pub crc32: u32,
    /// SHA-256 of the whole file, as hex: catches a swapped or altered file even when its
    /// CRCs were made to agree.
    pub sha256: String,
}

/// One data stream: the boot area and tables (`disk`) or one partition (`p1`, `p2`, …).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamInfo {
    /// `disk`, or `p<N>`.
    pub name: String,
    /// Disk byte offset that map offset 0 stands for (the partition start; 0 for `disk`).
    pub base: u64,
    /// Length of the region the map describes (partition size; disk size for `disk`).
    pub length: u64,
    /// Block size used to cut the stream.
    pub block_size: u32,
    /// Bytes of used data (the map's total).
    pub stored_bytes: u64,
    /// Bytes this stream takes in its volumes.
    pub image_bytes: u64,
    /// Number of blocks.
    pub blocks: u64,
    /// The used-extent map file.
    pub map: FileRef,
    /// The block index file.
    pub index: FileRef,
    /// The volume files, in order.
    pub volumes: Vec<FileRef>,
}

/// GPT geometry of the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GptInfo {
    /// Backup header LBA on the source.
    pub backup_lba: u64,
    /// First usable LBA.
    pub first_usable: u64,
    /// Last usable LBA.
    pub last_usable: u64,
    /// Primary partition array LBA.
    pub primary_entries_lba: u64,
    /// Number of array entries.
    pub num_entries: u32,
    /// Bytes per entry.
    pub entry_size: u32,
    /// `primary` or `backup`: which header the table was read from at save time.
    pub used_header: String,
}

impl From<&crate::disk::table::GptLayout> for GptInfo {
    fn from(g: &crate::disk::table::GptLayout) -> GptInfo {
        GptInfo {
            backup_lba: g.backup_lba,
            first_usable: g.first_usable,
            last_usable: g.last_usable,
            primary_entries_lba: g.primary_entries_lba,
            num_entries: g.num_entries,
            entry_size: g.entry_size,
            used_header: g.used_header.to_string(),
        }
    }
}

/// One partition as `inspect --json` shows it (the contract's shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionSummary {
    /// Partition number.
    pub number: u32,
    /// First byte.
    pub start_bytes: u64,
    /// Length.
    pub size_bytes: u64,
    /// Type GUID or MBR type byte.
    #[serde(rename = "type")]
    pub type_id: String,
    /// GPT name.
    pub name: String,
    /// Filesystem.
    pub fs: FsKind,
    /// Label.
    pub label: String,
    /// UUID or serial.
    pub uuid: String,
    /// Bytes a save reads for this partition.
    pub used_bytes: u64,
}

/// The source disk, as `inspect --json` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskSummary {
    /// Path it was read from.
    pub path: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Logical sector size.
    pub logical_sector_size: u32,
    /// Physical sector size.
    #[serde(default)]
    pub physical_sector_size: u32,
    /// Model (block devices).
    #[serde(default)]
    pub model: String,
    /// Serial (block devices).
    #[serde(default)]
    pub serial: String,
    /// `gpt`, `mbr` or `none`.
    pub table: String,
    /// GPT disk GUID or MBR signature.
    pub disk_id: Option<String>,
    /// Partitions.
    pub partitions: Vec<PartitionSummary>,
}

/// How a partition was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only the blocks the filesystem uses.
    Used,
    /// Everything (all-zero blocks as holes).
    Raw,
}

/// One stored partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartEntry {
    /// Partition number.
    pub number: u32,
    /// Filesystem.
    pub fs: FsKind,
    /// `used` or `raw`.
    pub mode: Mode,
    /// Stream holding its data.
    pub stream: String,
    /// Uncompressed bytes stored.
    pub stored_bytes: u64,
    /// Bytes in the image.
    pub image_bytes: u64,
    /// The filesystem's allocation unit.
    pub block_size: u32,
    /// Smallest size the filesystem could shrink to, when known.
    pub min_size_bytes: Option<u64>,
    /// Warnings raised when it was saved.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The table as read at save time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableInfo {
    /// `gpt`, `mbr`, `none`.
    pub kind: String,
    /// Sector size the table uses.
    pub sector_size: u32,
    /// GPT geometry.
    pub gpt: Option<GptInfo>,
    /// MBR extended container (start, size).
    pub extended: Option<(u64, u64)>,
    /// The boot area `[0, end)` saved in the `disk` stream.
    pub boot_area_end: u64,
}

/// The whole manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `ferroclone-image`.
    pub format: String,
    /// Format version.
    pub version: u32,
    /// Random identifier of this image.
    pub id: String,
    /// RFC 3339 UTC time of the save.
    pub created: String,
    /// Tool and version that wrote it.
    pub tool: String,
    /// Volume size limit used.
    pub volume_size: u64,
    /// The source disk.
    pub source: DiskSummary,
    /// Its table.
    pub table: TableInfo,
    /// Stored partitions.
    pub partitions: Vec<PartEntry>,
    /// Data streams.
    pub streams: Vec<StreamInfo>,
    /// Parent image for incrementals (not yet used).
    pub parent: Option<String>,
    /// Source ranges that could not be read (`save --rescue`): stored as zeros.
    #[serde(default)]
    pub bad_ranges: Vec<BadRange>,
}

/// A range of the source disk that could not be read and was stored as zeros.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRange {
    /// Stream it belongs to (`disk`, `p3`).
    pub stream: String,
    /// First byte on the source disk.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

impl Manifest {
    /// A stream by name.
    pub fn stream(&self, name: &str) -> Option<&StreamInfo> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// The source summary of a stored partition.
    pub fn source_partition(&self, number: u32) -> Option<&PartitionSummary> {
        self.source.partitions.iter().find(|p| p.number == number)
    }
}

/// A name is a safe file name inside the image directory.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}
