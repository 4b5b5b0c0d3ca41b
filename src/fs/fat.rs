//! FAT12/16/32: the used-block map from the active FAT (reference/filesystems.md §4).
//!
//! Used bytes, relative to the partition start:
//! - `[0, FirstDataSec)`: boot sector, FSInfo, backup boot sector, every FAT copy and the
//!   FAT12/16 root directory;
//! - every cluster whose entry in the active FAT is neither free (0) nor BAD;
//! - the sectors after the last whole cluster up to `TotSec` (a few sectors at most).
//!
//! Bytes past `TotSec` are outside the filesystem and free. The FAT type comes from the cluster
//! count alone (Microsoft spec); a BPB whose layout says otherwise (FATSz16 = 0 on a volume that
//! counts as FAT12/16, or FATSz16 ≠ 0 on one that counts as FAT32) is refused, because Windows
//! and Linux would read such a volume differently.

#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::as_conversions,
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use crate::bytes::{le16, le32};
use crate::disk::Region;
use crate::fs::{read_at, Extents, FsError, FsInfo, FsKind};

const FS: FsKind = FsKind::Vfat;

/// FAT entries read per chunk: 1 MiB of a FAT32 FAT, less for FAT12/16.
const CHUNK_ENTRIES: u64 = 1 << 18;

/// Largest FAT12 cluster count (Microsoft spec: FAT12 when the count is below 4085).
pub const MAX_FAT12_CLUSTERS: u32 = 4084;
/// Largest FAT16 cluster count (FAT16 when the count is below 65525).
pub const MAX_FAT16_CLUSTERS: u32 = 65524;
/// Largest FAT32 cluster count: cluster numbers must stay below the BAD value 0x0FFFFFF7.
pub const MAX_FAT32_CLUSTERS: u32 = 0x0FFF_FFF5;

/// The FAT variant, decided by the cluster count only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatType {
    /// 12-bit entries.
    Fat12,
    /// 16-bit entries.
    Fat16,
    /// 28-bit entries in 32-bit slots.
    Fat32,
}

impl FatType {
    /// The type of a volume with `count` data clusters (Microsoft spec).
    pub fn from_cluster_count(count: u32) -> FatType {
        if count <= MAX_FAT12_CLUSTERS {
            FatType::Fat12
        } else if count <= MAX_FAT16_CLUSTERS {
            FatType::Fat16
        } else {
            FatType::Fat32
        }
    }

    /// The entry value that marks a bad cluster.
    pub fn bad(self) -> u32 {
        match self {
            FatType::Fat12 => 0xFF7,
            FatType::Fat16 => 0xFFF7,
            FatType::Fat32 => 0x0FFF_FFF7,
        }
    }

    /// Byte offset of entry `n` inside a FAT.
    pub fn entry_offset(self, n: u64) -> u64 {
        match self {
            FatType::Fat12 => n.saturating_add(n / 2),
            FatType::Fat16 => n.saturating_mul(2),
            FatType::Fat32 => n.saturating_mul(4),
        }
    }

    /// Bytes read to decode one entry (a FAT12 entry straddles two bytes).
    fn entry_width(self) -> u64 {
        match self {
            FatType::Fat12 | FatType::Fat16 => 2,
            FatType::Fat32 => 4,
        }
    }

    /// Bytes a FAT needs to hold entries `0..entries`.
    pub fn fat_bytes(self, entries: u64) -> u64 {
        match self {
            // 1.5 bytes per entry, rounded up.
            FatType::Fat12 => entries.saturating_mul(3).saturating_add(1) / 2,
            FatType::Fat16 => entries.saturating_mul(2),
            FatType::Fat32 => entries.saturating_mul(4),
        }
    }

    /// Decodes entry `n` from `buf`, which holds FAT bytes starting at the FAT's byte `base`.
    /// `None` when the entry is not inside `buf`.
    pub fn decode(self, buf: &[u8], base: u64, n: u64) -> Option<u32> {
        let off = usize::try_from(self.entry_offset(n).checked_sub(base)?).ok()?;
        match self {
            FatType::Fat12 => {
                let v = le16(buf, off)?;
                Some(u32::from(if n % 2 == 0 { v & 0x0FFF } else { v >> 4 }))
            }
            FatType::Fat16 => le16(buf, off).map(u32::from),
            FatType::Fat32 => le32(buf, off).map(|v| v & 0x0FFF_FFFF),
        }
    }

    fn name(self) -> &'static str {
        match self {
            FatType::Fat12 => "FAT12",
            FatType::Fat16 => "FAT16",
            FatType::Fat32 => "FAT32",
        }
    }
}

/// The volume geometry from a validated BPB. Sizes in sectors unless named `_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    /// FAT12, FAT16 or FAT32, from the cluster count.
    pub fat_type: FatType,
    /// Bytes per logical sector.
    pub bytes_per_sec: u64,
    /// Sectors per cluster.
    pub sec_per_clus: u64,
    /// Reserved sectors before the first FAT.
    pub reserved: u64,
    /// Number of FAT copies.
    pub num_fats: u64,
    /// Sectors per FAT.
    pub fat_size: u64,
    /// Total sectors of the filesystem.
    pub total_sectors: u64,
    /// First sector of cluster 2.
    pub first_data_sector: u64,
    /// Number of data clusters (clusters 2 ..= count + 1).
    pub cluster_count: u32,
    /// The FAT copy to read (ExtFlags on FAT32 with mirroring off, else 0).
    pub active_fat: u64,
    /// The NT "dirty" flag (byte 0x25 or 0x41, bit 0).
    pub dirty: bool,
    /// A FAT32 layout with fewer than 65525 clusters (read as FAT32, like Linux does).
    pub undersized_fat32: bool,
}

impl Geometry {
    /// Bytes per cluster.
    pub fn cluster_bytes(&self) -> u64 {
        self.bytes_per_sec.saturating_mul(self.sec_per_clus)
    }

    /// Partition byte offset of cluster `n` (n ≥ 2).
    pub fn cluster_offset(&self, n: u64) -> u64 {
        let sector = n
            .saturating_sub(2)
            .saturating_mul(self.sec_per_clus)
            .saturating_add(self.first_data_sector);
        sector.saturating_mul(self.bytes_per_sec)
    }

    /// Partition byte offset of the active FAT.
    pub fn active_fat_offset(&self) -> u64 {
        self.active_fat
            .saturating_mul(self.fat_size)
            .saturating_add(self.reserved)
            .saturating_mul(self.bytes_per_sec)
    }

    /// Filesystem size in bytes.
    pub fn fs_bytes(&self) -> u64 {
        self.total_sectors.saturating_mul(self.bytes_per_sec)
    }

    /// One past the last byte of the last whole cluster.
    pub fn clusters_end(&self) -> u64 {
        self.cluster_offset(u64::from(self.cluster_count).saturating_add(2))
    }
}

fn corrupt(offset: u64, detail: impl Into<String>) -> FsError {
    FsError::Corrupt {
        fs: FS,
        offset,
        detail: detail.into(),
    }
}

/// Validates the BPB in `boot` (the first sector, at least 512 bytes) against a partition of
/// `part_len` bytes and derives the geometry.
pub fn parse_bpb(boot: &[u8], part_len: u64) -> Result<Geometry, FsError> {
    let field16 = |off: usize| {
        le16(boot, off).ok_or_else(|| corrupt(0, "boot sector shorter than 512 bytes"))
    };
    let field8 = |off: usize| {
        boot.get(off)
            .copied()
            .ok_or_else(|| corrupt(0, "boot sector shorter than 512 bytes"))
    };
    let field32 = |off: usize| {
        le32(boot, off).ok_or_else(|| corrupt(0, "boot sector shorter than 512 bytes"))
    };
    if field16(0x1FE)? != 0xAA55 {
        return Err(corrupt(0x1FE, "boot sector signature 55 AA missing"));
    }
    let bps = field16(0x0B)?;
    if !matches!(bps, 512 | 1024 | 2048 | 4096) {
        return Err(corrupt(
            0x0B,
            format!("bytes per sector is {bps}, expected 512, 1024, 2048 or 4096"),
        ));
    }
    let spc = field8(0x0D)?;
    if !spc.is_power_of_two() {
        return Err(corrupt(
            0x0D,
            format!("sectors per cluster is {spc}, expected a power of two from 1 to 128"),
        ));
    }
    let reserved = field16(0x0E)?;
    if reserved == 0 {
        return Err(corrupt(
            0x0E,
            "reserved sector count is 0, expected at least 1",
        ));
    }
    let num_fats = field8(0x10)?;
    if num_fats == 0 {
        return Err(corrupt(0x10, "number of FATs is 0"));
    }
    let root_entries = field16(0x11)?;
    let tot16 = field16(0x13)?;
    let fat16_size = field16(0x16)?;
    let tot32 = field32(0x20)?;
    let fat32_size = field32(0x24)?;

    let bps = u64::from(bps);
    let spc = u64::from(spc);
    let (total_sectors, tot_off) = if tot16 != 0 {
        (u64::from(tot16), 0x13)
    } else {
        (u64::from(tot32), 0x20)
    };
    if total_sectors == 0 {
        return Err(corrupt(0x20, "total sector count is 0"));
    }
    let (fat_size, fat_off) = if fat16_size != 0 {
        (u64::from(fat16_size), 0x16)
    } else {
        (u64::from(fat32_size), 0x24)
    };
    if fat_size == 0 {
        return Err(corrupt(0x24, "FAT size is 0 (both FATSz16 and FATSz32)"));
    }
    let fs_bytes = total_sectors.saturating_mul(bps);
    if fs_bytes > part_len {
        return Err(corrupt(
            tot_off,
            format!(
                "the filesystem claims {total_sectors} sectors ({fs_bytes} bytes) but the partition holds {part_len} bytes"
            ),
        ));
    }
    // Values come from u8/u16/u32 fields: none of these saturate.
    let root_dir_sectors = u64::from(root_entries).saturating_mul(32).div_ceil(bps);
    let reserved = u64::from(reserved);
    let num_fats = u64::from(num_fats);
    let first_data_sector = num_fats
        .saturating_mul(fat_size)
        .saturating_add(reserved)
        .saturating_add(root_dir_sectors);
    let data_sectors = total_sectors
        .checked_sub(first_data_sector)
        .filter(|&d| d >= spc)
        .ok_or_else(|| {
            corrupt(
                0x0E,
                format!(
                    "no room for data: reserved, FATs and root directory end at sector {first_data_sector}, the volume has {total_sectors} sectors"
                ),
            )
        })?;
    // bps and spc were checked non-zero above.
    let clusters = data_sectors.checked_div(spc).unwrap_or(0);
    let count = u32::try_from(clusters)
        .ok()
        .filter(|&c| c <= MAX_FAT32_CLUSTERS)
        .ok_or_else(|| {
            corrupt(
                tot_off,
                format!(
                    "{clusters} clusters is more than FAT32 can address ({MAX_FAT32_CLUSTERS})"
                ),
            )
        })?;
    let fat_type = FatType::from_cluster_count(count);
    // The layout must agree with the type the count gives, with one exception: a FAT32 layout
    // (FATSz16 = 0) with too few clusters, which `mkfs.fat -F 32` makes on small partitions.
    // FATSz16 = 0 leaves no FAT12/16 reading, and Linux (the only driver that mounts such a
    // volume) and partclone read it as FAT32: so do we, with a warning.
    let undersized_fat32 = match (fat_type, fat16_size != 0) {
        (FatType::Fat32, true) => {
            return Err(corrupt(
                0x16,
                format!(
                    "{count} clusters make this FAT32, but the BPB has a FAT12/16 layout (FATSz16 = {fat16_size}); Windows and Linux would read it differently"
                ),
            ))
        }
        (FatType::Fat12 | FatType::Fat16, false) => true,
        _ => false,
    };
    let fat_type = if undersized_fat32 {
        FatType::Fat32
    } else {
        fat_type
    };
    let need = fat_type.fat_bytes(u64::from(count).saturating_add(2));
    let have = fat_size.saturating_mul(bps);
    if have < need {
        return Err(corrupt(
            fat_off,
            format!(
                "each FAT is {have} bytes but {count} {} clusters need {need}",
                fat_type.name()
            ),
        ));
    }
    let (active_fat, dirty_off) = if fat_type == FatType::Fat32 {
        let ext_flags = field16(0x28)?;
        let active = if ext_flags & 0x80 != 0 {
            u64::from(ext_flags & 0x0F)
        } else {
            0
        };
        if active >= num_fats {
            return Err(corrupt(
                0x28,
                format!(
                    "ExtFlags {ext_flags:#06x} makes FAT {active} the active one, but there are only {num_fats}"
                ),
            ));
        }
        let root = field32(0x2C)?;
        if root < 2 || u64::from(root) > u64::from(count).saturating_add(1) {
            return Err(corrupt(
                0x2C,
                format!(
                    "root directory cluster {root} is outside clusters 2..={}",
                    u64::from(count).saturating_add(1)
                ),
            ));
        }
        (active, 0x41)
    } else {
        (0, 0x25)
    };
    let dirty = field8(dirty_off)? & 1 != 0;
    Ok(Geometry {
        fat_type,
        bytes_per_sec: bps,
        sec_per_clus: spc,
        reserved,
        num_fats,
        fat_size,
        total_sectors,
        first_data_sector,
        cluster_count: count,
        active_fat,
        dirty,
        undersized_fat32,
    })
}

/// What the scan of the active FAT found.
#[derive(Debug, Default)]
struct FatScan {
    used: Extents,
    used_clusters: u64,
    bad_clusters: u64,
}

/// Scans entries 2 ..= count + 1 of the active FAT, `chunk` entries per read.
fn scan_fat(part: &Region<'_>, g: &Geometry, chunk: u64) -> Result<FatScan, FsError> {
    let t = g.fat_type;
    let fat_start = g.active_fat_offset();
    let last = u64::from(g.cluster_count).saturating_add(1);
    let bad = t.bad();
    let cluster_bytes = g.cluster_bytes();
    let mut scan = FatScan::default();
    // The current run of used clusters: (first, count).
    let mut run: Option<(u64, u64)> = None;
    let mut n = 2u64;
    while n <= last {
        let end = n.saturating_add(chunk.max(1)).min(last.saturating_add(1));
        let b0 = t.entry_offset(n);
        let b1 = t
            .entry_offset(end.saturating_sub(1))
            .saturating_add(t.entry_width());
        let off = fat_start.saturating_add(b0);
        let len = usize::try_from(b1.saturating_sub(b0))
            .map_err(|_| corrupt(off, "FAT chunk does not fit in memory"))?;
        let buf = read_at(part, FS, off, len)?;
        for e in n..end {
            let v = t.decode(&buf, b0, e).ok_or_else(|| {
                corrupt(
                    fat_start.saturating_add(t.entry_offset(e)),
                    format!("FAT entry {e} is outside the chunk read"),
                )
            })?;
            if v == bad {
                scan.bad_clusters = scan.bad_clusters.saturating_add(1);
            }
            if v == 0 || v == bad {
                continue;
            }
            scan.used_clusters = scan.used_clusters.saturating_add(1);
            run = match run {
                Some((first, len)) if first.saturating_add(len) == e => {
                    Some((first, len.saturating_add(1)))
                }
                Some((first, len)) => {
                    scan.used
                        .add(g.cluster_offset(first), len.saturating_mul(cluster_bytes));
                    Some((e, 1))
                }
                None => Some((e, 1)),
            };
        }
        n = end;
    }
    if let Some((first, len)) = run {
        scan.used
            .add(g.cluster_offset(first), len.saturating_mul(cluster_bytes));
    }
    Ok(scan)
}

/// Checks the clean-shutdown bits of FAT entry 1 (FAT16: bits 15/14, FAT32: bits 27/26).
fn entry1_warnings(
    part: &Region<'_>,
    g: &Geometry,
    warnings: &mut Vec<String>,
) -> Result<(), FsError> {
    let (clean, no_err) = match g.fat_type {
        FatType::Fat12 => return Ok(()),
        FatType::Fat16 => (0x8000u32, 0x4000u32),
        FatType::Fat32 => (0x0800_0000, 0x0400_0000),
    };
    let off = g.active_fat_offset();
    let buf = read_at(part, FS, off, 8)?;
    let Some(v) = g.fat_type.decode(&buf, 0, 1) else {
        return Ok(());
    };
    if v & clean == 0 {
        warnings.push(
            "the FAT says the volume was not unmounted cleanly (entry 1 clean bit clear); run fsck.vfat on the source"
                .into(),
        );
    }
    if v & no_err == 0 {
        warnings
            .push("the FAT says the driver met disk I/O errors on this volume (entry 1)".into());
    }
    Ok(())
}

/// Fills `info.used` (and block size, warnings, minimum size) for a partition whose signature
/// says it holds a FAT filesystem.
pub fn fill(part: &Region<'_>, info: &mut FsInfo) -> Result<(), FsError> {
    if part.len() < 512 {
        return Err(corrupt(
            0,
            format!(
                "partition is {} bytes, too small for a boot sector",
                part.len()
            ),
        ));
    }
    let boot = read_at(part, FS, 0, 512)?;
    let g = parse_bpb(&boot, part.len())?;
    let mut used = Extents::new();
    used.add(0, g.first_data_sector.saturating_mul(g.bytes_per_sec));
    let scan = scan_fat(part, &g, CHUNK_ENTRIES)?;
    used = used.union(&scan.used);
    // Sectors after the last whole cluster, up to TotSec: not part of any cluster; keep them.
    let tail = g.clusters_end();
    used.add(tail, g.fs_bytes().saturating_sub(tail));

    info.block_size = u32::try_from(g.cluster_bytes()).unwrap_or(0);
    if g.dirty {
        info.warnings.push(format!(
            "{} volume is marked dirty (not unmounted cleanly); run fsck.vfat on the source",
            g.fat_type.name()
        ));
    }
    entry1_warnings(part, &g, &mut info.warnings)?;
    if g.undersized_fat32 {
        info.warnings.push(format!(
            "FAT32 volume with only {} clusters (the minimum is {}): mapped as FAT32 like Linux reads it; Windows and UEFI firmware may not mount it",
            g.cluster_count,
            MAX_FAT16_CLUSTERS.saturating_add(1)
        ));
    }
    if scan.bad_clusters > 0 {
        info.warnings.push(format!(
            "{} clusters are marked bad in the FAT; they are not copied",
            scan.bad_clusters
        ));
    }
    // No FAT resizer here: the partition cannot be smaller than the filesystem.
    info.min_size = Some(g.fs_bytes());
    info.used = Some(used);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;

    /// Parameters of a synthetic FAT volume.
    #[derive(Clone, Copy)]
    struct Spec {
        bps: u16,
        spc: u8,
        reserved: u16,
        fats: u8,
        root_entries: u16,
        fat16_size: u16,
        fat32_size: u32,
        total: u32,
    }

    impl Spec {
        /// A FAT12/16 layout with `count` clusters exactly, 512-byte sectors, 1 sector/cluster.
        fn fat1x(count: u32) -> Spec {
            let t = FatType::from_cluster_count(count);
            let fat_bytes = t.fat_bytes(u64::from(count) + 2);
            let fat_size = fat_bytes.div_ceil(512) as u16;
            let fds = 1 + 2 * u32::from(fat_size) + 32;
            Spec {
                bps: 512,
                spc: 1,
                reserved: 1,
                fats: 2,
                root_entries: 512,
                fat16_size: fat_size,
                fat32_size: 0,
                total: fds + count,
            }
        }

        /// A FAT32 layout with `count` clusters exactly.
        fn fat32(count: u32) -> Spec {
            let fat_size = (u64::from(count) + 2).saturating_mul(4).div_ceil(512) as u32;
            let fds = 32 + 2 * fat_size;
            Spec {
                bps: 512,
                spc: 1,
                reserved: 32,
                fats: 2,
                root_entries: 0,
                fat16_size: 0,
                fat32_size: fat_size,
                total: fds + count,
            }
        }

        fn boot(&self) -> Vec<u8> {
            let mut b = vec![0u8; 512];
            b[0] = 0xEB;
            b[1] = 0x3C;
            b[2] = 0x90;
            b[3..11].copy_from_slice(b"MSWIN4.1");
            b[0x0B..0x0D].copy_from_slice(&self.bps.to_le_bytes());
            b[0x0D] = self.spc;
            b[0x0E..0x10].copy_from_slice(&self.reserved.to_le_bytes());
            b[0x10] = self.fats;
            b[0x11..0x13].copy_from_slice(&self.root_entries.to_le_bytes());
            if self.total < 0x10000 && self.fat32_size == 0 {
                b[0x13..0x15].copy_from_slice(&(self.total as u16).to_le_bytes());
            } else {
                b[0x20..0x24].copy_from_slice(&self.total.to_le_bytes());
            }
            b[0x15] = 0xF8;
            b[0x16..0x18].copy_from_slice(&self.fat16_size.to_le_bytes());
            if self.fat16_size == 0 {
                b[0x24..0x28].copy_from_slice(&self.fat32_size.to_le_bytes());
                b[0x2C..0x30].copy_from_slice(&2u32.to_le_bytes());
                b[0x30..0x32].copy_from_slice(&1u16.to_le_bytes());
                b[0x32..0x34].copy_from_slice(&6u16.to_le_bytes());
                b[0x42] = 0x29;
                b[0x52..0x5A].copy_from_slice(b"FAT32   ");
            } else {
                b[0x26] = 0x29;
                b[0x36..0x3E].copy_from_slice(b"FAT16   ");
            }
            b[0x1FE] = 0x55;
            b[0x1FF] = 0xAA;
            b
        }

        fn bytes(&self) -> u64 {
            u64::from(self.total) * u64::from(self.bps)
        }
    }

    /// Writes FAT entry `n` = `v` into every FAT copy of the image.
    fn set_entry(img: &mut [u8], g: &Geometry, n: u64, v: u32) {
        for f in 0..g.num_fats {
            let base = ((g.reserved + f * g.fat_size) * g.bytes_per_sec) as usize;
            let off = base + g.fat_type.entry_offset(n) as usize;
            match g.fat_type {
                FatType::Fat12 => {
                    let old = u16::from_le_bytes([img[off], img[off + 1]]);
                    let new = if n % 2 == 0 {
                        (old & 0xF000) | (v as u16 & 0x0FFF)
                    } else {
                        (old & 0x000F) | ((v as u16) << 4)
                    };
                    img[off..off + 2].copy_from_slice(&new.to_le_bytes());
                }
                FatType::Fat16 => img[off..off + 2].copy_from_slice(&(v as u16).to_le_bytes()),
                FatType::Fat32 => img[off..off + 4].copy_from_slice(&v.to_le_bytes()),
            }
        }
    }

    fn image(spec: &Spec) -> (Vec<u8>, Geometry) {
        let mut img = vec![0u8; spec.bytes() as usize];
        img[..512].copy_from_slice(&spec.boot());
        let g = parse_bpb(&img[..512], img.len() as u64).unwrap();
        // Media entry and clean entry 1, as mkfs does.
        set_entry(&mut img, &g, 0, 0x0FFF_FFF8);
        set_entry(&mut img, &g, 1, 0x0FFF_FFFF);
        (img, g)
    }

    fn fill_img(img: Vec<u8>) -> Result<FsInfo, FsError> {
        let d = MemDisk::from_vec(img, 512);
        let r = Region::whole(&d);
        let mut info = FsInfo::raw(FsKind::Vfat);
        fill(&r, &mut info).map(|()| info)
    }

    #[test]
    fn fat12_entries_even_and_odd() {
        // Entries 0..4 = 0xFF8, 0xFFF, 0x003, 0xABC packed in 6 bytes.
        let buf = [0xF8, 0xFF, 0xFF, 0x03, 0xC0, 0xAB];
        let t = FatType::Fat12;
        assert_eq!(t.decode(&buf, 0, 0), Some(0xFF8));
        assert_eq!(t.decode(&buf, 0, 1), Some(0xFFF));
        assert_eq!(t.decode(&buf, 0, 2), Some(0x003));
        assert_eq!(t.decode(&buf, 0, 3), Some(0xABC));
        assert_eq!(t.decode(&buf, 0, 4), None);
        // The same entries read from a chunk that starts at byte 3 (entry 2).
        assert_eq!(t.decode(&buf[3..], 3, 2), Some(0x003));
        assert_eq!(t.decode(&buf[3..], 3, 3), Some(0xABC));
        assert_eq!(t.decode(&buf[3..], 3, 1), None);
        // partclone < 0.3.38 read `u16 >> 4` for every entry: entry 2 would be 0x030.
        assert_ne!(u16::from_le_bytes([buf[3], buf[4]]) >> 4, 0x003);
    }

    #[test]
    fn fat12_odd_entry_zero_next_to_used_even() {
        // Entry 2 = 0xFFF (used), entry 3 = 0 (free): the shared middle byte must not leak.
        let buf = [0, 0, 0, 0xFF, 0x0F, 0x00];
        assert_eq!(FatType::Fat12.decode(&buf, 0, 2), Some(0xFFF));
        assert_eq!(FatType::Fat12.decode(&buf, 0, 3), Some(0));
        let buf = [0, 0, 0, 0x00, 0xF0, 0xFF];
        assert_eq!(FatType::Fat12.decode(&buf, 0, 2), Some(0));
        assert_eq!(FatType::Fat12.decode(&buf, 0, 3), Some(0xFFF));
    }

    #[test]
    fn fat16_and_fat32_entries() {
        let buf = [0x34, 0x12, 0xF7, 0xFF];
        assert_eq!(FatType::Fat16.decode(&buf, 0, 0), Some(0x1234));
        assert_eq!(
            FatType::Fat16.decode(&buf, 0, 1),
            Some(FatType::Fat16.bad())
        );
        // The top 4 bits of a FAT32 entry are reserved.
        let buf = [
            0x00, 0x00, 0x00, 0xF0, 0xF7, 0xFF, 0xFF, 0xFF, 0x05, 0, 0, 0x10,
        ];
        assert_eq!(FatType::Fat32.decode(&buf, 0, 0), Some(0));
        assert_eq!(
            FatType::Fat32.decode(&buf, 0, 1),
            Some(FatType::Fat32.bad())
        );
        assert_eq!(FatType::Fat32.decode(&buf, 0, 2), Some(5));
    }

    #[test]
    fn type_by_cluster_count() {
        assert_eq!(FatType::from_cluster_count(1), FatType::Fat12);
        assert_eq!(FatType::from_cluster_count(4084), FatType::Fat12);
        assert_eq!(FatType::from_cluster_count(4085), FatType::Fat16);
        assert_eq!(FatType::from_cluster_count(65524), FatType::Fat16);
        assert_eq!(FatType::from_cluster_count(65525), FatType::Fat32);
        for (count, t) in [
            (4084, FatType::Fat12),
            (4085, FatType::Fat16),
            (65524, FatType::Fat16),
        ] {
            let s = Spec::fat1x(count);
            let g = parse_bpb(&s.boot(), s.bytes()).unwrap();
            assert_eq!((g.cluster_count, g.fat_type), (count, t));
        }
        let s = Spec::fat32(65525);
        let g = parse_bpb(&s.boot(), s.bytes()).unwrap();
        assert_eq!((g.cluster_count, g.fat_type), (65525, FatType::Fat32));
    }

    #[test]
    fn type_ignores_the_fs_type_string() {
        // The string at 0x36 says FAT16, but 100 clusters make it FAT12.
        let s = Spec::fat1x(100);
        let g = parse_bpb(&s.boot(), s.bytes()).unwrap();
        assert_eq!(g.fat_type, FatType::Fat12);
    }

    #[test]
    fn layout_must_agree_with_count() {
        // FAT16 layout (FATSz16 ≠ 0) with a FAT32 cluster count.
        let mut s = Spec::fat1x(65524);
        s.total += 1; // 65525 clusters; the FAT (256 sectors) still holds them
        let e = parse_bpb(&s.boot(), s.bytes()).unwrap_err();
        assert!(e.to_string().contains("FAT12/16 layout"), "{e}");
        // FAT32 layout with a FAT16 or FAT12 count (mkfs.fat -F 32 on a small partition):
        // there is no other reading than FAT32.
        for count in [65524, 1000] {
            let s = Spec::fat32(count);
            let g = parse_bpb(&s.boot(), s.bytes()).unwrap();
            assert_eq!(g.fat_type, FatType::Fat32);
            assert!(g.undersized_fat32);
        }
        let s = Spec::fat32(65525);
        assert!(!parse_bpb(&s.boot(), s.bytes()).unwrap().undersized_fat32);
    }

    #[test]
    fn undersized_fat32_map() {
        let s = Spec::fat32(3000);
        let (mut img, g) = image(&s);
        set_entry(&mut img, &g, 2, 0x0FFF_FFFF);
        set_entry(&mut img, &g, 3000, 0x0FFF_FFFF);
        let info = fill_img(img).unwrap();
        let fds = g.first_data_sector * 512;
        assert_eq!(
            info.used.unwrap().runs(),
            &[(0, fds + 512), (g.cluster_offset(3000), 512)]
        );
        assert!(info
            .warnings
            .iter()
            .any(|w| w.contains("only 3000 clusters")));
    }

    #[test]
    fn bad_bpbs_are_errors() {
        let s = Spec::fat1x(1000);
        let good = s.boot();
        let len = s.bytes();
        let cases: Vec<(usize, &[u8], u64)> = vec![
            (0x0B, &[0x00, 0x01], 0x0B),   // 256 bytes/sector
            (0x0B, &[0x00, 0x03], 0x0B),   // 768
            (0x0B, &[0x00, 0x20], 0x0B),   // 8192
            (0x0D, &[0], 0x0D),            // 0 sectors/cluster
            (0x0D, &[3], 0x0D),            // not a power of two
            (0x0E, &[0, 0], 0x0E),         // no reserved sector
            (0x10, &[0], 0x10),            // no FAT
            (0x16, &[1, 0], 0x16),         // FAT too small for the count
            (0x13, &[0xFF, 0xFF], 0x13),   // bigger than the partition
            (0x1FE, &[0x55, 0x55], 0x1FE), // signature
            (0x11, &[0xFF, 0xFF], 0x0E),   // root dir eats the volume
        ];
        for (off, bytes, err_off) in cases {
            let mut b = good.clone();
            b[off..off + bytes.len()].copy_from_slice(bytes);
            match parse_bpb(&b, len) {
                Err(FsError::Corrupt { offset, .. }) => {
                    assert_eq!(offset, err_off, "patch at {off:#x}")
                }
                other => panic!("patch at {off:#x}: {other:?}"),
            }
        }
        // Total sectors 0.
        let mut b = good.clone();
        b[0x13..0x15].fill(0);
        assert!(parse_bpb(&b, len).is_err());
        // FAT32 ExtFlags pointing at a FAT that does not exist.
        let s = Spec::fat32(70000);
        let mut b = s.boot();
        b[0x28] = 0x82;
        assert!(matches!(
            parse_bpb(&b, s.bytes()),
            Err(FsError::Corrupt { offset: 0x28, .. })
        ));
        // FAT32 root cluster outside the volume.
        let mut b = s.boot();
        b[0x2C..0x30].copy_from_slice(&1_000_000u32.to_le_bytes());
        assert!(matches!(
            parse_bpb(&b, s.bytes()),
            Err(FsError::Corrupt { offset: 0x2C, .. })
        ));
        // Short buffer.
        assert!(parse_bpb(&good[..100], len).is_err());
    }

    #[test]
    fn random_bpbs_never_panic() {
        let s = Spec::fat32(70000);
        let good = s.boot();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20000 {
            let mut b = good.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let off = 0x0B + (x % 0x40) as usize;
                b[off] = (x >> 32) as u8;
            }
            let _ = parse_bpb(&b, s.bytes());
            let _ = parse_bpb(&b, u64::MAX);
        }
        // All-0xFF and all-zero sectors.
        let _ = parse_bpb(&[0xFF; 512], u64::MAX);
        let _ = parse_bpb(&[0; 512], u64::MAX);
    }

    #[test]
    fn fat12_map() {
        let s = Spec::fat1x(1000);
        let (mut img, g) = image(&s);
        assert_eq!(g.fat_type, FatType::Fat12);
        // A chain 2 → 3 → EOC, cluster 5 alone, bad 7, odd-numbered 9 alone.
        set_entry(&mut img, &g, 2, 3);
        set_entry(&mut img, &g, 3, 0xFFF);
        set_entry(&mut img, &g, 5, 0xFF8);
        set_entry(&mut img, &g, 7, 0xFF7);
        set_entry(&mut img, &g, 9, 0xFFF);
        set_entry(&mut img, &g, 1001, 0xFFF); // the last cluster
        let info = fill_img(img).unwrap();
        let cb = g.cluster_bytes();
        let fds = g.first_data_sector * 512;
        let used = info.used.unwrap();
        assert_eq!(
            used.runs(),
            &[
                (0, fds + 2 * cb),
                (g.cluster_offset(5), cb),
                (g.cluster_offset(9), cb),
                (g.cluster_offset(1001), cb)
            ]
        );
        assert_eq!(info.block_size, 512);
        assert!(info
            .warnings
            .iter()
            .any(|w| w.contains("1 clusters are marked bad")));
        assert_eq!(info.min_size, Some(s.bytes()));
    }

    #[test]
    fn fat16_map_with_tail_and_spare_partition() {
        let mut s = Spec::fat1x(10000);
        s.spc = 2; // 5000 two-sector clusters
        s.total += 1; // and one sector after the last cluster
        let (mut img, g) = image(&s);
        assert_eq!((g.fat_type, g.cluster_count), (FatType::Fat16, 5000));
        set_entry(&mut img, &g, 4, 0xFFFF);
        img.extend_from_slice(&[0xAB; 4096]); // partition bigger than the filesystem
        let info = fill_img(img).unwrap();
        let used = info.used.unwrap();
        let fds = g.first_data_sector * 512;
        assert_eq!(
            used.runs(),
            &[
                (0, fds),
                (g.cluster_offset(4), 1024),
                (s.bytes() - 512, 512)
            ]
        );
    }

    #[test]
    fn fat32_mask_and_active_fat() {
        let s = Spec::fat32(70000);
        let (mut img, g) = image(&s);
        // Top bits set on a free entry: still free. Reserved bits on a used one: still used.
        set_entry(&mut img, &g, 10, 0xF000_0000);
        set_entry(&mut img, &g, 11, 0x1FFF_FFFF);
        set_entry(&mut img, &g, 12, 0xFFFF_FFF7); // BAD with the top bits set
        set_entry(&mut img, &g, 2, 0x0FFF_FFFF); // root
        set_entry(&mut img, &g, 60000, 0x0FFF_FFFF);
        // FAT 1 alone says cluster 20 is used.
        let fat1 = ((g.reserved + g.fat_size) * 512) as usize + 20 * 4;
        img[fat1..fat1 + 4].copy_from_slice(&0x0FFF_FFFFu32.to_le_bytes());
        let mut img1 = img.clone();
        let info = fill_img(img.clone()).unwrap();
        let used = info.used.unwrap();
        let fds = g.first_data_sector * 512;
        assert_eq!(
            used.runs(),
            &[
                (0, fds + 512),
                (g.cluster_offset(11), 512),
                (g.cluster_offset(60000), 512)
            ]
        );
        // Mirroring off, FAT 1 active.
        img1[0x28] = 0x81;
        let info = fill_img(img1).unwrap();
        let used = info.used.unwrap();
        assert_eq!(
            used.runs(),
            &[
                (0, fds + 512),
                (g.cluster_offset(11), 512),
                (g.cluster_offset(20), 512),
                (g.cluster_offset(60000), 512)
            ]
        );
    }

    #[test]
    fn dirty_flags_warn() {
        let s = Spec::fat32(70000);
        let (mut img, g) = image(&s);
        set_entry(&mut img, &g, 2, 0x0FFF_FFFF);
        img[0x41] |= 1;
        set_entry(&mut img, &g, 1, 0x07FF_FFFF);
        let info = fill_img(img).unwrap();
        assert!(
            info.warnings.iter().any(|w| w.contains("marked dirty")),
            "{:?}",
            info.warnings
        );
        assert!(
            info.warnings.iter().any(|w| w.contains("clean bit")),
            "{:?}",
            info.warnings
        );
        let s = Spec::fat1x(5000);
        let (mut img, _) = image(&s);
        img[0x25] = 1;
        let info = fill_img(img).unwrap();
        assert!(info
            .warnings
            .iter()
            .any(|w| w.contains("FAT16 volume is marked dirty")));
    }

    /// An independent FAT12 decoder: entry n is bits [12n, 12n + 12) of the LSB-first stream.
    fn fat12_bits(fat: &[u8], n: usize) -> u32 {
        (0..12).fold(0u32, |v, i| {
            let bit = 12 * n + i;
            v | (u32::from((fat[bit / 8] >> (bit % 8)) & 1) << i)
        })
    }

    #[test]
    fn chunked_scan_matches_whole_fat() {
        for (spec, t) in [
            (Spec::fat1x(3000), FatType::Fat12),
            (Spec::fat1x(5000), FatType::Fat16),
            (Spec::fat32(66000), FatType::Fat32),
        ] {
            let (mut img, g) = image(&spec);
            assert_eq!(g.fat_type, t);
            let mut x: u64 = 88172645463325252;
            let last = u64::from(g.cluster_count) + 1;
            for n in 2..=last {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Runs of used and free clusters, some BAD ones, values using every bit.
                if (x >> 40) % 3 == 0 {
                    set_entry(
                        &mut img,
                        &g,
                        n,
                        if x % 17 == 0 { t.bad() } else { (x as u32) | 1 },
                    );
                }
            }
            let fat0 = (g.reserved * 512) as usize;
            let fat = &img[fat0..fat0 + (g.fat_size * 512) as usize];
            let expect: Vec<u64> = (2..=last)
                .filter(|&n| {
                    let v = match t {
                        FatType::Fat12 => fat12_bits(fat, n as usize),
                        FatType::Fat16 => u32::from(u16::from_le_bytes([
                            fat[2 * n as usize],
                            fat[2 * n as usize + 1],
                        ])),
                        FatType::Fat32 => {
                            u32::from_le_bytes(
                                fat[4 * n as usize..4 * n as usize + 4].try_into().unwrap(),
                            ) & 0x0FFF_FFFF
                        }
                    };
                    v != 0 && v != t.bad()
                })
                .collect();
            let mut want = Extents::new();
            for &n in &expect {
                want.add(g.cluster_offset(n), 512);
            }
            let d = MemDisk::from_vec(img, 512);
            let r = Region::whole(&d);
            for chunk in [1, 2, 3, 7, 1000, CHUNK_ENTRIES] {
                let scan = scan_fat(&r, &g, chunk).unwrap();
                assert_eq!(scan.used, want, "{t:?} chunk {chunk}");
                assert_eq!(scan.used_clusters, expect.len() as u64);
            }
        }
    }

    #[test]
    fn truncated_images_are_errors() {
        let s = Spec::fat1x(1000);
        let (img, _) = image(&s);
        for cut in [0usize, 100, 511, 512, 1024, 4000, img.len() - 1] {
            let e = fill_img(img[..cut].to_vec()).unwrap_err();
            assert!(matches!(e, FsError::Corrupt { .. }), "cut {cut}: {e}");
        }
        // A 4 KiB-sector volume whose FAT lies past the end of a short partition.
        let mut s = Spec::fat32(70000);
        s.bps = 4096;
        let b = s.boot();
        let mut img = b.clone();
        img.resize(8192, 0);
        assert!(fill_img(img).is_err());
    }
}
