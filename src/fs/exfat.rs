//! exFAT: the used-block map from the Allocation Bitmap (reference/filesystems.md §6).
//!
//! Used bytes, relative to the partition start:
//! - `[0, ClusterHeapOffset)`: the main and backup boot regions, the FAT(s) and the padding;
//! - every cluster whose bit is set in the Allocation Bitmap (bit n is cluster n + 2, for all
//!   `ClusterCount` bits; the FAT is not an allocation map in exFAT).
//!
//! The sectors after the last cluster up to `VolumeLength`, and anything past `VolumeLength`, are
//! free. The bitmap is found in the root directory (entry 0x81), whose cluster chain is walked
//! through the active FAT with loop detection; the bitmap is then read through its own chain.
//! As a cross-check the bitmap must mark its own clusters, the root directory's and the up-case
//! table's first cluster as used.

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

use std::collections::HashSet;

use crate::bytes::{le16, le32, le64, utf16_field};
use crate::disk::Region;
use crate::fs::{read_at, Extents, FsError, FsInfo, FsKind};

const FS: FsKind = FsKind::Exfat;

/// FAT entry: end of a cluster chain.
const FAT_EOC: u32 = 0xFFFF_FFFF;
/// FAT entry: bad cluster.
const FAT_BAD: u32 = 0xFFFF_FFF7;
/// Largest cluster count the spec allows (cluster numbers stay below the BAD value).
const MAX_CLUSTER_COUNT: u32 = 0xFFFF_FFF5;
/// The spec caps a directory at 256 MiB.
const MAX_DIR_BYTES: u64 = 256 << 20;
/// Bytes read at a time from a cluster (clusters can be 32 MiB).
const READ_CHUNK: u64 = 1 << 20;
/// FAT entries cached per read.
const FAT_CACHE_ENTRIES: u64 = 4096;

/// The geometry from a validated main boot sector. Sizes in sectors unless named `_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    /// log2 of the sector size (9..=12).
    pub sector_shift: u32,
    /// log2 of sectors per cluster.
    pub cluster_shift: u32,
    /// Volume length in sectors.
    pub volume_length: u64,
    /// First FAT, in sectors.
    pub fat_offset: u64,
    /// Sectors per FAT.
    pub fat_length: u64,
    /// First sector of cluster 2.
    pub heap_offset: u64,
    /// Clusters in the heap (2 ..= count + 1).
    pub cluster_count: u32,
    /// First cluster of the root directory.
    pub root_cluster: u32,
    /// Number of FATs (and bitmaps): 1, or 2 for TexFAT.
    pub num_fats: u8,
    /// The active FAT and bitmap (VolumeFlags bit 0).
    pub active_fat: u8,
    /// VolumeFlags bit 1.
    pub dirty: bool,
    /// VolumeFlags bit 2.
    pub media_failure: bool,
}

impl Geometry {
    /// Bytes per sector.
    pub fn sector_bytes(&self) -> u64 {
        1u64.checked_shl(self.sector_shift).unwrap_or(0)
    }

    /// Bytes per cluster.
    pub fn cluster_bytes(&self) -> u64 {
        1u64.checked_shl(self.sector_shift.saturating_add(self.cluster_shift))
            .unwrap_or(0)
    }

    /// Partition byte offset of cluster `n` (n ≥ 2).
    pub fn cluster_offset(&self, n: u32) -> u64 {
        u64::from(n)
            .saturating_sub(2)
            .saturating_mul(self.cluster_bytes())
            .saturating_add(self.heap_bytes())
    }

    /// Partition byte offset of the cluster heap.
    pub fn heap_bytes(&self) -> u64 {
        self.heap_offset.saturating_mul(self.sector_bytes())
    }

    /// Partition byte offset of the active FAT.
    pub fn active_fat_bytes(&self) -> u64 {
        u64::from(self.active_fat)
            .saturating_mul(self.fat_length)
            .saturating_add(self.fat_offset)
            .saturating_mul(self.sector_bytes())
    }

    /// Filesystem size in bytes.
    pub fn fs_bytes(&self) -> u64 {
        self.volume_length.saturating_mul(self.sector_bytes())
    }

    /// Largest valid cluster number.
    fn last_cluster(&self) -> u32 {
        self.cluster_count.saturating_add(1)
    }

    fn is_cluster(&self, c: u32) -> bool {
        c >= 2 && c <= self.last_cluster()
    }
}

fn corrupt(offset: u64, detail: impl Into<String>) -> FsError {
    FsError::Corrupt {
        fs: FS,
        offset,
        detail: detail.into(),
    }
}

/// Validates the main boot sector (`boot`, at least 512 bytes) against a partition of
/// `part_len` bytes and derives the geometry.
pub fn parse_boot(boot: &[u8], part_len: u64) -> Result<Geometry, FsError> {
    let short = || corrupt(0, "boot sector shorter than 512 bytes");
    let f8 = |off: usize| boot.get(off).copied().ok_or_else(short);
    let f16 = |off: usize| le16(boot, off).ok_or_else(short);
    let f32 = |off: usize| le32(boot, off).ok_or_else(short);
    let f64 = |off: usize| le64(boot, off).ok_or_else(short);
    if boot.get(3..11) != Some(b"EXFAT   ") {
        return Err(corrupt(3, "file system name is not \"EXFAT   \""));
    }
    if f16(0x1FE)? != 0xAA55 {
        return Err(corrupt(0x1FE, "boot sector signature 55 AA missing"));
    }
    if let Some(i) = boot
        .get(0x0B..0x40)
        .ok_or_else(short)?
        .iter()
        .position(|&b| b != 0)
    {
        return Err(corrupt(
            0x0Bu64.saturating_add(u64::try_from(i).unwrap_or(0)),
            "bytes 0x0B..0x40 (MustBeZero) are not zero",
        ));
    }
    let sector_shift = f8(0x6C)?;
    if !(9..=12).contains(&sector_shift) {
        return Err(corrupt(
            0x6C,
            format!("BytesPerSectorShift is {sector_shift}, expected 9 to 12"),
        ));
    }
    let cluster_shift = f8(0x6D)?;
    if u32::from(cluster_shift).saturating_add(u32::from(sector_shift)) > 25 {
        return Err(corrupt(
            0x6D,
            format!("SectorsPerClusterShift is {cluster_shift}: clusters over 32 MiB"),
        ));
    }
    let (major, minor) = (f8(0x69)?, f8(0x68)?);
    if major != 1 {
        return Err(corrupt(
            0x68,
            format!("FileSystemRevision {major}.{minor:02} is not supported (only 1.xx)"),
        ));
    }
    let num_fats = f8(0x6E)?;
    if !(1..=2).contains(&num_fats) {
        return Err(corrupt(
            0x6E,
            format!("NumberOfFats is {num_fats}, expected 1 or 2"),
        ));
    }
    let flags = f16(0x6A)?;
    let active_fat = u8::from(flags & 1 != 0);
    if active_fat >= num_fats {
        return Err(corrupt(
            0x6A,
            "VolumeFlags selects the second FAT, but the volume has only one",
        ));
    }
    let sector_bytes = 1u64 << sector_shift;
    let volume_length = f64(0x48)?;
    let fs_bytes = volume_length.checked_mul(sector_bytes);
    if !matches!(fs_bytes, Some(b) if b <= part_len) {
        return Err(corrupt(
            0x48,
            format!(
                "VolumeLength is {volume_length} sectors of {sector_bytes} bytes, more than the partition's {part_len} bytes"
            ),
        ));
    }
    let fat_offset = u64::from(f32(0x50)?);
    if fat_offset < 24 {
        return Err(corrupt(
            0x50,
            format!("FatOffset is {fat_offset}, expected at least 24 (after both boot regions)"),
        ));
    }
    let fat_length = u64::from(f32(0x54)?);
    let heap_offset = u64::from(f32(0x58)?);
    let cluster_count = f32(0x5C)?;
    if cluster_count == 0 || cluster_count > MAX_CLUSTER_COUNT {
        return Err(corrupt(
            0x5C,
            format!("ClusterCount is {cluster_count}, expected 1 to {MAX_CLUSTER_COUNT}"),
        ));
    }
    let fat_need = u64::from(cluster_count)
        .saturating_add(2)
        .saturating_mul(4)
        .div_ceil(sector_bytes);
    if fat_length < fat_need {
        return Err(corrupt(
            0x54,
            format!(
                "FatLength is {fat_length} sectors, but {cluster_count} clusters need {fat_need}"
            ),
        ));
    }
    let fats_end = fat_length
        .saturating_mul(u64::from(num_fats))
        .saturating_add(fat_offset);
    if heap_offset < fats_end {
        return Err(corrupt(
            0x58,
            format!("ClusterHeapOffset {heap_offset} is inside the FAT(s), which end at sector {fats_end}"),
        ));
    }
    let heap_end = u64::from(cluster_count)
        .checked_shl(u32::from(cluster_shift))
        .and_then(|s| s.checked_add(heap_offset));
    if !matches!(heap_end, Some(e) if e <= volume_length) {
        return Err(corrupt(
            0x5C,
            format!(
                "{cluster_count} clusters from sector {heap_offset} run past the volume's {volume_length} sectors"
            ),
        ));
    }
    let root_cluster = f32(0x60)?;
    if root_cluster < 2 || root_cluster > cluster_count.saturating_add(1) {
        return Err(corrupt(
            0x60,
            format!(
                "FirstClusterOfRootDirectory {root_cluster} is outside clusters 2..={}",
                u64::from(cluster_count).saturating_add(1)
            ),
        ));
    }
    Ok(Geometry {
        sector_shift: u32::from(sector_shift),
        cluster_shift: u32::from(cluster_shift),
        volume_length,
        fat_offset,
        fat_length,
        heap_offset,
        cluster_count,
        root_cluster,
        num_fats,
        active_fat,
        dirty: flags & 2 != 0,
        media_failure: flags & 4 != 0,
    })
}

/// Checks the main boot region checksum: sectors 0..=10 summed (skipping VolumeFlags and
/// PercentInUse), repeated through sector 11. `region` holds the 12 sectors.
fn check_boot_checksum(region: &[u8], sector_bytes: usize) -> Result<(), FsError> {
    let Some(summed) = sector_bytes.checked_mul(11).and_then(|n| region.get(..n)) else {
        return Err(corrupt(0, "boot region shorter than 12 sectors"));
    };
    let mut sum = 0u32;
    for (i, &b) in summed.iter().enumerate() {
        if matches!(i, 0x6A | 0x6B | 0x70) {
            continue;
        }
        sum = sum.rotate_right(1).wrapping_add(u32::from(b));
    }
    let stored_at = sector_bytes.saturating_mul(11);
    let stored = le32(region, stored_at);
    if stored != Some(sum) {
        return Err(corrupt(
            u64::try_from(stored_at).unwrap_or(0),
            format!(
                "boot region checksum is {sum:#010x}, sector 11 says {:#010x}",
                stored.unwrap_or(0)
            ),
        ));
    }
    Ok(())
}

/// Reads FAT entries of the active FAT through a small cache.
struct Fat<'p, 'd> {
    part: &'p Region<'d>,
    start: u64,
    entries: u64,
    first: u64,
    cache: Vec<u8>,
}

impl<'p, 'd> Fat<'p, 'd> {
    fn new(part: &'p Region<'d>, g: &Geometry) -> Self {
        Fat {
            part,
            start: g.active_fat_bytes(),
            entries: u64::from(g.cluster_count).saturating_add(2),
            first: 0,
            cache: Vec::new(),
        }
    }

    /// Byte offset of entry `c`.
    fn offset(&self, c: u32) -> u64 {
        u64::from(c).saturating_mul(4).saturating_add(self.start)
    }

    fn get(&mut self, c: u32) -> Result<u32, FsError> {
        let c64 = u64::from(c);
        let cached = |fat: &Self| {
            c64.checked_sub(fat.first)
                .and_then(|i| usize::try_from(i.saturating_mul(4)).ok())
                .and_then(|off| le32(&fat.cache, off))
        };
        if let Some(v) = cached(self) {
            return Ok(v);
        }
        if c64 >= self.entries {
            return Err(corrupt(
                self.offset(c),
                format!("FAT entry {c} is past the FAT"),
            ));
        }
        let first = c64.saturating_sub(c64 % FAT_CACHE_ENTRIES);
        let n = FAT_CACHE_ENTRIES.min(self.entries.saturating_sub(first));
        let off = first.saturating_mul(4).saturating_add(self.start);
        let len = usize::try_from(n.saturating_mul(4)).unwrap_or(0);
        self.cache = read_at(self.part, FS, off, len)?;
        self.first = first;
        cached(self).ok_or_else(|| corrupt(self.offset(c), "FAT entry not in the chunk read"))
    }
}

/// Follows the chain from `first`, returning at most `max` clusters. With `exact_end`, a chain
/// longer than `max` is an error; otherwise the walk stops there. Loops, free or reserved
/// entries inside the chain and out-of-range clusters are errors.
fn walk_chain(
    fat: &mut Fat<'_, '_>,
    g: &Geometry,
    first: u32,
    max: u64,
    exact_end: bool,
    what: &str,
) -> Result<Vec<u32>, FsError> {
    let mut chain = Vec::new();
    let mut seen = HashSet::new();
    let mut c = first;
    loop {
        if !seen.insert(c) {
            return Err(corrupt(
                fat.offset(c),
                format!("the FAT chain of the {what} loops back to cluster {c}"),
            ));
        }
        chain.push(c);
        let next = fat.get(c)?;
        if next == FAT_EOC {
            return Ok(chain);
        }
        if u64::try_from(chain.len()).unwrap_or(u64::MAX) >= max {
            if exact_end {
                return Err(corrupt(
                    fat.offset(c),
                    format!("the {what} is longer than {max} clusters"),
                ));
            }
            return Ok(chain);
        }
        if !g.is_cluster(next) {
            let kind = match next {
                0 => "a free entry".to_string(),
                FAT_BAD => "a bad cluster".to_string(),
                v => format!("{v:#010x}"),
            };
            return Err(corrupt(
                fat.offset(c),
                format!("the FAT chain of the {what} goes from cluster {c} to {kind}"),
            ));
        }
        c = next;
    }
}

/// An Allocation Bitmap directory entry.
#[derive(Debug, Clone, Copy)]
struct BitmapEntry {
    first_cluster: u32,
    length: u64,
    /// Partition byte offset of the directory entry.
    at: u64,
}

/// What the root directory holds that the map needs.
#[derive(Debug, Default)]
struct RootInfo {
    bitmaps: [Option<BitmapEntry>; 2],
    upcase_cluster: Option<u32>,
    label: Option<String>,
    clusters: Vec<u32>,
}

fn read_root(part: &Region<'_>, fat: &mut Fat<'_, '_>, g: &Geometry) -> Result<RootInfo, FsError> {
    let cb = g.cluster_bytes();
    let max = MAX_DIR_BYTES
        .checked_div(cb)
        .unwrap_or(1)
        .max(1)
        .min(u64::from(g.cluster_count));
    let mut root = RootInfo {
        clusters: walk_chain(fat, g, g.root_cluster, max, true, "root directory")?,
        ..RootInfo::default()
    };
    'scan: for &c in &root.clusters {
        let base = g.cluster_offset(c);
        let mut pos = 0u64;
        while pos < cb {
            let len = READ_CHUNK.min(cb.saturating_sub(pos));
            let at = base.saturating_add(pos);
            let buf = read_at(part, FS, at, usize::try_from(len).unwrap_or(0))?;
            for (i, e) in buf.chunks_exact(32).enumerate() {
                let e_at = at.saturating_add(u64::try_from(i).unwrap_or(0).saturating_mul(32));
                match e.first().copied().unwrap_or(0) {
                    0x00 => break 'scan,
                    0x81 => {
                        let which = usize::from(e.get(1).copied().unwrap_or(0) & 1);
                        let entry = BitmapEntry {
                            first_cluster: le32(e, 0x14).unwrap_or(0),
                            length: le64(e, 0x18).unwrap_or(0),
                            at: e_at,
                        };
                        match root.bitmaps.get_mut(which) {
                            Some(slot @ None) => *slot = Some(entry),
                            _ => {
                                return Err(corrupt(
                                    e_at,
                                    format!("a second Allocation Bitmap entry for bitmap {which}"),
                                ))
                            }
                        }
                    }
                    0x82 if root.upcase_cluster.is_none() => {
                        root.upcase_cluster = le32(e, 0x14);
                    }
                    0x83 => {
                        let n = usize::from(e.get(1).copied().unwrap_or(0).min(11));
                        root.label = Some(utf16_field(e, 2, n.saturating_mul(2)));
                    }
                    _ => {}
                }
            }
            pos = pos.saturating_add(len);
        }
    }
    Ok(root)
}

/// Reads the active bitmap and adds the clusters it marks to `used`.
fn add_bitmap(
    part: &Region<'_>,
    fat: &mut Fat<'_, '_>,
    g: &Geometry,
    bm: &BitmapEntry,
    used: &mut Extents,
) -> Result<Vec<u32>, FsError> {
    let cb = g.cluster_bytes();
    let need = u64::from(g.cluster_count).div_ceil(8);
    if bm.length < need {
        return Err(corrupt(
            bm.at,
            format!(
                "the Allocation Bitmap is {} bytes, but {} clusters need {need}",
                bm.length, g.cluster_count
            ),
        ));
    }
    if !g.is_cluster(bm.first_cluster) {
        return Err(corrupt(
            bm.at,
            format!(
                "the Allocation Bitmap starts at cluster {}, outside 2..={}",
                bm.first_cluster,
                g.last_cluster()
            ),
        ));
    }
    let n_clusters = need.div_ceil(cb.max(1));
    // The spec chains the bitmap through the FAT. A formatter that wrote no chain at all
    // (entry 0, the way the Linux driver reads it anyway) gets the contiguous clusters; the
    // self-check below then has to find them marked used.
    let clusters = if fat.get(bm.first_cluster)? == 0 {
        let last = u64::from(bm.first_cluster).saturating_add(n_clusters.saturating_sub(1));
        if last > u64::from(g.last_cluster()) {
            return Err(corrupt(
                bm.at,
                "the Allocation Bitmap runs past the last cluster",
            ));
        }
        (0..n_clusters)
            .map(|i| u32::try_from(u64::from(bm.first_cluster).saturating_add(i)))
            .collect::<Result<Vec<u32>, _>>()
            .map_err(|_| corrupt(bm.at, "the Allocation Bitmap runs past the last cluster"))?
    } else {
        let chain = walk_chain(
            fat,
            g,
            bm.first_cluster,
            n_clusters,
            false,
            "Allocation Bitmap",
        )?;
        if u64::try_from(chain.len()).unwrap_or(0) < n_clusters {
            return Err(corrupt(
                bm.at,
                format!(
                    "the Allocation Bitmap's chain has {} clusters, {n_clusters} are needed",
                    chain.len()
                ),
            ));
        }
        chain
    };
    let heap = g.heap_bytes();
    let mut done = 0u64; // bitmap bytes consumed
    for &c in &clusters {
        let base = g.cluster_offset(c);
        let mut pos = 0u64;
        while pos < cb && done < need {
            let len = READ_CHUNK
                .min(cb.saturating_sub(pos))
                .min(need.saturating_sub(done));
            let buf = read_at(
                part,
                FS,
                base.saturating_add(pos),
                usize::try_from(len).unwrap_or(0),
            )?;
            let first_bit = done.saturating_mul(8);
            let bits = len
                .saturating_mul(8)
                .min(u64::from(g.cluster_count).saturating_sub(first_bit));
            used.add_bitmap(
                &buf,
                bits,
                heap.saturating_add(first_bit.saturating_mul(cb)),
                cb,
            );
            done = done.saturating_add(len);
            pos = pos.saturating_add(len);
        }
    }
    Ok(clusters)
}

/// True when the whole cluster `c` is inside `used`.
fn covers(used: &Extents, g: &Geometry, c: u32) -> bool {
    let start = g.cluster_offset(c);
    let end = start.saturating_add(g.cluster_bytes());
    let runs = used.runs();
    let i = runs.partition_point(|r| r.0 <= start);
    i.checked_sub(1)
        .and_then(|i| runs.get(i))
        .is_some_and(|&(s, l)| s.saturating_add(l) >= end)
}

/// Fills `info.used` (and block size, label, warnings, minimum size) for a partition whose
/// signature says it holds exFAT.
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
    let g = parse_boot(&boot, part.len())?;
    let sector = usize::try_from(g.sector_bytes()).unwrap_or(0);
    let region = read_at(part, FS, 0, sector.saturating_mul(12))?;
    check_boot_checksum(&region, sector)?;

    let mut fat = Fat::new(part, &g);
    let root = read_root(part, &mut fat, &g)?;
    let which = usize::from(g.active_fat);
    let root_at = g.cluster_offset(g.root_cluster);
    let bm = root.bitmaps.get(which).copied().flatten().ok_or_else(|| {
        corrupt(
            root_at,
            format!("the root directory has no Allocation Bitmap entry for bitmap {which}"),
        )
    })?;
    if g.num_fats == 2 && root.bitmaps.iter().any(Option::is_none) {
        return Err(corrupt(
            root_at,
            "TexFAT volume without its second Allocation Bitmap",
        ));
    }

    let mut used = Extents::new();
    used.add(0, g.heap_bytes());
    let bitmap_clusters = add_bitmap(part, &mut fat, &g, &bm, &mut used)?;

    // Cross-check: the bitmap must mark the structures we just walked.
    let mut must: Vec<(u32, &str)> = Vec::new();
    must.extend(bitmap_clusters.iter().map(|&c| (c, "Allocation Bitmap")));
    must.extend(root.clusters.iter().map(|&c| (c, "root directory")));
    if let Some(c) = root.upcase_cluster.filter(|&c| g.is_cluster(c)) {
        must.push((c, "up-case table"));
    }
    if let Some((c, what)) = must.into_iter().find(|&(c, _)| !covers(&used, &g, c)) {
        return Err(corrupt(
            bm.at,
            format!("the Allocation Bitmap marks cluster {c} of the {what} free"),
        ));
    }

    info.block_size = u32::try_from(g.cluster_bytes()).unwrap_or(0);
    if let Some(label) = root.label {
        info.label = label;
    }
    if g.dirty {
        info.warnings.push(
            "exFAT volume is marked dirty (not unmounted cleanly); run fsck.exfat on the source"
                .into(),
        );
    }
    if g.media_failure {
        info.warnings
            .push("exFAT volume reports media failures (VolumeFlags bit 2)".into());
    }
    // No exFAT resizer here: the partition cannot be smaller than the filesystem.
    info.min_size = Some(g.fs_bytes());
    info.used = Some(used);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;

    const SECTOR: usize = 512;

    /// A small exFAT volume: 512-byte sectors, FAT at 24, heap at 64 or after the FAT;
    /// bitmap in cluster 2, up-case table in 3, root directory in 4.
    struct Vol {
        img: Vec<u8>,
        g: Geometry,
    }

    impl Vol {
        /// 4 KiB clusters.
        fn new(cluster_count: u32) -> Vol {
            Vol::with(cluster_count, 3)
        }

        fn with(cluster_count: u32, shift: u8) -> Vol {
            let fat_len = ((u64::from(cluster_count) + 2) * 4).div_ceil(512) as u32;
            let heap = (24 + u64::from(fat_len)).next_multiple_of(8).max(64);
            // A few sectors spare after the heap.
            let volume_length = heap + (u64::from(cluster_count) << shift) + 5;
            let mut img = vec![0u8; volume_length as usize * SECTOR];
            let b = &mut img[..SECTOR];
            b[0..3].copy_from_slice(&[0xEB, 0x76, 0x90]);
            b[3..11].copy_from_slice(b"EXFAT   ");
            b[0x48..0x50].copy_from_slice(&volume_length.to_le_bytes());
            b[0x50..0x54].copy_from_slice(&24u32.to_le_bytes());
            b[0x54..0x58].copy_from_slice(&fat_len.to_le_bytes());
            b[0x58..0x5C].copy_from_slice(&(heap as u32).to_le_bytes());
            b[0x5C..0x60].copy_from_slice(&cluster_count.to_le_bytes());
            b[0x60..0x64].copy_from_slice(&4u32.to_le_bytes()); // root at cluster 4
            b[0x64..0x68].copy_from_slice(&0x1234_5678u32.to_le_bytes());
            b[0x68..0x6A].copy_from_slice(&0x0100u16.to_le_bytes());
            b[0x6C] = 9;
            b[0x6D] = shift;
            b[0x6E] = 1;
            b[0x70] = 0xFF;
            b[0x1FE] = 0x55;
            b[0x1FF] = 0xAA;
            let g = parse_boot(&img[..SECTOR], img.len() as u64).unwrap();
            let mut v = Vol { img, g };
            v.set_fat(0, 0xFFFF_FFF8);
            v.set_fat(1, 0xFFFF_FFFF);
            // Bitmap in cluster 2 (one cluster covers 32768 clusters), up-case in 3, root in 4.
            v.set_fat(2, FAT_EOC);
            v.set_fat(3, FAT_EOC);
            v.set_fat(4, FAT_EOC);
            let bm_len = u64::from(cluster_count).div_ceil(8);
            v.dir_entry(4, 0, &bitmap_entry(0, 2, bm_len));
            v.dir_entry(4, 1, &{
                let mut e = [0u8; 32];
                e[0] = 0x82;
                e[0x14..0x18].copy_from_slice(&3u32.to_le_bytes());
                e[0x18..0x20].copy_from_slice(&5836u64.to_le_bytes());
                e
            });
            for c in 2..=4 {
                v.set_bit(c, true);
            }
            v.checksum();
            v
        }

        fn set_fat(&mut self, c: u32, v: u32) {
            let off = self.g.active_fat_bytes() as usize + c as usize * 4;
            self.img[off..off + 4].copy_from_slice(&v.to_le_bytes());
        }

        fn cluster(&mut self, c: u32) -> &mut [u8] {
            let off = self.g.cluster_offset(c) as usize;
            let cb = self.g.cluster_bytes() as usize;
            &mut self.img[off..off + cb]
        }

        fn dir_entry(&mut self, c: u32, i: usize, e: &[u8; 32]) {
            self.cluster(c)[i * 32..i * 32 + 32].copy_from_slice(e);
        }

        fn set_bit(&mut self, c: u32, on: bool) {
            let i = (c - 2) as usize;
            let bm = self.cluster(2);
            if on {
                bm[i / 8] |= 1 << (i % 8);
            } else {
                bm[i / 8] &= !(1 << (i % 8));
            }
        }

        fn checksum(&mut self) {
            let mut sum = 0u32;
            for (i, &b) in self.img[..11 * SECTOR].iter().enumerate() {
                if i == 0x6A || i == 0x6B || i == 0x70 {
                    continue;
                }
                sum = (if sum & 1 != 0 { 0x8000_0000u32 } else { 0 })
                    .wrapping_add(sum >> 1)
                    .wrapping_add(u32::from(b));
            }
            for w in self.img[11 * SECTOR..12 * SECTOR].chunks_exact_mut(4) {
                w.copy_from_slice(&sum.to_le_bytes());
            }
        }

        fn fill(&self) -> Result<FsInfo, FsError> {
            let d = MemDisk::from_vec(self.img.clone(), 512);
            let r = Region::whole(&d);
            let mut info = FsInfo::raw(FsKind::Exfat);
            fill(&r, &mut info).map(|()| info)
        }
    }

    fn bitmap_entry(flags: u8, first: u32, len: u64) -> [u8; 32] {
        let mut e = [0u8; 32];
        e[0] = 0x81;
        e[1] = flags;
        e[0x14..0x18].copy_from_slice(&first.to_le_bytes());
        e[0x18..0x20].copy_from_slice(&len.to_le_bytes());
        e
    }

    #[test]
    fn minimal_volume() {
        let mut v = Vol::new(1000);
        let mut label = [0u8; 32];
        label[0] = 0x83;
        label[1] = 4;
        for (i, ch) in "Tést".encode_utf16().enumerate() {
            label[2 + 2 * i..4 + 2 * i].copy_from_slice(&ch.to_le_bytes());
        }
        v.dir_entry(4, 2, &label);
        v.set_bit(10, true);
        v.set_bit(11, true);
        v.set_bit(1001, true); // the last cluster (partclone's libexfat loses it)
        let info = v.fill().unwrap();
        let g = &v.g;
        let cb = g.cluster_bytes();
        assert_eq!(
            info.used.unwrap().runs(),
            &[
                (0, g.heap_bytes() + 3 * cb),
                (g.cluster_offset(10), 2 * cb),
                (g.cluster_offset(1001), cb)
            ]
        );
        assert_eq!(info.label, "Tést");
        assert_eq!(info.block_size, 4096);
        assert_eq!(info.min_size, Some(v.img.len() as u64));
        assert!(info.warnings.is_empty());
    }

    #[test]
    fn padding_bits_past_cluster_count_are_ignored() {
        let mut v = Vol::new(1001); // 1001 bits: the last byte has 7 padding bits
        v.cluster(2)[125] = 0xFF;
        let info = v.fill().unwrap();
        let g = &v.g;
        let runs = info.used.unwrap();
        assert_eq!(runs.end(), g.cluster_offset(1002 + 1));
        assert_eq!(
            runs.runs().last(),
            Some(&(g.cluster_offset(1002), g.cluster_bytes()))
        );
    }

    #[test]
    fn dirty_warns() {
        let mut v = Vol::new(100);
        v.img[0x6A] = 2; // not covered by the checksum
        let info = v.fill().unwrap();
        assert!(info.warnings.iter().any(|w| w.contains("dirty")));
    }

    #[test]
    fn root_chain_loop_is_an_error() {
        let mut v = Vol::new(100);
        v.set_fat(4, 20);
        v.set_fat(20, 21);
        v.set_fat(21, 4);
        let e = v.fill().unwrap_err();
        assert!(e.to_string().contains("loops back to cluster 4"), "{e}");
        // A self-loop.
        let mut v = Vol::new(100);
        v.set_fat(4, 4);
        assert!(v.fill().unwrap_err().to_string().contains("loops"));
        // A chain into a free entry.
        let mut v = Vol::new(100);
        v.set_fat(4, 30);
        let e = v.fill().unwrap_err();
        assert!(e.to_string().contains("free entry"), "{e}");
        // A chain out of range.
        let mut v = Vol::new(100);
        v.set_fat(4, 5000);
        assert!(v.fill().is_err());
    }

    #[test]
    fn root_over_several_clusters() {
        let mut v = Vol::new(100);
        v.set_fat(4, 50);
        v.set_fat(50, FAT_EOC);
        v.set_bit(50, true);
        // Move the bitmap entry to the second root cluster: fill the first with other entries.
        let mut other = [0u8; 32];
        other[0] = 0x85;
        for i in 0..128 {
            v.dir_entry(4, i, &other);
        }
        v.dir_entry(50, 0, &bitmap_entry(0, 2, 13));
        assert!(v.fill().is_ok());
        // Root cluster 50 marked free in the bitmap: the cross-check refuses.
        v.set_bit(50, false);
        let e = v.fill().unwrap_err();
        assert!(
            e.to_string()
                .contains("cluster 50 of the root directory free"),
            "{e}"
        );
    }

    #[test]
    fn fragmented_bitmap_follows_its_chain() {
        // 5000 clusters of 512 bytes: a 625-byte bitmap in 2 clusters, chained 2 → 60.
        let mut v = Vol::with(5000, 0);
        v.dir_entry(4, 0, &bitmap_entry(0, 2, 625));
        v.set_fat(2, 60);
        v.set_fat(60, FAT_EOC);
        v.set_bit(60, true);
        // The bit for cluster 4900 lives in the second bitmap cluster (byte 612).
        let i = 4900 - 2;
        v.cluster(60)[i / 8 - 512] |= 1 << (i % 8);
        v.cluster(60)[624 - 512] = 0xFF; // the last byte: clusters 4994..=5001, plus padding
        let info = v.fill().unwrap();
        let g = v.g.clone();
        let used = info.used.unwrap();
        assert!(covers(&used, &g, 4900));
        assert!(covers(&used, &g, 60));
        assert!(covers(&used, &g, 5001));
        assert!(!covers(&used, &g, 3000));
        assert!(!covers(&used, &g, 4901));
        assert_eq!(used.end(), g.cluster_offset(5002));
        // The chain is one short.
        v.set_fat(2, FAT_EOC);
        assert!(v
            .fill()
            .unwrap_err()
            .to_string()
            .contains("chain has 1 clusters"));
    }

    #[test]
    fn bitmap_without_chain_is_read_contiguous() {
        let mut v = Vol::new(100);
        v.set_fat(2, 0);
        assert!(v.fill().is_ok());
        // …but its own cluster must be marked used.
        v.set_bit(2, false);
        assert!(v
            .fill()
            .unwrap_err()
            .to_string()
            .contains("Allocation Bitmap free"));
    }

    #[test]
    fn texfat_uses_the_active_bitmap() {
        let mut v = Vol::new(100);
        // Second FAT right after the first; second bitmap in cluster 5.
        v.img[0x6E] = 2;
        v.g = parse_boot(&v.img[..SECTOR], v.img.len() as u64).unwrap();
        v.set_fat(5, FAT_EOC);
        v.dir_entry(4, 2, &bitmap_entry(1, 5, 13));
        v.set_bit(5, true);
        v.set_bit(40, true);
        v.checksum();
        let info = v.fill().unwrap();
        assert!(covers(info.used.as_ref().unwrap(), &v.g, 40));
        // Switch to FAT 1 / bitmap 1: its FAT needs the chains too.
        v.img[0x6A] = 1;
        v.g = parse_boot(&v.img[..SECTOR], v.img.len() as u64).unwrap();
        for c in 2..=5 {
            v.set_fat(c, FAT_EOC);
        }
        let bm1 = v.g.cluster_offset(5) as usize;
        for c in [2usize, 3, 4, 5, 70] {
            v.img[bm1 + (c - 2) / 8] |= 1 << ((c - 2) % 8);
        }
        let info = v.fill().unwrap();
        let used = info.used.unwrap();
        assert!(covers(&used, &v.g, 70));
        assert!(!covers(&used, &v.g, 40));
        // Only one bitmap entry on a TexFAT volume.
        v.dir_entry(4, 2, &[0u8; 32]);
        assert!(v.fill().is_err());
    }

    #[test]
    fn bad_boot_sectors_are_errors() {
        let v = Vol::new(100);
        let len = v.img.len() as u64;
        let good = v.img[..SECTOR].to_vec();
        assert!(parse_boot(&good, len).is_ok());
        let cases: &[(usize, &[u8], u64)] = &[
            (0x20, &[1], 0x20), // MustBeZero
            (0x6C, &[8], 0x6C), // sector shift
            (0x6C, &[13], 0x6C),
            (0x6D, &[17], 0x6D), // 64 MiB clusters
            (0x6E, &[0], 0x6E),
            (0x6E, &[3], 0x6E),
            (0x6A, &[1], 0x6A), // active FAT 1 of 1
            (
                0x48,
                &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
                0x48,
            ),
            (0x50, &[23, 0, 0, 0], 0x50), // FAT in the boot regions
            (0x54, &[0, 0, 0, 0], 0x54),  // FAT too short
            (0x58, &[24, 0, 0, 0], 0x58), // heap inside the FAT
            (0x5C, &[0, 0, 0, 0], 0x5C),
            (0x5C, &[0xFF, 0xFF, 0xFF, 0xFF], 0x5C),
            (0x5C, &[0xFF, 0x1F, 0, 0], 0x54), // FAT too short for them
            (0x60, &[1, 0, 0, 0], 0x60),       // root cluster
            (0x60, &[103, 0, 0, 0], 0x60),
            (0x69, &[2], 0x68), // revision 2.00
            (0x1FE, &[0], 0x1FE),
        ];
        for &(off, bytes, err_off) in cases {
            let mut b = good.clone();
            b[off..off + bytes.len()].copy_from_slice(bytes);
            match parse_boot(&b, len) {
                Err(FsError::Corrupt { offset, .. }) => {
                    assert_eq!(offset, err_off, "patch at {off:#x}")
                }
                other => panic!("patch at {off:#x}: {other:?}"),
            }
        }
        // Heap past the volume.
        let mut b = good.clone();
        b[0x48..0x50].copy_from_slice(&100u64.to_le_bytes());
        assert!(matches!(
            parse_boot(&b, len),
            Err(FsError::Corrupt { offset: 0x5C, .. })
        ));
        // Bigger than the partition.
        assert!(matches!(
            parse_boot(&good, len - 1),
            Err(FsError::Corrupt { offset: 0x48, .. })
        ));
        assert!(parse_boot(&good[..200], len).is_err());
    }

    #[test]
    fn checksum_and_missing_bitmap() {
        let mut v = Vol::new(100);
        v.img[0x100] ^= 1; // boot code, covered by the checksum
        assert!(v.fill().unwrap_err().to_string().contains("checksum"));
        let mut v = Vol::new(100);
        v.dir_entry(4, 0, &[0u8; 32]); // end of directory before the bitmap entry
        assert!(v
            .fill()
            .unwrap_err()
            .to_string()
            .contains("no Allocation Bitmap"));
        let mut v = Vol::new(100);
        v.dir_entry(4, 0, &bitmap_entry(0, 2, 5)); // too short for 100 clusters
        assert!(v.fill().is_err());
        let mut v = Vol::new(100);
        v.dir_entry(4, 0, &bitmap_entry(0, 999, 13)); // outside the heap
        assert!(v.fill().is_err());
        let mut v = Vol::new(100);
        v.dir_entry(4, 2, &bitmap_entry(0, 2, 13)); // a second entry for bitmap 0
        assert!(v.fill().is_err());
    }

    #[test]
    fn truncated_and_random_images_never_panic() {
        let v = Vol::new(300);
        for cut in [
            0usize,
            100,
            511,
            512,
            4096,
            6144,
            32768,
            40000,
            v.img.len() - 1,
        ] {
            let d = MemDisk::from_vec(v.img[..cut].to_vec(), 512);
            let mut info = FsInfo::raw(FsKind::Exfat);
            assert!(fill(&Region::whole(&d), &mut info).is_err(), "cut {cut}");
        }
        // Random damage to the FAT, the root directory and the bitmap: errors or maps, never panics.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..2000 {
            let mut img = v.img.clone();
            for _ in 0..8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let area = match x % 3 {
                    0 => 24 * SECTOR..(24 * SECTOR + 64),
                    1 => v.g.cluster_offset(4) as usize..v.g.cluster_offset(4) as usize + 128,
                    _ => v.g.cluster_offset(2) as usize..v.g.cluster_offset(2) as usize + 64,
                };
                let off = area.start + ((x >> 8) as usize % area.len());
                img[off] = (x >> 40) as u8;
            }
            let d = MemDisk::from_vec(img, 512);
            let mut info = FsInfo::raw(FsKind::Exfat);
            let _ = fill(&Region::whole(&d), &mut info);
        }
    }
}
