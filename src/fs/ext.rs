//! ext2/3/4: the used-block map from the per-group block bitmaps (reference:
//! ../shared/reference/filesystems.md, section 5).
//!
//! The map is, for each block group, its block bitmap (bits are clusters with bigalloc). Groups
//! flagged BLOCK_UNINIT (with GDT_CSUM or METADATA_CSUM) have a bitmap that was never written:
//! their allocation is rebuilt the way e2fsprogs does (`mark_uninit_bg_group_blocks`,
//! `ext2fs_reserve_super_and_bgd`): backup superblock, old-style GDT + reserved GDT or the
//! meta_bg GDT block, and the group's own bitmaps and inode table. Every group is checked against
//! its descriptor's free count (and checksums, when the filesystem has them); a group that fails
//! is stored whole, with a warning. Block 0 (boot block, and the superblock with blocks > 1 KiB)
//! is always stored.

#![deny(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use crate::bytes::{le16, le32};
use crate::disk::Region;
use crate::fs::checksum::{crc16, crc32c_update};
use crate::fs::{read_at, Extents, FsError, FsInfo, FsKind};

/// The primary superblock: byte 1024, 1024 bytes long.
const SB_OFFSET: u64 = 1024;
const SB_LEN: usize = 1024;
const SB_END: u64 = 2048;
const MAGIC: u16 = 0xEF53;

const COMPAT_HAS_JOURNAL: u32 = 0x4;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;

const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
/// Incompatible features whose effect on block allocation is known (none of them changes what
/// a block bitmap means): filetype, recover, journal_dev, meta_bg, extents, 64bit, mmp, flex_bg,
/// ea_inode, dirdata, csum_seed, large_dir, inline_data, encrypt, casefold. Anything else
/// (compression 0x1, future bits) makes the map untrustworthy: the partition is imaged raw.
const INCOMPAT_KNOWN: u32 = 0x0002 // filetype
    | 0x0004 // recover
    | 0x0008 // journal_dev
    | 0x0010 // meta_bg
    | 0x0040 // extents
    | 0x0080 // 64bit
    | 0x0100 // mmp
    | 0x0200 // flex_bg
    | 0x0400 // ea_inode
    | 0x1000 // dirdata
    | 0x2000 // csum_seed
    | 0x4000 // large_dir
    | 0x8000 // inline_data
    | 0x1_0000 // encrypt
    | 0x2_0000;

const RO_SPARSE_SUPER: u32 = 0x1;
const RO_GDT_CSUM: u32 = 0x10;
const RO_BIGALLOC: u32 = 0x200;
const RO_METADATA_CSUM: u32 = 0x400;

const STATE_VALID: u16 = 0x1;
const STATE_ERROR: u16 = 0x2;

const BG_BLOCK_UNINIT: u16 = 0x2;

/// Block size 1 KiB..64 KiB (`s_log_block_size` 0..=6, e2fsprogs EXT2_MAX_BLOCK_LOG_SIZE 16).
const MAX_LOG_BLOCK: u32 = 6;
/// Cluster size up to 512 MiB (e2fsprogs EXT2_MAX_CLUSTER_LOG_SIZE 29, i.e. 1024 << 19).
const MAX_LOG_CLUSTER: u32 = 19;
/// Descriptor size with 64BIT: 64..=1024, a power of two (e2fsprogs EXT2_{MIN,MAX}_DESC_SIZE).
const DESC_SIZE_64: std::ops::RangeInclusive<u64> = 64..=1024;
/// Descriptor field offsets.
const BG_FLAGS: usize = 0x12;
const BG_CHECKSUM: usize = 0x1E;
/// A 64-byte descriptor holds the high half of the block bitmap checksum only this far in.
const BG_BLOCK_BITMAP_CSUM_HI_END: u64 = 0x3A;
/// Per-group warnings kept in full; the rest are summed up in one line.
const MAX_GROUP_WARNINGS: usize = 8;

/// How group descriptors (and bitmaps) are checksummed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Csum {
    /// No checksums: BLOCK_UNINIT means nothing, every bitmap is read.
    None,
    /// GDT_CSUM (uninit_bg): crc16 over uuid, group number and descriptor.
    Crc16,
    /// METADATA_CSUM: crc32c seeded from the uuid (or `s_checksum_seed`).
    Crc32c(u32),
}

/// The superblock fields that place groups, descriptors and bitmaps, validated.
#[derive(Debug, Clone)]
struct Geometry {
    block_size: u64,
    /// log2(blocks per cluster); 0 without bigalloc.
    cluster_bits: u32,
    blocks_count: u64,
    free_blocks: u64,
    first_data_block: u64,
    blocks_per_group: u64,
    clusters_per_group: u64,
    inode_blocks_per_group: u64,
    groups: u64,
    desc_size: u64,
    desc_per_block: u64,
    desc_blocks: u64,
    reserved_gdt: u64,
    first_meta_bg: u64,
    meta_bg: bool,
    sparse_super: bool,
    sparse_super2: bool,
    backup_bgs: [u64; 2],
    csum: Csum,
    uuid: [u8; 16],
}

/// A parse failure: the byte offset inside the superblock and what is wrong.
#[derive(Debug)]
struct Bad {
    at: usize,
    detail: String,
}

fn bad(at: usize, detail: impl Into<String>) -> Bad {
    Bad {
        at,
        detail: detail.into(),
    }
}

fn sb32(sb: &[u8], off: usize) -> Result<u32, Bad> {
    le32(sb, off).ok_or_else(|| bad(off, "superblock too short"))
}

fn sb16(sb: &[u8], off: usize) -> Result<u16, Bad> {
    le16(sb, off).ok_or_else(|| bad(off, "superblock too short"))
}

fn div_ceil(a: u64, b: u64) -> Option<u64> {
    if b == 0 {
        return None;
    }
    Some(a.div_ceil(b))
}

impl Geometry {
    /// Validates the superblock `sb` (1024 bytes) of a partition of `part_len` bytes.
    fn parse(sb: &[u8], part_len: u64) -> Result<Geometry, Bad> {
        let compat = sb32(sb, 0x5C)?;
        let incompat = sb32(sb, 0x60)?;
        let ro_compat = sb32(sb, 0x64)?;
        let is64 = incompat & INCOMPAT_64BIT != 0;
        let bigalloc = ro_compat & RO_BIGALLOC != 0;

        let log_block = sb32(sb, 0x18)?;
        if log_block > MAX_LOG_BLOCK {
            return Err(bad(
                0x18,
                format!("block size 1024 << {log_block} is over the 64 KiB maximum"),
            ));
        }
        let block_size = 1024u64 << log_block;
        let cluster_bits = if bigalloc {
            let log_cluster = sb32(sb, 0x1C)?;
            if log_cluster < log_block || log_cluster > MAX_LOG_CLUSTER {
                return Err(bad(
                    0x1C,
                    format!(
                        "cluster size 1024 << {log_cluster} is smaller than the block size or \
                         over 512 MiB"
                    ),
                ));
            }
            log_cluster.saturating_sub(log_block)
        } else {
            0
        };

        let mut blocks_count = u64::from(sb32(sb, 0x04)?);
        let mut free_blocks = u64::from(sb32(sb, 0x0C)?);
        if is64 {
            blocks_count |= u64::from(sb32(sb, 0x150)?) << 32;
            free_blocks |= u64::from(sb32(sb, 0x158)?) << 32;
        }
        let first_data_block = u64::from(sb32(sb, 0x14)?);
        let fdb_ok = match first_data_block {
            0 => true,
            1 => block_size == 1024 && !bigalloc,
            _ => false,
        };
        if !fdb_ok {
            return Err(bad(
                0x14,
                format!(
                    "first data block {first_data_block} is impossible with {block_size}-byte \
                     blocks{}",
                    if bigalloc { " and bigalloc" } else { "" }
                ),
            ));
        }
        if blocks_count <= first_data_block {
            return Err(bad(
                0x04,
                format!("block count {blocks_count} is too small"),
            ));
        }
        let fs_bytes = blocks_count.saturating_mul(block_size);
        if fs_bytes > part_len {
            return Err(bad(
                0x04,
                format!(
                    "the filesystem is {fs_bytes} bytes ({blocks_count} blocks of {block_size}), \
                     larger than the partition ({part_len} bytes): the partition was shrunk or \
                     the table is wrong"
                ),
            ));
        }
        if free_blocks > blocks_count {
            return Err(bad(
                0x0C,
                format!("free block count {free_blocks} exceeds the block count {blocks_count}"),
            ));
        }

        let bits_per_block = block_size.saturating_mul(8);
        let blocks_per_group = u64::from(sb32(sb, 0x20)?);
        let clusters_per_group = if bigalloc {
            let cpg = u64::from(sb32(sb, 0x24)?);
            if cpg == 0 || cpg > bits_per_block {
                return Err(bad(
                    0x24,
                    format!("clusters per group {cpg} is not in 1..={bits_per_block}"),
                ));
            }
            if cpg.checked_shl(cluster_bits) != Some(blocks_per_group) {
                return Err(bad(
                    0x20,
                    format!(
                        "blocks per group {blocks_per_group} is not clusters per group {cpg} \
                         × {} blocks per cluster",
                        1u64 << cluster_bits
                    ),
                ));
            }
            cpg
        } else {
            if blocks_per_group < 8 || blocks_per_group > bits_per_block {
                return Err(bad(
                    0x20,
                    format!("blocks per group {blocks_per_group} is not in 8..={bits_per_block}"),
                ));
            }
            blocks_per_group
        };

        let inodes_count = u64::from(sb32(sb, 0x00)?);
        let inodes_per_group = u64::from(sb32(sb, 0x28)?);
        if inodes_per_group == 0 || inodes_per_group > bits_per_block {
            return Err(bad(
                0x28,
                format!("inodes per group {inodes_per_group} is not in 1..={bits_per_block}"),
            ));
        }
        let rev_level = sb32(sb, 0x4C)?;
        let inode_size = if rev_level == 0 {
            128
        } else {
            u64::from(sb16(sb, 0x58)?)
        };
        if inode_size < 128 || inode_size > block_size || !inode_size.is_power_of_two() {
            return Err(bad(
                0x58,
                format!("inode size {inode_size} is not a power of two in 128..={block_size}"),
            ));
        }
        let inode_blocks_per_group =
            div_ceil(inodes_per_group.saturating_mul(inode_size), block_size).unwrap_or(0);

        let groups = div_ceil(
            blocks_count.saturating_sub(first_data_block),
            blocks_per_group,
        )
        .unwrap_or(0);
        if groups.checked_mul(inodes_per_group) != Some(inodes_count) {
            return Err(bad(
                0x00,
                format!(
                    "{groups} groups × {inodes_per_group} inodes per group is not the inode \
                     count {inodes_count}"
                ),
            ));
        }

        let desc_size = if is64 {
            let ds = u64::from(sb16(sb, 0xFE)?);
            if !DESC_SIZE_64.contains(&ds) || !ds.is_power_of_two() || ds > block_size {
                return Err(bad(
                    0xFE,
                    format!("group descriptor size {ds} is not a power of two in 64..=1024"),
                ));
            }
            ds
        } else {
            32
        };
        let desc_per_block = block_size.checked_div(desc_size).unwrap_or(0);
        let desc_blocks = div_ceil(groups, desc_per_block).unwrap_or(0);
        if desc_per_block == 0 || desc_blocks == 0 || desc_blocks >= blocks_count {
            return Err(bad(
                0x20,
                format!("{groups} groups need {desc_blocks} descriptor blocks: impossible"),
            ));
        }
        let reserved_gdt = u64::from(sb16(sb, 0xCE)?);
        if reserved_gdt > block_size / 4 {
            return Err(bad(
                0xCE,
                format!(
                    "{reserved_gdt} reserved GDT blocks is more than the {} a resize inode can \
                     map",
                    block_size / 4
                ),
            ));
        }
        let meta_bg = incompat & INCOMPAT_META_BG != 0;
        let first_meta_bg = u64::from(sb32(sb, 0x104)?);
        if meta_bg && first_meta_bg > desc_blocks {
            return Err(bad(
                0x104,
                format!(
                    "first meta_bg {first_meta_bg} is past the {desc_blocks} descriptor blocks"
                ),
            ));
        }

        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(
            sb.get(0x68..0x78)
                .ok_or_else(|| bad(0x68, "superblock too short"))?,
        );
        let csum = if ro_compat & RO_METADATA_CSUM != 0 {
            let seed = if incompat & INCOMPAT_CSUM_SEED != 0 {
                sb32(sb, 0x270)?
            } else {
                crc32c_update(!0, &uuid)
            };
            Csum::Crc32c(seed)
        } else if ro_compat & RO_GDT_CSUM != 0 {
            Csum::Crc16
        } else {
            Csum::None
        };

        Ok(Geometry {
            block_size,
            cluster_bits,
            blocks_count,
            free_blocks,
            first_data_block,
            blocks_per_group,
            clusters_per_group,
            inode_blocks_per_group,
            groups,
            desc_size,
            desc_per_block,
            desc_blocks,
            reserved_gdt,
            first_meta_bg,
            meta_bg,
            sparse_super: ro_compat & RO_SPARSE_SUPER != 0,
            sparse_super2: compat & COMPAT_SPARSE_SUPER2 != 0,
            backup_bgs: [u64::from(sb32(sb, 0x24C)?), u64::from(sb32(sb, 0x250)?)],
            csum,
            uuid,
        })
    }

    /// First block of group `g` (`g < groups`, so this cannot overflow).
    fn group_first(&self, g: u64) -> u64 {
        self.first_data_block
            .saturating_add(g.saturating_mul(self.blocks_per_group))
    }

    /// Blocks in group `g`; the last group may be short.
    fn group_blocks(&self, g: u64) -> u64 {
        self.blocks_count
            .saturating_sub(self.group_first(g))
            .min(self.blocks_per_group)
    }

    /// Does group `g` hold a superblock copy (`ext2fs_bg_has_super`)?
    fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.sparse_super2 {
            return self.backup_bgs.contains(&g);
        }
        if g == 1 || !self.sparse_super {
            return true;
        }
        g % 2 == 1 && (is_power_of(g, 3) || is_power_of(g, 5) || is_power_of(g, 7))
    }

    /// The block holding group `g`'s superblock copy (if it has one): the first block of the
    /// group, except for group 0 where the primary sits at byte 1024 (block 1 with 1 KiB blocks
    /// even when bigalloc makes the first data block 0).
    fn super_block(&self, g: u64) -> u64 {
        if g == 0 {
            SB_OFFSET.checked_div(self.block_size).unwrap_or(0)
        } else {
            self.group_first(g)
        }
    }

    /// Blocks of the old-style GDT (plus reserved GDT) after a superblock copy.
    fn old_desc_blocks(&self) -> u64 {
        if self.meta_bg {
            self.first_meta_bg
        } else {
            self.desc_blocks.saturating_add(self.reserved_gdt)
        }
    }

    /// Where descriptor block `i` lives (`ext2fs_descriptor_block_loc2` for the primary copy).
    fn desc_block(&self, i: u64) -> u64 {
        if !self.meta_bg || i < self.first_meta_bg {
            return self.super_block(0).saturating_add(1).saturating_add(i);
        }
        let bg = i.saturating_mul(self.desc_per_block);
        self.super_block(bg)
            .saturating_add(u64::from(self.has_super(bg)))
    }

    /// The blocks `ext2fs_reserve_super_and_bgd` reserves in group `g`: (start, count) ranges.
    fn base_meta(&self, g: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let has_super = self.has_super(g);
        let sb = self.super_block(g);
        if has_super {
            out.push((sb, 1));
        }
        let meta_group = g.checked_div(self.desc_per_block).unwrap_or(0);
        if !self.meta_bg || meta_group < self.first_meta_bg {
            if has_super {
                let start = sb.saturating_add(1);
                let n = self
                    .old_desc_blocks()
                    .min(self.blocks_count.saturating_sub(start));
                out.push((start, n));
            }
        } else {
            let r = g.checked_rem(self.desc_per_block).unwrap_or(0);
            if r == 0 || r == 1 || r == self.desc_per_block.saturating_sub(1) {
                out.push((sb.saturating_add(u64::from(has_super)), 1));
            }
        }
        out
    }

    /// Descriptor checksum of group `g` (`ext2fs_group_desc_csum`); `None` without checksums.
    fn desc_csum(&self, g: u64, desc: &[u8]) -> Option<u16> {
        let group = u32::try_from(g).ok()?.to_le_bytes();
        let before = desc.get(..BG_CHECKSUM)?;
        let after = desc.get(BG_CHECKSUM.saturating_add(2)..)?;
        match self.csum {
            Csum::None => None,
            Csum::Crc32c(seed) => {
                let c = crc32c_update(seed, &group);
                let c = crc32c_update(c, before);
                let c = crc32c_update(c, &[0, 0]);
                let c = crc32c_update(c, after);
                u16::try_from(c & 0xFFFF).ok()
            }
            Csum::Crc16 => {
                let c = crc16(!0, &self.uuid);
                let c = crc16(c, &group);
                let c = crc16(c, before);
                Some(crc16(c, after))
            }
        }
    }
}

/// Is `n` a power of `base` (`n ≥ 1`)?
fn is_power_of(n: u64, base: u64) -> bool {
    let mut p = 1u64;
    while p < n {
        match p.checked_mul(base) {
            Some(q) => p = q,
            None => return false,
        }
    }
    p == n
}

/// Set bits among the first `nbits` of an LSB-first bitmap.
fn count_bits(bitmap: &[u8], nbits: u64) -> u64 {
    let full = usize::try_from(nbits / 8).unwrap_or(usize::MAX);
    let mut n: u64 = bitmap
        .iter()
        .take(full)
        .map(|b| u64::from(b.count_ones()))
        .sum();
    let rest = nbits % 8;
    if rest != 0 {
        let last = bitmap.get(full).copied().unwrap_or(0);
        let mask = u8::try_from((1u16 << rest).saturating_sub(1)).unwrap_or(0xFF);
        n = n.saturating_add(u64::from((last & mask).count_ones()));
    }
    n
}

/// Sets bits `[from, to)` of an LSB-first bitmap (bits past its end are ignored).
fn set_bits(bitmap: &mut [u8], from: u64, to: u64) {
    let mut i = from;
    while i < to {
        let Some(byte) = usize::try_from(i / 8)
            .ok()
            .and_then(|idx| bitmap.get_mut(idx))
        else {
            return;
        };
        *byte |= 1u8 << (i % 8);
        i = i.saturating_add(1);
    }
}

/// One group descriptor, decoded.
#[derive(Debug, Clone, Copy)]
struct Desc {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    free_clusters: u64,
    flags: u16,
    bitmap_csum: u32,
    checksum: u16,
}

fn parse_desc(d: &[u8], desc_size: u64) -> Option<Desc> {
    let wide = desc_size >= 64;
    let hi32 = |off: usize| -> Option<u64> {
        if wide {
            le32(d, off).map(|v| u64::from(v) << 32)
        } else {
            Some(0)
        }
    };
    let hi16 = |off: usize| -> Option<u64> {
        if wide {
            le16(d, off).map(|v| u64::from(v) << 16)
        } else {
            Some(0)
        }
    };
    Some(Desc {
        block_bitmap: u64::from(le32(d, 0x00)?) | hi32(0x20)?,
        inode_bitmap: u64::from(le32(d, 0x04)?) | hi32(0x24)?,
        inode_table: u64::from(le32(d, 0x08)?) | hi32(0x28)?,
        free_clusters: u64::from(le16(d, 0x0C)?) | hi16(0x2C)?,
        flags: le16(d, BG_FLAGS)?,
        bitmap_csum: u32::from(le16(d, 0x18)?)
            | if desc_size >= BG_BLOCK_BITMAP_CSUM_HI_END {
                u32::from(le16(d, 0x38)?) << 16
            } else {
                0
            },
        checksum: le16(d, BG_CHECKSUM)?,
    })
}

/// What one group contributes.
enum GroupMap {
    /// Trusted: the bitmap (`nbits` clusters from the group start) plus out-of-group blocks.
    Bitmap,
    /// Not trusted: store the whole group; the reason.
    Whole(String),
}

/// Reads and checks group `g`. `bitmap` (one block) receives the group's cluster bitmap;
/// out-of-group metadata that a BLOCK_UNINIT rebuild finds goes to `extra` (byte ranges).
fn map_group(
    part: &Region<'_>,
    fs: FsKind,
    geo: &Geometry,
    g: u64,
    raw: &[u8],
    bitmap: &mut [u8],
    extra: &mut Vec<(u64, u64)>,
) -> Result<GroupMap, FsError> {
    let bs = geo.block_size;
    let Some(d) = parse_desc(raw, geo.desc_size) else {
        return Ok(GroupMap::Whole("its descriptor is cut short".into()));
    };
    if let Some(want) = geo.desc_csum(g, raw) {
        if want != d.checksum {
            return Ok(GroupMap::Whole(format!(
                "descriptor checksum {:#06x}, computed {want:#06x}",
                d.checksum
            )));
        }
    }
    let gfirst = geo.group_first(g);
    let gblocks = geo.group_blocks(g);
    let gend = gfirst.saturating_add(gblocks);
    let nbits = div_ceil(gblocks, 1u64 << geo.cluster_bits).unwrap_or(0);
    let uninit_flag = d.flags & BG_BLOCK_UNINIT != 0;
    let uninit = uninit_flag && geo.csum != Csum::None;
    bitmap.fill(0);

    if !uninit {
        if d.block_bitmap == 0 || d.block_bitmap >= geo.blocks_count {
            return Ok(GroupMap::Whole(format!(
                "its block bitmap pointer {} is outside the filesystem",
                d.block_bitmap
            )));
        }
        let off = d.block_bitmap.saturating_mul(bs);
        part.read_exact_at(bitmap, off)
            .map_err(|source| FsError::Io {
                fs,
                offset: off,
                source,
            })?;
        if let Csum::Crc32c(seed) = geo.csum {
            let len = usize::try_from(geo.clusters_per_group / 8).unwrap_or(usize::MAX);
            let c = crc32c_update(seed, bitmap.get(..len).unwrap_or(bitmap));
            let c = if geo.desc_size >= BG_BLOCK_BITMAP_CSUM_HI_END {
                c
            } else {
                c & 0xFFFF
            };
            if c != d.bitmap_csum {
                return Ok(GroupMap::Whole(format!(
                    "its block bitmap at partition byte {off:#x} has checksum {:#x}, computed \
                     {c:#x}",
                    d.bitmap_csum
                )));
            }
        }
    }

    if uninit_flag {
        // Rebuild: what e2fsprogs marks for a BLOCK_UNINIT group. Without checksums the flag
        // is meaningless and the bitmap was read; marking these too only adds certainty.
        let mut ranges = geo.base_meta(g);
        if d.inode_table != 0 {
            ranges.push((d.inode_table, geo.inode_blocks_per_group));
        }
        for b in [d.block_bitmap, d.inode_bitmap] {
            if b != 0 {
                ranges.push((b, 1));
            }
        }
        for (start, n) in ranges {
            let end = start.saturating_add(n);
            if end > geo.blocks_count || start.checked_mul(bs).is_none() {
                return Ok(GroupMap::Whole(format!(
                    "its metadata at blocks {start}..{end} is outside the filesystem"
                )));
            }
            let (lo, hi) = (start.max(gfirst), end.min(gend));
            if lo < hi {
                let c0 = (lo.saturating_sub(gfirst)) >> geo.cluster_bits;
                let c1 = div_ceil(hi.saturating_sub(gfirst), 1u64 << geo.cluster_bits).unwrap_or(0);
                set_bits(bitmap, c0, c1);
            }
            if start < gfirst {
                let e = end.min(gfirst);
                extra.push((
                    start.saturating_mul(bs),
                    e.saturating_sub(start).saturating_mul(bs),
                ));
            }
            if end > gend {
                let s = start.max(gend);
                extra.push((
                    s.saturating_mul(bs),
                    end.saturating_sub(s).saturating_mul(bs),
                ));
            }
        }
    }

    let used = count_bits(bitmap, nbits);
    match nbits.checked_sub(d.free_clusters) {
        Some(expect) if expect == used => Ok(GroupMap::Bitmap),
        Some(expect) => Ok(GroupMap::Whole(format!(
            "its {} {} used {}, its descriptor says {expect}",
            if uninit {
                "rebuilt map (BLOCK_UNINIT) has"
            } else {
                "block bitmap has"
            },
            used,
            if geo.cluster_bits > 0 {
                "clusters"
            } else {
                "blocks"
            },
        ))),
        None => Ok(GroupMap::Whole(format!(
            "its descriptor says {} free of {nbits}",
            d.free_clusters
        ))),
    }
}

/// Fills `info.used` (and block size, warnings, minimum size) for an ext2/3/4 partition.
/// Leaving `used` as `None` images the partition raw.
pub fn fill(part: &Region<'_>, info: &mut FsInfo) -> Result<(), FsError> {
    let fs = info.kind;
    let corrupt = |offset: u64, detail: String| FsError::Corrupt { fs, offset, detail };
    let sb = read_at(part, fs, SB_OFFSET, SB_LEN)?;
    let field = |off: usize| SB_OFFSET.saturating_add(u64::try_from(off).unwrap_or(0));
    let get32 = |off: usize| le32(&sb, off).unwrap_or(0);

    if le16(&sb, 0x38) != Some(MAGIC) {
        return Err(corrupt(
            field(0x38),
            "no ext superblock magic 0xEF53".into(),
        ));
    }
    let compat = get32(0x5C);
    let incompat = get32(0x60);
    let ro_compat = get32(0x64);
    if ro_compat & RO_METADATA_CSUM != 0 {
        let stored = get32(0x3FC);
        let computed = crc32c_update(!0, sb.get(..0x3FC).unwrap_or(&[]));
        if stored != computed {
            return Err(corrupt(
                field(0x3FC),
                format!("superblock checksum {stored:#010x}, computed {computed:#010x}"),
            ));
        }
    }
    if incompat & INCOMPAT_JOURNAL_DEV != 0 {
        info.warnings.push(
            "this is an external ext journal device, not a filesystem: it is imaged raw (save \
             the filesystem that uses it too)"
                .into(),
        );
        return Ok(());
    }
    if incompat & INCOMPAT_RECOVER != 0 {
        return Err(FsError::Refused {
            fs,
            detail: "the journal holds transactions that were never replayed (needs_recovery; \
                     or the filesystem is mounted), so the block bitmaps may be out of date. \
                     Unmount it and replay the journal with `e2fsck -E journal_only DEVICE` (or \
                     mount and unmount it), then save again"
                .into(),
        });
    }
    let state = le16(&sb, 0x3A).unwrap_or(0);
    if state & STATE_ERROR != 0 {
        return Err(FsError::Refused {
            fs,
            detail: "the filesystem is marked as having errors. Repair it with `e2fsck -f \
                     DEVICE`, then save again (or save with --raw)"
                .into(),
        });
    }
    if state & STATE_VALID == 0 {
        return Err(FsError::Refused {
            fs,
            detail: "the filesystem was not cleanly unmounted (or is mounted read-write). \
                     Unmount it and check it with `e2fsck -f DEVICE`, then save again"
                .into(),
        });
    }
    let unknown = incompat & !INCOMPAT_KNOWN;
    if unknown != 0 {
        info.warnings.push(format!(
            "unknown incompatible ext features {unknown:#x}: the block bitmaps cannot be trusted, \
             so the partition is imaged raw"
        ));
        return Ok(());
    }

    let geo = Geometry::parse(&sb, part.len()).map_err(|b| corrupt(field(b.at), b.detail))?;
    let bs = geo.block_size;
    info.block_size = u32::try_from(bs).unwrap_or(0);

    if compat & COMPAT_HAS_JOURNAL != 0
        && get32(0xE0) == 0
        && (get32(0xE4) != 0
            || sb
                .get(0xD0..0xE0)
                .is_some_and(|u| u.iter().any(|&b| b != 0)))
    {
        info.warnings.push(
            "the journal is on another device: save that device too (its journal is not part \
             of this image)"
                .into(),
        );
    }

    let mut map = Extents::new();
    // Block 0 and the primary superblock: [0, 2048) with 1 KiB blocks, block 0 otherwise.
    map.add(0, SB_END.div_ceil(bs).saturating_mul(bs));
    let mut extra: Vec<(u64, u64)> = Vec::new();
    // At most 64 KiB (checked by the parser).
    let bs_usize = usize::try_from(bs).unwrap_or(65536);
    let mut bitmap = vec![0u8; bs_usize];
    let mut gdt = vec![0u8; bs_usize];
    let mut gdt_index: Option<u64> = None;
    let mut warnings: Vec<String> = Vec::new();
    let mut bad_groups = 0u64;
    let mut sum_free = 0u64;
    let cluster_bytes = bs.saturating_mul(1u64 << geo.cluster_bits);

    for g in 0..geo.groups {
        let i = g.checked_div(geo.desc_per_block).unwrap_or(0);
        let loc = geo.desc_block(i);
        let gdt_off = loc.saturating_mul(bs);
        if gdt_index != Some(i) {
            if loc == 0 || loc >= geo.blocks_count {
                return Err(corrupt(
                    field(if geo.meta_bg { 0x104 } else { 0x04 }),
                    format!("descriptor block {i} would be at block {loc}, outside the filesystem"),
                ));
            }
            part.read_exact_at(&mut gdt, gdt_off)
                .map_err(|source| FsError::Io {
                    fs,
                    offset: gdt_off,
                    source,
                })?;
            gdt_index = Some(i);
        }
        let within = g
            .checked_rem(geo.desc_per_block)
            .unwrap_or(0)
            .saturating_mul(geo.desc_size);
        let at = usize::try_from(within).unwrap_or(usize::MAX);
        let end = at.saturating_add(usize::try_from(geo.desc_size).unwrap_or(usize::MAX));
        let raw = gdt.get(at..end).unwrap_or(&[]);
        sum_free = sum_free.saturating_add(
            parse_desc(raw, geo.desc_size)
                .map(|d| d.free_clusters)
                .unwrap_or(0),
        );
        let gfirst = geo.group_first(g);
        let gblocks = geo.group_blocks(g);
        match map_group(part, fs, &geo, g, raw, &mut bitmap, &mut extra)? {
            GroupMap::Bitmap => {
                let nbits = div_ceil(gblocks, 1u64 << geo.cluster_bits).unwrap_or(0);
                map.add_bitmap(&bitmap, nbits, gfirst.saturating_mul(bs), cluster_bytes);
            }
            GroupMap::Whole(why) => {
                map.add(gfirst.saturating_mul(bs), gblocks.saturating_mul(bs));
                bad_groups = bad_groups.saturating_add(1);
                if warnings.len() < MAX_GROUP_WARNINGS {
                    warnings.push(format!(
                        "group {g} (blocks {gfirst}..{}, descriptor at partition byte {:#x}): \
                         {why}; the whole group is stored",
                        gfirst.saturating_add(gblocks),
                        gdt_off.saturating_add(within)
                    ));
                }
            }
        }
    }
    if bad_groups > u64::try_from(warnings.len()).unwrap_or(0) {
        warnings.push(format!(
            "{} more groups failed their checks and are stored whole",
            bad_groups.saturating_sub(u64::try_from(warnings.len()).unwrap_or(0))
        ));
    }

    // The superblock's free count against the descriptors' sum (rule 1.3). Every group already
    // matched its own descriptor, so a difference here is a stale superblock counter.
    let sb_free = geo.free_blocks >> geo.cluster_bits;
    if sb_free != sum_free {
        warnings.push(format!(
            "the superblock says {} free blocks, the group descriptors add up to {}; the map \
             follows the groups",
            geo.free_blocks,
            sum_free.saturating_mul(1u64 << geo.cluster_bits)
        ));
    }
    info.warnings.extend(warnings);

    if !extra.is_empty() {
        map = map.union(&Extents::from_unsorted(extra));
    }
    map.clip(geo.blocks_count.saturating_mul(bs));
    info.min_size = Some(map.total());
    info.used = Some(map);
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
mod tests {
    use super::*;
    use crate::disk::{BlockDev, MemDisk};

    /// A geometry for the placement functions: 32-byte descriptors unless `desc_size` says so.
    fn geo(block_size: u64, blocks_count: u64, bpg: u64) -> Geometry {
        let first_data_block = u64::from(block_size == 1024);
        let groups = (blocks_count - first_data_block).div_ceil(bpg);
        let desc_per_block = block_size / 32;
        Geometry {
            block_size,
            cluster_bits: 0,
            blocks_count,
            free_blocks: 0,
            first_data_block,
            blocks_per_group: bpg,
            clusters_per_group: bpg,
            inode_blocks_per_group: 16,
            groups,
            desc_size: 32,
            desc_per_block,
            desc_blocks: groups.div_ceil(desc_per_block),
            reserved_gdt: 0,
            first_meta_bg: 0,
            meta_bg: false,
            sparse_super: true,
            sparse_super2: false,
            backup_bgs: [0, 0],
            csum: Csum::None,
            uuid: [0; 16],
        }
    }

    #[test]
    fn has_super_sparse_super() {
        let g = geo(4096, 32768 * 400, 32768);
        let with: Vec<u64> = (0..400).filter(|&n| g.has_super(n)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125, 243, 343]);
    }

    #[test]
    fn has_super_sparse_super2_and_none() {
        let mut g = geo(4096, 32768 * 64, 32768);
        g.sparse_super2 = true;
        g.backup_bgs = [1, 63];
        let with: Vec<u64> = (0..64).filter(|&n| g.has_super(n)).collect();
        assert_eq!(with, [0, 1, 63]);
        g.backup_bgs = [0, 0];
        assert_eq!((0..64).filter(|&n| g.has_super(n)).count(), 1);
        g.sparse_super2 = false;
        g.sparse_super = false;
        assert!((0..64).all(|n| g.has_super(n)));
    }

    #[test]
    fn power_of() {
        assert!(is_power_of(1, 3) && is_power_of(2187, 3) && is_power_of(78125, 5));
        assert!(!is_power_of(15, 3) && !is_power_of(u64::MAX, 7));
    }

    #[test]
    fn descriptor_location_classic() {
        // 4 KiB blocks: superblock in block 0, GDT from block 1.
        let g = geo(4096, 32768 * 300, 32768);
        assert_eq!(g.desc_block(0), 1);
        assert_eq!(g.desc_block(2), 3);
        // 1 KiB blocks: block 0 is the boot block, superblock 1, GDT from block 2.
        let g = geo(1024, 8192 * 100 + 1, 8192);
        assert_eq!(g.desc_block(0), 2);
        assert_eq!(g.desc_block(3), 5);
        // Backup: superblock at the group's first block, GDT and reserved GDT after it.
        let mut g = geo(4096, 32768 * 300, 32768);
        g.reserved_gdt = 10;
        assert_eq!(
            g.base_meta(3),
            vec![(3 * 32768, 1), (3 * 32768 + 1, 3 + 10)]
        );
        assert_eq!(g.base_meta(2), vec![]);
    }

    #[test]
    fn descriptor_location_meta_bg() {
        // 128 descriptors per block; the first 2 descriptor blocks are classic.
        let mut g = geo(4096, 32768 * 600, 32768);
        g.meta_bg = true;
        g.first_meta_bg = 2;
        assert_eq!(g.desc_block(0), 1);
        assert_eq!(g.desc_block(1), 2);
        // Meta-group 2 starts at group 256 (no backup superblock): its first block.
        assert_eq!(g.desc_block(2), 256 * 32768);
        // Meta-group 3 starts at group 384: none either.
        assert_eq!(g.desc_block(3), 384 * 32768);
        // Classic groups with a superblock keep first_meta_bg GDT blocks after it.
        assert_eq!(g.base_meta(1), vec![(32768, 1), (32769, 2)]);
        // Meta groups: a GDT block in the first, second and last group of the meta-group.
        assert_eq!(g.base_meta(256), vec![(256 * 32768, 1)]);
        assert_eq!(g.base_meta(257), vec![(257 * 32768, 1)]);
        assert_eq!(g.base_meta(383), vec![(383 * 32768, 1)]);
        assert_eq!(g.base_meta(300), vec![]);
        // first_meta_bg 0: meta-group 0 holds the primary superblock, the GDT block follows.
        g.first_meta_bg = 0;
        assert_eq!(g.desc_block(0), 1);
        assert_eq!(g.base_meta(1), vec![(32768, 1), (32769, 1)]);
        assert_eq!(g.desc_block(1), 128 * 32768);
        // With 1 KiB blocks, group 0 starts at block 1.
        let mut g = geo(1024, 8192 * 100 + 1, 8192);
        g.meta_bg = true;
        assert_eq!(g.desc_block(0), 2);
        assert_eq!(g.desc_block(1), 1 + 32 * 8192);
    }

    #[test]
    fn checksums() {
        // Known answers: CRC-32C("123456789") = 0xE3069283, CRC-16/ARC = 0xBB3D.
        assert_eq!(!crc32c_update(!0, b"123456789"), 0xE306_9283);
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
    }

    #[test]
    fn bit_helpers() {
        let mut b = [0u8; 4];
        set_bits(&mut b, 3, 13);
        assert_eq!(b, [0b1111_1000, 0b0001_1111, 0, 0]);
        assert_eq!(count_bits(&b, 32), 10);
        assert_eq!(count_bits(&b, 9), 6);
        set_bits(&mut b, 30, 1000);
        assert_eq!(b[3], 0b1100_0000);
    }

    /// A synthetic, self-consistent 1 KiB-block superblock: 2 groups of 8192 blocks.
    fn synthetic_disk() -> Vec<u8> {
        let mut d = vec![0u8; 16385 * 1024];
        let sb = &mut d[1024..2048];
        let put =
            |sb: &mut [u8], off: usize, v: u32| sb[off..off + 4].copy_from_slice(&v.to_le_bytes());
        put(sb, 0x00, 2 * 128); // inodes
        put(sb, 0x04, 16385); // blocks
        put(sb, 0x14, 1); // first data block
        put(sb, 0x20, 8192); // blocks per group
        put(sb, 0x24, 8192);
        put(sb, 0x28, 128); // inodes per group
        sb[0x38..0x3A].copy_from_slice(&MAGIC.to_le_bytes());
        sb[0x3A] = 1; // clean
        d
    }

    fn run(img: Vec<u8>) -> Result<FsInfo, FsError> {
        let disk = MemDisk::from_vec(img, 512);
        let mut info = FsInfo::raw(FsKind::Ext2);
        fill(&Region::whole(&disk), &mut info).map(|()| info)
    }

    fn corrupt_field(off: usize, v: u32) -> FsError {
        let mut img = synthetic_disk();
        img[1024 + off..1024 + off + 4].copy_from_slice(&v.to_le_bytes());
        match run(img) {
            Err(e @ FsError::Corrupt { .. }) => e,
            other => panic!("field {off:#x} = {v:#x}: expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn synthetic_superblock_parses() {
        // The synthetic image has no bitmaps: every group fails its count and is stored whole,
        // but it parses, and only as far as the partition goes.
        let info = run(synthetic_disk()).unwrap();
        assert_eq!(info.used.unwrap().runs(), &[(0, 16385 * 1024)]);
    }

    #[test]
    fn corrupt_superblock_fields() {
        let e = corrupt_field(0x20, 0); // blocks per group 0
        assert!(e.to_string().contains("0x420"), "{e}");
        corrupt_field(0x20, 0xFFFF_FFFF);
        corrupt_field(0x18, 7); // 128 KiB blocks
        corrupt_field(0x18, 0xFFFF_FFFF); // log_block_size huge
        corrupt_field(0x04, 0xFFFF_FFFF); // beyond the partition
        corrupt_field(0x04, 1); // no blocks
        corrupt_field(0x14, 5); // first data block
        corrupt_field(0x28, 0); // inodes per group
        corrupt_field(0x00, 7); // inode count does not match the group count
        corrupt_field(0x0C, 20000); // more free blocks than blocks

        // Group count overflow: 64bit blocks_count_hi with a huge count.
        let mut img = synthetic_disk();
        img[1024 + 0x60] = 0x80;
        img[1024 + 0x150..1024 + 0x154].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(run(img), Err(FsError::Corrupt { .. })));
        // 64bit with a bad descriptor size.
        let mut img = synthetic_disk();
        img[1024 + 0x60] = 0x80;
        img[1024 + 0xFE] = 48;
        assert!(matches!(run(img), Err(FsError::Corrupt { .. })));
    }

    #[test]
    fn state_and_features() {
        let mut img = synthetic_disk();
        img[1024 + 0x60] = 0x04; // needs_recovery
        let e = run(img).unwrap_err();
        assert!(
            matches!(e, FsError::Refused { .. }) && e.to_string().contains("e2fsck"),
            "{e}"
        );
        let mut img = synthetic_disk();
        img[1024 + 0x3A] = 3; // errors
        assert!(matches!(run(img), Err(FsError::Refused { .. })));
        let mut img = synthetic_disk();
        img[1024 + 0x3A] = 0; // not clean
        assert!(matches!(run(img), Err(FsError::Refused { .. })));
        let mut img = synthetic_disk();
        img[1024 + 0x60] = 0x08; // journal device
        let info = run(img).unwrap();
        assert!(info.used.is_none() && info.warnings.len() == 1);
        let mut img = synthetic_disk();
        img[1024 + 0x63] = 0x80; // unknown incompat feature
        let info = run(img).unwrap();
        assert!(info.used.is_none() && info.warnings.len() == 1);
    }

    /// Makes an ext filesystem with the real mke2fs (always `Some`: a missing mke2fs fails the
    /// test, since CI installs e2fsprogs).
    fn mkfs(size: &str, args: &[&str]) -> Option<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs.img");
        let out = std::process::Command::new("mke2fs")
            .args([
                "-q",
                "-F",
                "-U",
                "6f1e4a0c-3b7d-4c55-9d0e-2a1b3c4d5e6f",
                "-E",
                "lazy_itable_init=1",
            ])
            .args(args)
            .arg(&path)
            .arg(size)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(std::fs::read(&path).unwrap()),
            Ok(o) => panic!("mke2fs {args:?}: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => panic!("mke2fs is needed (scripts/setup.sh installs it): {e}"),
        }
    }

    /// Recomputes the checksum of superblock `sb` after an edit (metadata_csum only).
    fn fix_sb_csum(sb: &mut [u8]) {
        if le32(sb, 0x64).unwrap() & RO_METADATA_CSUM != 0 {
            let c = crc32c_update(!0, &sb[..0x3FC]);
            sb[0x3FC..].copy_from_slice(&c.to_le_bytes());
        }
    }

    fn expected_used(img: &[u8]) -> u64 {
        let sb = &img[1024..2048];
        let bs = 1024u64 << le32(sb, 0x18).unwrap();
        let blocks = u64::from(le32(sb, 0x04).unwrap());
        let free = u64::from(le32(sb, 0x0C).unwrap());
        (blocks - free) * bs
    }

    const EXT4: &[&str] = &[
        "-t",
        "ext4",
        "-O",
        "metadata_csum,flex_bg,64bit,sparse_super",
        "-b",
        "4096",
        "-g",
        "4096",
        "-N",
        "512",
    ];

    #[test]
    fn block_uninit_groups_are_rebuilt() {
        // 64 MiB, 4 KiB blocks, 4096 blocks per group: 4 groups; flex_bg put every group's
        // bitmaps and inode table in group 0, so groups 1 and 2 are BLOCK_UNINIT, and group
        // 1 and 3 hold backup superblocks.
        let Some(img) = mkfs("64M", EXT4) else { return };
        let gdt = &img[4096..4096 + 64 * 4];
        let flags = |g: usize| le16(gdt, g * 64 + BG_FLAGS).unwrap();
        assert_ne!(
            flags(1) & BG_BLOCK_UNINIT,
            0,
            "test premise: group 1 is BLOCK_UNINIT"
        );
        let info = run(img.clone()).unwrap();
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        let used = info.used.unwrap();
        assert_eq!(used.total(), expected_used(&img));
        // The backup superblock of group 1 and its GDT + reserved GDT blocks are stored.
        let covered = |off: u64| used.runs().iter().any(|&(s, l)| off >= s && off < s + l);
        assert!(covered(4096 * 4096));
        assert!(covered(4096 * 4096 + 4096));
        assert_eq!(
            &img[4096 * 4096 + 0x38..4096 * 4096 + 0x3A],
            &MAGIC.to_le_bytes()
        );
    }

    #[test]
    fn group_count_mismatch_stores_the_whole_group() {
        let Some(mut img) = mkfs(
            "64M",
            &[
                "-t",
                "ext4",
                "-O",
                "^metadata_csum,^uninit_bg,^64bit",
                "-b",
                "4096",
                "-g",
                "4096",
            ],
        ) else {
            return;
        };
        // Descriptor of group 2 (32-byte descriptors, GDT at block 1): one fewer free block.
        let at = 4096 + 2 * 32 + 0x0C;
        let free = le16(&img, at).unwrap();
        img[at..at + 2].copy_from_slice(&(free - 1).to_le_bytes());
        let info = run(img).unwrap();
        assert_eq!(info.warnings.len(), 2, "{:?}", info.warnings);
        assert!(
            info.warnings[0].starts_with("group 2 "),
            "{:?}",
            info.warnings
        );
        let used = info.used.unwrap();
        assert!(used
            .runs()
            .iter()
            .any(|&(s, l)| s <= 2 * 4096 * 4096 && s + l >= 3 * 4096 * 4096));
    }

    #[test]
    fn one_kib_blocks_store_block_zero() {
        let Some(img) = mkfs("16M", &["-t", "ext3", "-b", "1024"]) else {
            return;
        };
        let info = run(img.clone()).unwrap();
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        let used = info.used.unwrap();
        assert_eq!(used.total(), expected_used(&img));
        assert_eq!(used.runs()[0].0, 0);
    }

    /// Every single-byte change of the superblock (each bit flipped, 0x00 and 0xFF, with the
    /// superblock checksum recomputed so the parser sees the change, and 0xFF without): never a
    /// panic, and either an error, a raw fallback or a map inside the partition.
    #[test]
    fn superblock_byte_corruption_never_panics() {
        let meta_bg_1k: &[&str] = &[
            "-t",
            "ext4",
            "-O",
            "^metadata_csum,uninit_bg,meta_bg,^resize_inode",
            "-b",
            "1024",
            "-g",
            "1024",
            "-N",
            "256",
        ];
        let ext4_4k: &[&str] = &[
            "-t",
            "ext4",
            "-O",
            "metadata_csum,flex_bg,64bit,sparse_super",
            "-b",
            "4096",
            "-g",
            "256",
            "-N",
            "256",
        ];
        for args in [ext4_4k, meta_bg_1k] {
            let Some(img) = mkfs("4M", args) else { return };
            let clean = run(img.clone()).unwrap();
            assert!(clean.warnings.is_empty(), "{:?}", clean.warnings);
            assert_eq!(clean.used.unwrap().total(), expected_used(&img));
            let disk = MemDisk::from_vec(img.clone(), 512);
            let (mut errors, mut maps) = (0, 0);
            for off in 1024..2048 {
                let orig = img[off];
                let mut variants: Vec<(u8, bool)> =
                    (0..8).map(|b| (orig ^ (1 << b), true)).collect();
                variants.extend([(0, true), (0xFF, true), (0xFF, false)]);
                for (v, fix) in variants {
                    if v == orig {
                        continue;
                    }
                    let mut sb = img[1024..2048].to_vec();
                    sb[off - 1024] = v;
                    if fix {
                        fix_sb_csum(&mut sb);
                    }
                    disk.write_all_at(&sb, 1024).unwrap();
                    let mut info = FsInfo::raw(FsKind::Ext4);
                    match fill(&Region::whole(&disk), &mut info) {
                        Ok(()) => {
                            if let Some(u) = &info.used {
                                assert!(
                                    u.end() <= img.len() as u64,
                                    "byte {off:#x}: map past the end"
                                );
                                maps += 1;
                            }
                        }
                        Err(e) => {
                            if matches!(e, FsError::Corrupt { .. }) {
                                assert!(e.to_string().contains("0x"), "byte {off:#x}: {e}: where?");
                            }
                            errors += 1;
                        }
                    }
                }
            }
            disk.write_all_at(&img[1024..2048], 1024).unwrap();
            eprintln!("{args:?}: {errors} errors, {maps} maps");
            assert!(errors > 100 && maps > 1000);
        }
    }

    /// Every byte of the group descriptor table changed (1 KiB blocks, 8 groups): never a
    /// panic; a damaged descriptor costs at most its group, stored whole, with a warning.
    #[test]
    fn descriptor_corruption_never_panics() {
        let args: &[&str] = &[
            "-t",
            "ext4",
            "-O",
            "^metadata_csum,uninit_bg,^64bit",
            "-b",
            "1024",
            "-g",
            "1024",
            "-N",
            "256",
        ];
        let Some(img) = mkfs("8M", args) else { return };
        let disk = MemDisk::from_vec(img.clone(), 512);
        let gdt = 2048usize;
        for off in gdt..gdt + 8 * 32 {
            for v in [img[off] ^ 0xFF, img[off] ^ 0x10, 0] {
                if v == img[off] {
                    continue;
                }
                disk.write_all_at(&[v], off as u64).unwrap();
                let mut info = FsInfo::raw(FsKind::Ext4);
                if fill(&Region::whole(&disk), &mut info).is_ok() {
                    let u = info.used.unwrap();
                    assert!(u.end() <= img.len() as u64);
                    // uninit_bg checksums every descriptor: any change is caught.
                    assert!(
                        !info.warnings.is_empty(),
                        "byte {off:#x} = {v:#x} went unnoticed"
                    );
                }
                disk.write_all_at(&img[off..off + 1], off as u64).unwrap();
            }
        }
    }
}
