//! Filesystems: recognise what a partition holds and find the bytes a save must store.
//!
//! Each filesystem has a module with `probe(&Region) -> Result<Option<FsInfo>, FsError>`:
//! `Ok(None)` means "not mine". A module that recognises its filesystem but cannot (yet) build
//! a trustworthy map returns `used: None`, and the partition is imaged raw with all-zero blocks
//! skipped. Nothing here writes or prints.

pub mod btrfs;
pub mod checksum;
pub mod exfat;
pub mod ext;
pub mod extents;
pub mod fat;
pub mod ntfs;
pub mod swap;
pub mod xfs;

use std::fmt;

use serde::Serialize;

pub use extents::Extents;

use crate::bytes::{ascii_field, be32, guid_mixed, le16, le32, le64, uuid_be};
use crate::disk::Region;

/// What a partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    /// NTFS.
    Ntfs,
    /// FAT12/16/32.
    Vfat,
    /// exFAT.
    Exfat,
    /// ext2.
    Ext2,
    /// ext3.
    Ext3,
    /// ext4.
    Ext4,
    /// XFS.
    Xfs,
    /// btrfs.
    Btrfs,
    /// Linux swap.
    Swap,
    /// BitLocker.
    Bitlocker,
    /// LUKS.
    Luks,
    /// Anything else.
    Unknown,
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            FsKind::Ntfs => "ntfs",
            FsKind::Vfat => "vfat",
            FsKind::Exfat => "exfat",
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Swap => "swap",
            FsKind::Bitlocker => "bitlocker",
            FsKind::Luks => "luks",
            FsKind::Unknown => "unknown",
        };
        f.write_str(s)
    }
}

/// What a probe found.
#[derive(Debug, Clone)]
pub struct FsInfo {
    /// The filesystem.
    pub kind: FsKind,
    /// Volume label, if any.
    pub label: String,
    /// Volume UUID or serial, if any.
    pub uuid: String,
    /// The filesystem's allocation unit in bytes (cluster, block), 0 when unknown.
    pub block_size: u32,
    /// The bytes a save must store, relative to the partition start; `None` = raw.
    pub used: Option<Extents>,
    /// Smallest size the filesystem could be shrunk to, when known.
    pub min_size: Option<u64>,
    /// Plain-words warnings (dirty volume, hibernated Windows…).
    pub warnings: Vec<String>,
}

impl FsInfo {
    /// A filesystem recognised by its signature, imaged raw.
    pub fn raw(kind: FsKind) -> FsInfo {
        FsInfo {
            kind,
            label: String::new(),
            uuid: String::new(),
            block_size: 0,
            used: None,
            min_size: None,
            warnings: Vec::new(),
        }
    }
}

/// Why a used-block map could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// Reading failed.
    #[error("{fs}: reading at partition byte {offset:#x}: {source}")]
    Io {
        /// Filesystem.
        fs: FsKind,
        /// Partition-relative byte offset.
        offset: u64,
        /// Cause.
        source: std::io::Error,
    },
    /// Metadata is damaged: the map cannot be trusted.
    #[error("{fs}: damaged metadata at partition byte {offset:#x}: {detail}")]
    Corrupt {
        /// Filesystem.
        fs: FsKind,
        /// Partition-relative byte offset.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// The filesystem is in a state that must not be imaged by its map (dirty log…).
    #[error("{fs}: {detail}")]
    Refused {
        /// Filesystem.
        fs: FsKind,
        /// Why, and what to do.
        detail: String,
    },
}

impl FsError {
    /// True when falling back to a raw copy is a safe answer.
    pub fn raw_is_safe(&self) -> bool {
        matches!(self, FsError::Corrupt { .. })
    }
}

/// Recognises the filesystem of a partition and, where supported, builds its used map.
pub fn probe(part: &Region<'_>) -> Result<FsInfo, FsError> {
    let mut info = detect(part)?;
    match info.kind {
        FsKind::Ntfs => ntfs::fill(part, &mut info)?,
        FsKind::Vfat => fat::fill(part, &mut info)?,
        FsKind::Exfat => exfat::fill(part, &mut info)?,
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => ext::fill(part, &mut info)?,
        FsKind::Xfs => xfs::fill(part, &mut info)?,
        FsKind::Btrfs => btrfs::fill(part, &mut info)?,
        FsKind::Swap => swap::fill(part, &mut info)?,
        FsKind::Bitlocker | FsKind::Luks | FsKind::Unknown => {}
    }
    if let Some(used) = info.used.as_mut() {
        used.clip(part.len());
    }
    Ok(info)
}

/// Reads `len` bytes at partition offset `off` for filesystem `fs`.
pub fn read_at(part: &Region<'_>, fs: FsKind, off: u64, len: usize) -> Result<Vec<u8>, FsError> {
    part.read_vec(off, len).map_err(|source| FsError::Io {
        fs,
        offset: off,
        source,
    })
}

/// Recognises the filesystem of a partition by its signature (label, UUID) without building a map.
/// The order matters: BitLocker and exFAT boot sectors also end in 55AA, so FAT comes last.
pub fn detect(part: &Region<'_>) -> Result<FsInfo, FsError> {
    let head = match part.read_vec(0, 4096.min(part.len() as usize)) {
        Ok(h) => h,
        Err(_) => return Ok(FsInfo::raw(FsKind::Unknown)),
    };
    if head.get(0..6) == Some(b"LUKS\xBA\xBE") {
        let mut info = FsInfo::raw(FsKind::Luks);
        info.uuid = ascii_field(&head, 0xA8, 40);
        return Ok(info);
    }
    let oem = head.get(3..11).unwrap_or(&[]);
    if oem == b"-FVE-FS-" {
        return Ok(FsInfo::raw(FsKind::Bitlocker));
    }
    if oem == b"NTFS    " {
        let mut info = FsInfo::raw(FsKind::Ntfs);
        info.uuid = le64(&head, 0x48)
            .map(|s| format!("{s:016X}"))
            .unwrap_or_default();
        info.block_size = u32::from(le16(&head, 0x0B).unwrap_or(0))
            * u32::from(head.get(0x0D).copied().unwrap_or(0).min(128));
        return Ok(info);
    }
    if oem == b"EXFAT   " {
        let mut info = FsInfo::raw(FsKind::Exfat);
        info.uuid = le32(&head, 0x64).map(fat_serial).unwrap_or_default();
        return Ok(info);
    }
    if part.len() > 0x10048 {
        let sb = read_at(part, FsKind::Btrfs, 0x10000, 0x1000)?;
        if sb.get(0x40..0x48) == Some(b"_BHRfS_M") {
            let mut info = FsInfo::raw(FsKind::Btrfs);
            info.uuid = uuid_be(&sb, 0x20).unwrap_or_default();
            info.label = ascii_field(&sb, 0x12B, 256);
            return Ok(info);
        }
    }
    if head.get(0..4) == Some(b"XFSB") {
        let mut info = FsInfo::raw(FsKind::Xfs);
        info.block_size = be32(&head, 4).unwrap_or(0);
        info.uuid = uuid_be(&head, 0x20).unwrap_or_default();
        info.label = ascii_field(&head, 0x6C, 12);
        return Ok(info);
    }
    if le16(&head, 0x438) == Some(0xEF53) {
        let sb = head.get(0x400..0x800).unwrap_or(&[]);
        let compat = le32(sb, 0x5C).unwrap_or(0);
        let incompat = le32(sb, 0x60).unwrap_or(0);
        let ro_compat = le32(sb, 0x64).unwrap_or(0);
        let kind = if incompat & !0x6 != 0 || ro_compat & !0x3 != 0 {
            FsKind::Ext4
        } else if compat & 0x4 != 0 {
            FsKind::Ext3
        } else {
            FsKind::Ext2
        };
        let mut info = FsInfo::raw(kind);
        info.uuid = uuid_be(sb, 0x68).unwrap_or_default();
        info.label = ascii_field(sb, 0x78, 16);
        info.block_size = le32(sb, 0x18).map(|l| 1024u32 << l.min(6)).unwrap_or(0);
        return Ok(info);
    }
    for ps in [4096usize, 8192, 16384, 65536] {
        let Some(sig_off) = ps.checked_sub(10) else {
            continue;
        };
        let sig = if ps <= head.len() {
            head.get(sig_off..ps).map(<[u8]>::to_vec)
        } else if (ps as u64) <= part.len() {
            part.read_vec(sig_off as u64, 10).ok()
        } else {
            None
        };
        if sig.as_deref() == Some(b"SWAPSPACE2") {
            let mut info = FsInfo::raw(FsKind::Swap);
            info.uuid = uuid_be(&head, 0x40C).unwrap_or_default();
            info.label = ascii_field(&head, 0x41C, 16);
            info.block_size = ps as u32;
            return Ok(info);
        }
    }
    if looks_like_fat(&head) {
        let mut info = FsInfo::raw(FsKind::Vfat);
        let fat32 = le16(&head, 0x16) == Some(0);
        let (id_off, label_off) = if fat32 { (0x43, 0x47) } else { (0x27, 0x2B) };
        info.uuid = le32(&head, id_off).map(fat_serial).unwrap_or_default();
        let label = ascii_field(&head, label_off, 11);
        info.label = if label == "NO NAME" {
            String::new()
        } else {
            label
        };
        return Ok(info);
    }
    let _ = guid_mixed;
    Ok(FsInfo::raw(FsKind::Unknown))
}

fn fat_serial(s: u32) -> String {
    format!("{:04X}-{:04X}", s >> 16, s & 0xFFFF)
}

fn looks_like_fat(b: &[u8]) -> bool {
    let jump = matches!(b.first(), Some(0xEB) | Some(0xE9));
    let bps = le16(b, 0x0B).unwrap_or(0);
    let spc = b.get(0x0D).copied().unwrap_or(0);
    let reserved = le16(b, 0x0E).unwrap_or(0);
    let fats = b.get(0x10).copied().unwrap_or(0);
    let media = b.get(0x15).copied().unwrap_or(0);
    jump && le16(b, 0x1FE) == Some(0xAA55)
        && matches!(bps, 512 | 1024 | 2048 | 4096)
        && spc.is_power_of_two()
        && reserved >= 1
        && fats >= 1
        && (media == 0xF0 || media >= 0xF8)
}
