//! btrfs used-block map (reference: ../shared/reference/filesystems.md §8).
//!
//! Exact method (one device): the superblock's `sys_chunk_array` maps the chunk tree, the chunk
//! tree maps every logical address to physical stripes, the root tree gives the extent tree,
//! and every EXTENT_ITEM (`[bytenr, +key.offset)`) and METADATA_ITEM (`[bytenr, +nodesize)`) is
//! mapped to its physical copies (both copies for DUP). The superblock copies (64 KiB, 64 MiB,
//! 256 GiB) and the first MiB are added: no extent item covers them. The sum of the extent
//! items must equal the superblock's `bytes_used`.
//!
//! Coarse method: chunks with a striped profile (RAID0/10/5/6), and every chunk of a
//! multi-device filesystem, are saved whole, from this device's DEV_EXTENT items (dev tree).
//! When a tree block cannot be read from this device the partition is imaged raw, with a
//! warning.
//!
//! Refused: an unreplayed fsync log (`log_root` ≠ 0; its blocks are in no extent item), zoned,
//! seed and metadump filesystems, an interrupted fsid change.
//!
//! Every field is untrusted: reads go through `crate::bytes`, arithmetic is checked, every tree
//! walk is bounded (depth ≤ 8, nodes ≤ device size / nodesize, no node twice, keys in order and
//! inside their parent's range), and crc32c checksums are verified.

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::as_conversions
)]

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::bytes::{arr, le16, le32, le64};
use crate::disk::Region;
use crate::fs::checksum::crc32c;
use crate::fs::{read_at, Extents, FsError, FsInfo, FsKind};

const FS: FsKind = FsKind::Btrfs;

/// The primary superblock and its size; mirrors follow at 64 MiB and 256 GiB.
const SUPER_OFF: u64 = 0x10000;
const SUPER_LEN: u64 = 4096;
const SUPER_MIRRORS: [u64; 3] = [0x10000, 0x400_0000, 0x40_0000_0000];
/// btrfs never allocates below 1 MiB; boot loaders may live there.
const RESERVED_HEAD: u64 = 1 << 20;

/// Tree block header length, leaf item and node key-pointer sizes.
const HDR: u64 = 0x65;
const ITEM: u64 = 25;
const KEY_PTR: u64 = 33;
/// Levels are 0..BTRFS_MAX_LEVEL (8).
const MAX_LEVEL: u8 = 7;

/// Tree ids.
const ROOT_TREE: u64 = 1;
const EXTENT_TREE: u64 = 2;
const CHUNK_TREE: u64 = 3;
const DEV_TREE: u64 = 4;

/// Key types.
const ROOT_ITEM: u8 = 132;
const EXTENT_ITEM: u8 = 168;
const METADATA_ITEM: u8 = 169;
const DEV_EXTENT: u8 = 204;
const CHUNK_ITEM: u8 = 228;

/// Chunk type bits.
const BG_RAID0: u64 = 0x8;
const BG_RAID10: u64 = 0x40;
const BG_RAID5: u64 = 0x80;
const BG_RAID6: u64 = 0x100;
const BG_STRIPED: u64 = BG_RAID0 | BG_RAID10 | BG_RAID5 | BG_RAID6;

/// Superblock flags and feature bits that change what the map means.
const SUPER_FLAG_SEEDING: u64 = 1 << 32;
const SUPER_FLAG_METADUMP: u64 = 1 << 33;
const SUPER_FLAG_METADUMP_V2: u64 = 1 << 34;
const SUPER_FLAG_CHANGING_FSID: u64 = 1 << 35;
const SUPER_FLAG_CHANGING_FSID_V2: u64 = 1 << 36;
const INCOMPAT_METADATA_UUID: u64 = 1 << 10;
const INCOMPAT_ZONED: u64 = 1 << 12;
const INCOMPAT_EXTENT_TREE_V2: u64 = 1 << 13;
const INCOMPAT_RAID_STRIPE_TREE: u64 = 1 << 14;

fn corrupt(offset: u64, detail: impl Into<String>) -> FsError {
    FsError::Corrupt {
        fs: FS,
        offset,
        detail: detail.into(),
    }
}

fn refused(detail: impl Into<String>) -> FsError {
    FsError::Refused {
        fs: FS,
        detail: detail.into(),
    }
}

fn to_usize(v: u64, offset: u64) -> Result<usize, FsError> {
    usize::try_from(v).map_err(|_| corrupt(offset, format!("size {v} does not fit in memory")))
}

/// Why the exact map could not be built.
enum Fail {
    /// Damaged, refused or unreadable.
    Fs(FsError),
    /// The structures are fine but this device alone does not hold what the map needs (a tree
    /// block on another device or in a striped chunk): image raw, with this warning.
    Raw(String),
}

impl From<FsError> for Fail {
    fn from(e: FsError) -> Fail {
        Fail::Fs(e)
    }
}

/// A btree key: (objectid, type, offset), ordered in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    objectid: u64,
    kind: u8,
    offset: u64,
}

fn key_at(buf: &[u8], at: usize) -> Option<Key> {
    Some(Key {
        objectid: le64(buf, at)?,
        kind: *buf.get(at.checked_add(8)?)?,
        offset: le64(buf, at.checked_add(9)?)?,
    })
}

/// The superblock fields the map needs, validated.
#[derive(Debug, Clone)]
struct Super {
    root: u64,
    root_level: u8,
    chunk_root: u64,
    chunk_root_level: u8,
    bytes_used: u64,
    num_devices: u64,
    sectorsize: u64,
    nodesize: u64,
    devid: u64,
    /// The fsid stamped into tree block headers.
    meta_fsid: [u8; 16],
    /// crc32c checksums are verified; other types are not.
    crc32c: bool,
    incompat: u64,
    sys_chunks: Vec<u8>,
}

fn parse_super(part: &Region<'_>, warnings: &mut Vec<String>) -> Result<Super, FsError> {
    let sb = read_at(part, FS, SUPER_OFF, 4096)?;
    let at = |off: u64| SUPER_OFF.saturating_add(off);
    if sb.get(0x40..0x48) != Some(b"_BHRfS_M") {
        return Err(corrupt(at(0x40), "no btrfs superblock magic (_BHRfS_M)"));
    }
    let f64 = |off: usize| le64(&sb, off).unwrap_or(0);
    let f32 = |off: usize| u64::from(le32(&sb, off).unwrap_or(0));
    let csum_type = le16(&sb, 0xC4).unwrap_or(0);
    let is_crc32c = csum_type == 0;
    if is_crc32c {
        let stored = le32(&sb, 0).unwrap_or(0);
        let computed = crc32c(sb.get(0x20..).unwrap_or(&[]));
        if stored != computed {
            return Err(corrupt(
                at(0),
                format!("superblock checksum {stored:#010x}, computed {computed:#010x}"),
            ));
        }
    } else {
        let name = match csum_type {
            1 => "xxhash64",
            2 => "sha256",
            3 => "blake2b",
            _ => "unknown",
        };
        warnings.push(format!(
            "metadata checksums ({name}) are not verified by ferroclone; structure checks still apply"
        ));
    }
    if f64(0x30) != SUPER_OFF {
        return Err(corrupt(
            at(0x30),
            format!("the primary superblock says it lives at {:#x}", f64(0x30)),
        ));
    }
    let flags = f64(0x38);
    if flags & SUPER_FLAG_SEEDING != 0 {
        return Err(refused(
            "this is a seed device (read-only base of another filesystem); save it with --raw",
        ));
    }
    if flags & (SUPER_FLAG_METADUMP | SUPER_FLAG_METADUMP_V2) != 0 {
        return Err(refused(
            "this is a btrfs-image metadata dump, not a filesystem with data; save it with --raw",
        ));
    }
    if flags & (SUPER_FLAG_CHANGING_FSID | SUPER_FLAG_CHANGING_FSID_V2) != 0 {
        return Err(refused(
            "an fsid change (btrfstune) was interrupted; finish it with btrfstune, then save again",
        ));
    }
    let incompat = f64(0xBC);
    if incompat & INCOMPAT_ZONED != 0 {
        return Err(refused("zoned btrfs is not supported; save it with --raw"));
    }
    if f64(0x60) != 0 {
        return Err(refused(
            "the filesystem has an fsync log that was never replayed (it was not unmounted \
             cleanly), and the log's blocks are missing from the allocation map; mount it once \
             and unmount it to replay the log, then save again",
        ));
    }
    let sectorsize = f32(0x90);
    if !sectorsize.is_power_of_two() || !(512..=65536).contains(&sectorsize) {
        return Err(corrupt(
            at(0x90),
            format!("sector size {sectorsize} is not a power of two in 512..=65536"),
        ));
    }
    let nodesize = f32(0x94);
    if !nodesize.is_power_of_two() || !(sectorsize..=65536).contains(&nodesize) || nodesize < 4096 {
        return Err(corrupt(
            at(0x94),
            format!("node size {nodesize} is not a power of two in {sectorsize}..=65536"),
        ));
    }
    let sys_len = f32(0xA0);
    if sys_len > 2048 {
        return Err(corrupt(
            at(0xA0),
            format!("sys_chunk_array size {sys_len} exceeds 2048"),
        ));
    }
    let num_devices = f64(0x88);
    if num_devices == 0 {
        return Err(corrupt(at(0x88), "the filesystem has 0 devices"));
    }
    let dev_bytes = le64(&sb, 0xC9 + 8).unwrap_or(0);
    if dev_bytes > part.len() {
        return Err(corrupt(
            at(0xC9 + 8),
            format!(
                "the device is {dev_bytes} bytes in the superblock but the partition has {} bytes",
                part.len()
            ),
        ));
    }
    let meta_fsid = if incompat & INCOMPAT_METADATA_UUID != 0 {
        arr(&sb, 0x23B)
    } else {
        arr(&sb, 0x20)
    }
    .unwrap_or([0; 16]);
    let level = |off: usize| sb.get(off).copied().unwrap_or(u8::MAX);
    let sys_end = to_usize(0x32B_u64.saturating_add(sys_len), at(0xA0))?;
    Ok(Super {
        root: f64(0x50),
        root_level: level(0xC6),
        chunk_root: f64(0x58),
        chunk_root_level: level(0xC7),
        bytes_used: f64(0x78),
        num_devices,
        sectorsize,
        nodesize,
        devid: f64(0xC9),
        meta_fsid,
        crc32c: is_crc32c,
        incompat,
        sys_chunks: sb.get(0x32B..sys_end).unwrap_or(&[]).to_vec(),
    })
}

/// One chunk: a logical range and where its copies or stripes live.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Chunk {
    length: u64,
    flags: u64,
    /// (devid, physical offset) per stripe.
    stripes: Vec<(u64, u64)>,
}

impl Chunk {
    /// Every stripe holds a full copy (SINGLE, DUP, RAID1, RAID1C3, RAID1C4).
    fn mirrored(&self) -> bool {
        self.flags & BG_STRIPED == 0
    }
}

/// Parses a chunk item's payload; returns the chunk and the payload's length.
fn parse_chunk(d: &[u8], at: u64) -> Result<(Chunk, u64), FsError> {
    let length = le64(d, 0).unwrap_or(0);
    let flags = le64(d, 0x18).unwrap_or(0);
    let num = u64::from(le16(d, 0x2C).unwrap_or(0));
    let size = 0x30u64.saturating_add(num.saturating_mul(32));
    if length == 0 || num == 0 || size > u64::try_from(d.len()).unwrap_or(0) {
        return Err(corrupt(
            at,
            format!(
                "chunk item of length {length} with {num} stripes does not fit its {} bytes",
                d.len()
            ),
        ));
    }
    let mut stripes = Vec::new();
    for i in 0..num {
        let s = to_usize(0x30u64.saturating_add(i.saturating_mul(32)), at)?;
        let devid = le64(d, s).unwrap_or(0);
        let phys = le64(d, s.saturating_add(8)).unwrap_or(0);
        stripes.push((devid, phys));
    }
    Ok((
        Chunk {
            length,
            flags,
            stripes,
        },
        size,
    ))
}

/// Logical address → chunk.
#[derive(Debug, Default)]
struct ChunkMap {
    chunks: BTreeMap<u64, Chunk>,
}

impl ChunkMap {
    fn insert(&mut self, logical: u64, chunk: Chunk, at: u64) -> Result<(), FsError> {
        let end = logical
            .checked_add(chunk.length)
            .ok_or_else(|| corrupt(at, format!("chunk at {logical:#x} wraps past 2^64")))?;
        if let Some(old) = self.chunks.get(&logical) {
            if *old == chunk {
                return Ok(());
            }
        }
        let prev_overlaps = self
            .chunks
            .range(..=logical)
            .next_back()
            .is_some_and(|(s, c)| s.saturating_add(c.length) > logical);
        let next_overlaps = self
            .chunks
            .range(logical..)
            .next()
            .is_some_and(|(s, _)| *s < end);
        if prev_overlaps || next_overlaps {
            return Err(corrupt(
                at,
                format!(
                    "chunk {logical:#x}+{:#x} overlaps another chunk",
                    chunk.length
                ),
            ));
        }
        self.chunks.insert(logical, chunk);
        Ok(())
    }

    /// The chunk holding `[logical, logical + len)` and the offset of `logical` inside it.
    fn find(&self, logical: u64, len: u64) -> Option<(u64, &Chunk, u64)> {
        let (start, c) = self.chunks.range(..=logical).next_back()?;
        let delta = logical.checked_sub(*start)?;
        let end = delta.checked_add(len)?;
        (end <= c.length).then_some((*start, c, delta))
    }
}

/// A leaf-item visitor: `(key, item data, partition offset of the leaf)`.
type Visit<'v> = dyn FnMut(Key, &[u8], u64) -> Result<(), Fail> + 'v;

/// Reads and walks trees.
struct Reader<'a, 'p> {
    part: &'a Region<'p>,
    sb: &'a Super,
    chunks: ChunkMap,
    /// Most nodes one walk may read: the device could hold no more.
    max_nodes: u64,
}

impl Reader<'_, '_> {
    /// Reads the tree block at `logical`, which must belong to tree `owner` at `level`.
    fn node(&self, logical: u64, owner: u64, level: u8, from: u64) -> Result<(Vec<u8>, u64), Fail> {
        let ns = self.sb.nodesize;
        let Some((_, chunk, delta)) = self.chunks.find(logical, ns) else {
            return Err(corrupt(
                from,
                format!("tree block at logical {logical:#x} lies in no chunk"),
            )
            .into());
        };
        if !chunk.mirrored() {
            return Err(Fail::Raw(format!(
                "tree block at logical {logical:#x} is in a striped (RAID0/10/5/6) chunk, which \
                 ferroclone does not map; imaged raw"
            )));
        }
        let Some(&(_, phys)) = chunk.stripes.iter().find(|s| s.0 == self.sb.devid) else {
            return Err(Fail::Raw(format!(
                "tree block at logical {logical:#x} has no copy on this device (devid {}); imaged raw",
                self.sb.devid
            )));
        };
        let off = phys
            .checked_add(delta)
            .filter(|o| o.checked_add(ns).is_some_and(|e| e <= self.part.len()))
            .ok_or_else(|| {
                corrupt(
                    from,
                    format!("tree block at logical {logical:#x} maps past the partition's end"),
                )
            })?;
        let buf = read_at(self.part, FS, off, to_usize(ns, off)?)?;
        if self.sb.crc32c {
            let stored = le32(&buf, 0).unwrap_or(0);
            if stored != crc32c(buf.get(0x20..).unwrap_or(&[])) {
                return Err(corrupt(
                    off,
                    format!("tree block at logical {logical:#x}: checksum mismatch"),
                )
                .into());
            }
        }
        if le64(&buf, 0x30) != Some(logical) || arr::<16>(&buf, 0x20) != Some(self.sb.meta_fsid) {
            return Err(corrupt(
                off,
                format!(
                    "tree block at logical {logical:#x} carries another address or filesystem id"
                ),
            )
            .into());
        }
        let got_owner = le64(&buf, 0x58).unwrap_or(0);
        let got_level = buf.get(0x64).copied().unwrap_or(u8::MAX);
        if got_owner != owner || got_level != level {
            return Err(corrupt(
                off,
                format!(
                    "tree block at logical {logical:#x} belongs to tree {got_owner} at level \
                     {got_level}, expected tree {owner} at level {level}"
                ),
            )
            .into());
        }
        Ok((buf, off))
    }

    /// Visits every leaf item of tree `owner` in key order: `visit(key, data, partition offset
    /// of the leaf)`.
    fn walk(&self, owner: u64, root: u64, level: u8, visit: &mut Visit<'_>) -> Result<(), Fail> {
        if level > MAX_LEVEL {
            return Err(corrupt(
                SUPER_OFF,
                format!(
                    "tree {owner} has {} levels, more than btrfs allows",
                    u16::from(level).saturating_add(1)
                ),
            )
            .into());
        }
        let mut visited = HashSet::new();
        self.walk_node(
            owner,
            root,
            level,
            (None, None),
            &mut visited,
            visit,
            SUPER_OFF,
        )
    }

    /// Walks the subtree at `logical`; every key in it must lie in `[lo, hi)`, which keeps leaf
    /// keys strictly ascending across the whole walk.
    #[allow(clippy::too_many_arguments)]
    fn walk_node(
        &self,
        owner: u64,
        logical: u64,
        level: u8,
        (lo, hi): (Option<Key>, Option<Key>),
        visited: &mut HashSet<u64>,
        visit: &mut Visit<'_>,
        from: u64,
    ) -> Result<(), Fail> {
        if !visited.insert(logical) {
            return Err(corrupt(
                from,
                format!("tree {owner}: block at logical {logical:#x} is reached twice (a cycle)"),
            )
            .into());
        }
        if u64::try_from(visited.len()).unwrap_or(u64::MAX) > self.max_nodes {
            return Err(corrupt(
                from,
                format!("tree {owner} has more blocks than the device can hold"),
            )
            .into());
        }
        let (buf, here) = self.node(logical, owner, level, from)?;
        let ns = self.sb.nodesize;
        let nritems = u64::from(le32(&buf, 0x60).unwrap_or(0));
        let per = if level == 0 { ITEM } else { KEY_PTR };
        let max = ns.saturating_sub(HDR).checked_div(per).unwrap_or(0);
        if nritems > max || (level > 0 && nritems == 0) {
            return Err(corrupt(
                here,
                format!("tree {owner}: block at logical {logical:#x} claims {nritems} items (room for {max})"),
            )
            .into());
        }
        let mut keys: Vec<(Key, usize)> = Vec::new();
        for i in 0..nritems {
            let at = to_usize(HDR.saturating_add(i.saturating_mul(per)), here)?;
            let key =
                key_at(&buf, at).ok_or_else(|| corrupt(here, "item header outside its block"))?;
            let ascending = match keys.last() {
                Some(&(p, _)) => key > p,
                None => lo.is_none_or(|l| key >= l),
            };
            if !ascending || hi.is_some_and(|h| key >= h) {
                return Err(corrupt(
                    here,
                    format!("tree {owner}: key {key:?} in block at logical {logical:#x} is out of order"),
                )
                .into());
            }
            keys.push((key, at));
        }
        if level == 0 {
            let data_area = ns.saturating_sub(HDR);
            for (key, at) in keys {
                let doff = u64::from(le32(&buf, at.saturating_add(17)).unwrap_or(0));
                let dsize = u64::from(le32(&buf, at.saturating_add(21)).unwrap_or(0));
                let end = doff.saturating_add(dsize);
                if end > data_area {
                    return Err(corrupt(
                        here,
                        format!(
                            "tree {owner}: item {key:?} data {doff}+{dsize} is outside its block"
                        ),
                    )
                    .into());
                }
                let s = to_usize(HDR.saturating_add(doff), here)?;
                let e = to_usize(HDR.saturating_add(end), here)?;
                visit(key, buf.get(s..e).unwrap_or(&[]), here)?;
            }
            return Ok(());
        }
        let mut children = Vec::new();
        for (i, &(key, at)) in keys.iter().enumerate() {
            let ptr = le64(&buf, at.saturating_add(17)).unwrap_or(0);
            let next = keys.get(i.saturating_add(1)).map(|k| k.0).or(hi);
            children.push((ptr, key, next));
        }
        drop(buf);
        for (ptr, key, next) in children {
            self.walk_node(
                owner,
                ptr,
                level.saturating_sub(1),
                (Some(key), next),
                visited,
                visit,
                here,
            )?;
        }
        Ok(())
    }
}

/// Parses the superblock's bootstrap chunks (enough to read the chunk tree).
fn sys_chunks(sb: &Super) -> Result<ChunkMap, FsError> {
    let mut map = ChunkMap::default();
    let a = &sb.sys_chunks;
    let base = SUPER_OFF.saturating_add(0x32B);
    let mut cur = 0u64;
    let len = u64::try_from(a.len()).unwrap_or(0);
    // Each entry takes at least 17 + 0x30 + 32 bytes, so this loop runs at most ~21 times.
    while cur < len {
        let at = base.saturating_add(cur);
        let c = to_usize(cur, at)?;
        let key = key_at(a, c).ok_or_else(|| corrupt(at, "truncated key in sys_chunk_array"))?;
        if key.kind != CHUNK_ITEM {
            return Err(corrupt(
                at,
                format!(
                    "sys_chunk_array holds key type {}, expected a chunk item (228)",
                    key.kind
                ),
            ));
        }
        let data = a.get(c.saturating_add(17)..).unwrap_or(&[]);
        let (chunk, size) = parse_chunk(data, at.saturating_add(17))?;
        map.insert(key.offset, chunk, at)?;
        cur = cur.saturating_add(17).saturating_add(size);
    }
    if map.chunks.is_empty() {
        return Err(corrupt(base, "sys_chunk_array is empty"));
    }
    Ok(map)
}

/// Finds the root (bytenr, level) of tree `id` in the root tree.
fn tree_root(r: &Reader<'_, '_>, id: u64) -> Result<(u64, u8), Fail> {
    let mut found = None;
    r.walk(
        ROOT_TREE,
        r.sb.root,
        r.sb.root_level,
        &mut |key, data, at| {
            if key.objectid == id && key.kind == ROOT_ITEM && found.is_none() {
                let bytenr = le64(data, 176);
                let level = data.get(238).copied();
                match (bytenr, level) {
                    (Some(b), Some(l)) => found = Some((b, l)),
                    _ => {
                        return Err(corrupt(
                            at,
                            format!("root item of tree {id} is {} bytes, too short", data.len()),
                        )
                        .into())
                    }
                }
            }
            Ok(())
        },
    )?;
    found.ok_or_else(|| {
        corrupt(
            SUPER_OFF.saturating_add(0x50),
            format!("the root tree has no root item for tree {id}"),
        )
        .into()
    })
}

/// Rounds `[start, start + len)` out to whole `unit`s.
fn round_out(start: u64, len: u64, unit: u64) -> (u64, u64) {
    let s = start
        .checked_rem(unit)
        .map_or(start, |r| start.saturating_sub(r));
    let e = start.saturating_add(len);
    let e = e.checked_next_multiple_of(unit).unwrap_or(e);
    (s, e.saturating_sub(s))
}

/// What the walks found, before the extras are added.
struct Map {
    /// Physical byte ranges on this device.
    runs: Vec<(u64, u64)>,
    /// Σ extent-item bytes (logical), or `None` for the coarse method.
    extent_bytes: Option<u64>,
}

/// This device's DEV_EXTENT items: (physical, length, chunk logical start).
fn dev_extents(r: &Reader<'_, '_>) -> Result<Vec<(u64, u64, u64)>, Fail> {
    let (root, level) = tree_root(r, DEV_TREE)?;
    let devid = r.sb.devid;
    let part_len = r.part.len();
    let mut out = Vec::new();
    r.walk(DEV_TREE, root, level, &mut |key, data, at| {
        if key.kind == DEV_EXTENT && key.objectid == devid {
            let chunk = le64(data, 0x10);
            let len = le64(data, 0x18);
            let (Some(chunk), Some(len)) = (chunk, len) else {
                return Err(corrupt(
                    at,
                    format!(
                        "dev extent at {:#x} is {} bytes, too short",
                        key.offset,
                        data.len()
                    ),
                )
                .into());
            };
            if key.offset.checked_add(len).is_none_or(|e| e > part_len) {
                return Err(corrupt(
                    at,
                    format!(
                        "dev extent {:#x}+{len:#x} runs past the partition's end ({part_len:#x})",
                        key.offset
                    ),
                )
                .into());
            }
            out.push((key.offset, len, chunk));
        }
        Ok(())
    })?;
    Ok(out)
}

/// The exact method (one device; striped chunks whole, through their dev extents).
fn map_exact(r: &Reader<'_, '_>) -> Result<Map, Fail> {
    let (root, level) = tree_root(r, EXTENT_TREE)?;
    let sb = r.sb;
    let mut runs = Vec::new();
    let mut total = 0u64;
    let mut striped = BTreeSet::new();
    r.walk(EXTENT_TREE, root, level, &mut |key, _data, at| {
        let len = match key.kind {
            EXTENT_ITEM => key.offset,
            METADATA_ITEM => sb.nodesize,
            _ => return Ok(()),
        };
        let Some((start, chunk, delta)) = r.chunks.find(key.objectid, len).filter(|_| len > 0) else {
            return Err(corrupt(
                at,
                format!("extent {:#x}+{len:#x} is empty or does not lie inside one chunk", key.objectid),
            )
            .into());
        };
        total = total.saturating_add(len);
        if !chunk.mirrored() {
            striped.insert(start);
            return Ok(());
        }
        for &(devid, phys) in &chunk.stripes {
            if devid != sb.devid {
                return Err(corrupt(
                    at,
                    format!("chunk {start:#x} has a stripe on device {devid}, but this filesystem has one device"),
                )
                .into());
            }
            let p = phys
                .checked_add(delta)
                .filter(|p| p.checked_add(len).is_some_and(|e| e <= r.part.len()))
                .ok_or_else(|| {
                    corrupt(
                        at,
                        format!(
                            "extent {:#x}+{len:#x} maps to physical {phys:#x}+{delta:#x}, past the \
                             partition's end",
                            key.objectid
                        ),
                    )
                })?;
            runs.push(round_out(p, len, sb.sectorsize));
        }
        Ok(())
    })?;
    if !striped.is_empty() {
        let devs = dev_extents(r)?;
        for &chunk in &striped {
            let mut any = false;
            for &(phys, len, c) in &devs {
                if c == chunk {
                    runs.push((phys, len));
                    any = true;
                }
            }
            if !any {
                return Err(corrupt(
                    SUPER_OFF,
                    format!("striped chunk {chunk:#x} has no dev extent on this device"),
                )
                .into());
            }
        }
    }
    Ok(Map {
        runs,
        extent_bytes: Some(total),
    })
}

/// Reads the chunk tree and builds the map by the exact or the coarse method.
fn map_trees(part: &Region<'_>, sb: &Super) -> Result<Map, Fail> {
    let mut r = Reader {
        part,
        sb,
        chunks: sys_chunks(sb)?,
        max_nodes: part.len().checked_div(sb.nodesize).unwrap_or(0).max(1),
    };
    let mut found = Vec::new();
    r.walk(
        CHUNK_TREE,
        sb.chunk_root,
        sb.chunk_root_level,
        &mut |key, data, at| {
            if key.kind == CHUNK_ITEM {
                let (chunk, _) = parse_chunk(data, at)?;
                found.push((key.offset, chunk, at));
            }
            Ok(())
        },
    )?;
    for (logical, chunk, at) in found {
        r.chunks.insert(logical, chunk, at)?;
    }
    if sb.num_devices > 1 {
        let runs = dev_extents(&r)?
            .into_iter()
            .map(|(phys, len, _)| (phys, len))
            .collect();
        return Ok(Map {
            runs,
            extent_bytes: None,
        });
    }
    map_exact(&r)
}

/// Fills `info.used` (bytes the filesystem uses, relative to the partition start) and the block
/// size (the sector size) for a btrfs partition.
pub fn fill(part: &Region<'_>, info: &mut FsInfo) -> Result<(), FsError> {
    let sb = parse_super(part, &mut info.warnings)?;
    info.block_size = u32::try_from(sb.sectorsize).unwrap_or(0);
    if sb.incompat & (INCOMPAT_EXTENT_TREE_V2 | INCOMPAT_RAID_STRIPE_TREE) != 0 {
        info.warnings.push(
            "the filesystem uses extent-tree-v2 or a raid stripe tree, which ferroclone does not \
             map; imaged raw"
                .into(),
        );
        return Ok(());
    }
    if sb.num_devices > 1 {
        info.warnings.push(format!(
            "multi-device btrfs ({} devices): this device (devid {}) is saved by its allocated \
             chunks, coarser than the extent map; save every device",
            sb.num_devices, sb.devid
        ));
    }
    let map = match map_trees(part, &sb) {
        Ok(m) => m,
        Err(Fail::Fs(e)) => return Err(e),
        Err(Fail::Raw(why)) => {
            info.warnings.push(why);
            return Ok(());
        }
    };
    if let Some(bytes) = map.extent_bytes {
        if bytes < sb.bytes_used {
            return Err(corrupt(
                SUPER_OFF.saturating_add(0x78),
                format!(
                    "the extent tree lists {bytes} bytes but the superblock counts {} bytes used",
                    sb.bytes_used
                ),
            ));
        }
        if bytes > sb.bytes_used {
            info.warnings.push(format!(
                "the extent tree lists {bytes} bytes, more than the superblock's {} bytes used; \
                 all of them are saved",
                sb.bytes_used
            ));
        }
    }
    let mut runs = map.runs;
    runs.push((0, RESERVED_HEAD.min(part.len())));
    for m in SUPER_MIRRORS {
        if m.checked_add(SUPER_LEN).is_some_and(|e| e <= part.len()) {
            runs.push((m, SUPER_LEN));
        }
    }
    info.used = Some(Extents::from_unsorted(runs));
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::as_conversions
)]
mod tests {
    use super::*;
    use crate::disk::{BlockDev, FileDisk, MemDisk};
    use crate::fs::xfs::tests::{have, Overlay, Rng};
    use std::process::Command;

    const NS: usize = 4096;
    const DEV: usize = 8 << 20;
    const MIB: u64 = 1 << 20;
    const FSID: [u8; 16] = *b"fedcba9876543210";
    const SYS: u64 = MIB;
    const META: u64 = 2 * MIB;
    const DATA: u64 = 4 * MIB;

    fn k(objectid: u64, kind: u8, offset: u64) -> Key {
        Key {
            objectid,
            kind,
            offset,
        }
    }

    fn put_key(d: &mut [u8], at: usize, key: Key) {
        d[at..at + 8].copy_from_slice(&key.objectid.to_le_bytes());
        d[at + 8] = key.kind;
        d[at + 9..at + 17].copy_from_slice(&key.offset.to_le_bytes());
    }

    fn chunk_item(len: u64, flags: u64, stripes: &[u64]) -> Vec<u8> {
        let mut c = vec![0u8; 0x30 + 32 * stripes.len()];
        c[0..8].copy_from_slice(&len.to_le_bytes());
        c[0x10..0x18].copy_from_slice(&0x10000u64.to_le_bytes());
        c[0x18..0x20].copy_from_slice(&flags.to_le_bytes());
        c[0x2C..0x2E].copy_from_slice(&(stripes.len() as u16).to_le_bytes());
        for (i, &p) in stripes.iter().enumerate() {
            let s = 0x30 + 32 * i;
            c[s..s + 8].copy_from_slice(&1u64.to_le_bytes());
            c[s + 8..s + 16].copy_from_slice(&p.to_le_bytes());
        }
        c
    }

    /// A tiny synthetic single-device btrfs: 1 MiB SYSTEM chunk (SINGLE), 1 MiB METADATA chunk
    /// (DUP at 2 and 3 MiB), 2 MiB DATA chunk (SINGLE), a two-level extent tree.
    struct Synth {
        d: Vec<u8>,
        /// (logical, physical of the copy read) of every tree block, for checksum refresh.
        blocks: Vec<(u64, u64)>,
    }

    impl Synth {
        fn new() -> Synth {
            let mut s = Synth {
                d: vec![0u8; DEV],
                blocks: Vec::new(),
            };
            s.build();
            s
        }

        fn phys(logical: u64) -> Vec<u64> {
            if (META..META + MIB).contains(&logical) {
                vec![logical, logical + MIB]
            } else {
                vec![logical]
            }
        }

        fn leaf(&mut self, logical: u64, owner: u64, items: &[(Key, Vec<u8>)]) {
            let mut b = vec![0u8; NS];
            let mut data_end = NS - HDR as usize;
            for (i, (key, data)) in items.iter().enumerate() {
                let at = HDR as usize + i * 25;
                put_key(&mut b, at, *key);
                data_end -= data.len();
                b[at + 17..at + 21].copy_from_slice(&(data_end as u32).to_le_bytes());
                b[at + 21..at + 25].copy_from_slice(&(data.len() as u32).to_le_bytes());
                let s = HDR as usize + data_end;
                b[s..s + data.len()].copy_from_slice(data);
            }
            self.block(logical, owner, 0, items.len(), b);
        }

        fn node(&mut self, logical: u64, owner: u64, level: u8, ptrs: &[(Key, u64)]) {
            let mut b = vec![0u8; NS];
            for (i, (key, ptr)) in ptrs.iter().enumerate() {
                let at = HDR as usize + i * 33;
                put_key(&mut b, at, *key);
                b[at + 17..at + 25].copy_from_slice(&ptr.to_le_bytes());
            }
            self.block(logical, owner, level, ptrs.len(), b);
        }

        fn block(&mut self, logical: u64, owner: u64, level: u8, n: usize, mut b: Vec<u8>) {
            b[0x20..0x30].copy_from_slice(&FSID);
            b[0x30..0x38].copy_from_slice(&logical.to_le_bytes());
            b[0x58..0x60].copy_from_slice(&owner.to_le_bytes());
            b[0x60..0x64].copy_from_slice(&(n as u32).to_le_bytes());
            b[0x64] = level;
            let c = crc32c(&b[0x20..]);
            b[0..4].copy_from_slice(&c.to_le_bytes());
            let phys = Self::phys(logical);
            for &p in &phys {
                self.d[p as usize..p as usize + NS].copy_from_slice(&b);
            }
            self.blocks.push((logical, phys[0]));
        }

        fn build(&mut self) {
            let chunks = [
                (SYS, chunk_item(MIB, 0x2, &[SYS])),
                (META, chunk_item(MIB, 0x24, &[META, META + MIB])),
                (DATA, chunk_item(2 * MIB, 0x1, &[DATA])),
            ];
            let items: Vec<_> = chunks
                .iter()
                .map(|(l, c)| (k(256, CHUNK_ITEM, *l), c.clone()))
                .collect();
            self.leaf(SYS, CHUNK_TREE, &items);
            let root_item = |bytenr: u64, level: u8| {
                let mut r = vec![0u8; 439];
                r[176..184].copy_from_slice(&bytenr.to_le_bytes());
                r[238] = level;
                r
            };
            self.leaf(
                META,
                ROOT_TREE,
                &[
                    (k(EXTENT_TREE, ROOT_ITEM, 0), root_item(META + 0x1000, 1)),
                    (k(DEV_TREE, ROOT_ITEM, 0), root_item(META + 0x4000, 0)),
                ],
            );
            let meta = |l: u64, level: u64| (k(l, METADATA_ITEM, level), vec![0u8; 33]);
            let data = |l: u64, len: u64| (k(l, EXTENT_ITEM, len), vec![0u8; 53]);
            self.node(
                META + 0x1000,
                EXTENT_TREE,
                1,
                &[
                    (k(SYS, METADATA_ITEM, 0), META + 0x2000),
                    (k(META + 0x3000, METADATA_ITEM, 0), META + 0x3000),
                ],
            );
            self.leaf(
                META + 0x2000,
                EXTENT_TREE,
                &[
                    meta(SYS, 0),
                    meta(META, 0),
                    meta(META + 0x1000, 1),
                    meta(META + 0x2000, 0),
                ],
            );
            self.leaf(
                META + 0x3000,
                EXTENT_TREE,
                &[
                    meta(META + 0x3000, 0),
                    meta(META + 0x4000, 0),
                    data(DATA, 0x2000),
                    data(DATA + 0x10000, 0x1000),
                ],
            );
            let dev_ext = |chunk: u64, len: u64| {
                let mut e = vec![0u8; 48];
                e[0..8].copy_from_slice(&CHUNK_TREE.to_le_bytes());
                e[8..16].copy_from_slice(&256u64.to_le_bytes());
                e[0x10..0x18].copy_from_slice(&chunk.to_le_bytes());
                e[0x18..0x20].copy_from_slice(&len.to_le_bytes());
                e
            };
            self.leaf(
                META + 0x4000,
                DEV_TREE,
                &[
                    (k(1, DEV_EXTENT, SYS), dev_ext(SYS, MIB)),
                    (k(1, DEV_EXTENT, META), dev_ext(META, MIB)),
                    (k(1, DEV_EXTENT, META + MIB), dev_ext(META, MIB)),
                    (k(1, DEV_EXTENT, DATA), dev_ext(DATA, 2 * MIB)),
                ],
            );
            // Superblock.
            let sb = &mut self.d[SUPER_OFF as usize..SUPER_OFF as usize + 4096];
            sb[0x20..0x30].copy_from_slice(&FSID);
            sb[0x30..0x38].copy_from_slice(&SUPER_OFF.to_le_bytes());
            sb[0x40..0x48].copy_from_slice(b"_BHRfS_M");
            sb[0x50..0x58].copy_from_slice(&META.to_le_bytes());
            sb[0x58..0x60].copy_from_slice(&SYS.to_le_bytes());
            sb[0x70..0x78].copy_from_slice(&(DEV as u64).to_le_bytes());
            sb[0x78..0x80].copy_from_slice(&(6 * 4096u64 + 0x3000).to_le_bytes());
            sb[0x88..0x90].copy_from_slice(&1u64.to_le_bytes());
            sb[0x90..0x94].copy_from_slice(&4096u32.to_le_bytes());
            sb[0x94..0x98].copy_from_slice(&(NS as u32).to_le_bytes());
            sb[0xC9..0xD1].copy_from_slice(&1u64.to_le_bytes());
            sb[0xD1..0xD9].copy_from_slice(&(DEV as u64).to_le_bytes());
            let mut sys = vec![0u8; 17];
            put_key(&mut sys, 0, k(256, CHUNK_ITEM, SYS));
            sys.extend(chunk_item(MIB, 0x2, &[SYS]));
            sb[0xA0..0xA4].copy_from_slice(&(sys.len() as u32).to_le_bytes());
            sb[0x32B..0x32B + sys.len()].copy_from_slice(&sys);
            self.refresh();
        }

        /// Recomputes the superblock's and every tree block's checksum (first copy).
        fn refresh(&mut self) {
            let sb = SUPER_OFF as usize;
            let c = crc32c(&self.d[sb + 0x20..sb + 4096]);
            self.d[sb..sb + 4].copy_from_slice(&c.to_le_bytes());
            for &(_, p) in &self.blocks {
                let p = p as usize;
                let c = crc32c(&self.d[p + 0x20..p + NS]);
                self.d[p..p + 4].copy_from_slice(&c.to_le_bytes());
            }
        }

        fn sb_mut(&mut self) -> &mut [u8] {
            &mut self.d[SUPER_OFF as usize..SUPER_OFF as usize + 4096]
        }

        fn fill(&self) -> Result<FsInfo, FsError> {
            let disk = MemDisk::from_vec(self.d.clone(), 512);
            run_fill(&disk)
        }
    }

    fn run_fill(dev: &dyn BlockDev) -> Result<FsInfo, FsError> {
        let mut info = FsInfo::raw(FsKind::Btrfs);
        fill(&Region::whole(dev), &mut info).map(|()| info)
    }

    fn expect_corrupt(r: Result<FsInfo, FsError>, needle: &str) {
        match r {
            Err(FsError::Corrupt { detail, .. }) => {
                assert!(detail.contains(needle), "{detail:?} lacks {needle:?}")
            }
            other => panic!("expected Corrupt({needle}), got {other:?}"),
        }
    }

    const EXACT: [(u64, u64); 5] = [
        (0, MIB + 0x1000),
        (META, 0x5000),
        (META + MIB, 0x5000),
        (DATA, 0x2000),
        (DATA + 0x10000, 0x1000),
    ];

    #[test]
    fn crc32c_known_answer() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn synthetic_map_is_exact() {
        let info = Synth::new().fill().unwrap();
        assert_eq!(info.used.unwrap().runs(), EXACT);
        assert_eq!(info.block_size, 4096);
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    }

    #[test]
    fn log_root_is_refused() {
        let mut s = Synth::new();
        s.sb_mut()[0x60..0x68].copy_from_slice(&(META + 0x5000).to_le_bytes());
        s.refresh();
        match s.fill() {
            Err(FsError::Refused { detail, .. }) => assert!(detail.contains("fsync log")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn checksums_checked() {
        let mut s = Synth::new();
        s.sb_mut()[0x100] ^= 1;
        expect_corrupt(s.fill(), "superblock checksum");
        let mut s = Synth::new();
        s.d[META as usize + 0x3000 + 0x200] ^= 1;
        expect_corrupt(s.fill(), "checksum mismatch");
    }

    #[test]
    fn cycle_and_repeated_pointer() {
        let ptr2 = META as usize + 0x1000 + HDR as usize + 33 + 17;
        for (target, needle) in [(META + 0x1000, "twice"), (META + 0x2000, "twice")] {
            let mut s = Synth::new();
            s.d[ptr2..ptr2 + 8].copy_from_slice(&target.to_le_bytes());
            s.refresh();
            expect_corrupt(s.fill(), needle);
        }
        // A cycle the level check cannot see: the child is at the right level but reached
        // twice, through a pointer whose key range still fits.
        let mut s = Synth::new();
        let key2 = META as usize + 0x1000 + HDR as usize + 33;
        put_key(&mut s.d, key2, k(META + 0x2000, METADATA_ITEM, 1));
        s.d[ptr2..ptr2 + 8].copy_from_slice(&(META + 0x2000).to_le_bytes());
        s.refresh();
        expect_corrupt(s.fill(), "twice");
    }

    #[test]
    fn levels_bounded() {
        let mut s = Synth::new();
        s.sb_mut()[0xC6] = 9;
        s.refresh();
        expect_corrupt(s.fill(), "levels");
        let mut s = Synth::new();
        s.sb_mut()[0xC6] = 1;
        s.refresh();
        expect_corrupt(s.fill(), "expected tree 1 at level 1");
    }

    #[test]
    fn keys_and_pointers_checked() {
        // Swap the first two items' keys of the extent leaf.
        let mut s = Synth::new();
        let l = META as usize + 0x2000 + HDR as usize;
        let a = s.d[l..l + 17].to_vec();
        let b = s.d[l + 25..l + 42].to_vec();
        s.d[l..l + 17].copy_from_slice(&b);
        s.d[l + 25..l + 42].copy_from_slice(&a);
        s.refresh();
        expect_corrupt(s.fill(), "out of order");
        // A pointer into no chunk.
        let mut s = Synth::new();
        let ptr = META as usize + 0x1000 + HDR as usize + 17;
        s.d[ptr..ptr + 8].copy_from_slice(&(7 * MIB).to_le_bytes());
        s.refresh();
        expect_corrupt(s.fill(), "lies in no chunk");
        // Item data outside the block.
        let mut s = Synth::new();
        s.d[l + 17..l + 21].copy_from_slice(&4090u32.to_le_bytes());
        s.refresh();
        expect_corrupt(s.fill(), "outside its block");
        // Too many items.
        let mut s = Synth::new();
        s.d[META as usize + 0x2000 + 0x60..META as usize + 0x2000 + 0x64]
            .copy_from_slice(&1000u32.to_le_bytes());
        s.refresh();
        expect_corrupt(s.fill(), "room for");
        // A data extent past its chunk.
        let mut s = Synth::new();
        let l3 = META as usize + 0x3000 + HDR as usize + 3 * 25;
        put_key(&mut s.d, l3, k(DATA + 0x10000, EXTENT_ITEM, 4 * MIB));
        s.refresh();
        expect_corrupt(s.fill(), "inside one chunk");
    }

    #[test]
    fn bytes_used_cross_check() {
        let mut s = Synth::new();
        s.sb_mut()[0x78..0x80].copy_from_slice(&(1u64 << 30).to_le_bytes());
        s.refresh();
        expect_corrupt(s.fill(), "superblock counts");
        let mut s = Synth::new();
        s.sb_mut()[0x78..0x80].copy_from_slice(&4096u64.to_le_bytes());
        s.refresh();
        let info = s.fill().unwrap();
        assert_eq!(info.warnings.len(), 1, "{:?}", info.warnings);
        assert_eq!(info.used.unwrap().runs(), EXACT);
    }

    #[test]
    fn multi_device_uses_dev_extents() {
        let mut s = Synth::new();
        s.sb_mut()[0x88..0x90].copy_from_slice(&2u64.to_le_bytes());
        s.refresh();
        let info = s.fill().unwrap();
        assert!(info.warnings[0].contains("multi-device"));
        assert_eq!(info.used.unwrap().runs(), [(0, 6 * MIB)]);
    }

    #[test]
    fn striped_chunk_is_saved_whole() {
        let mut s = Synth::new();
        // The chunk tree's DATA chunk item becomes RAID0 (one stripe).
        let item = SYS as usize + HDR as usize + 2 * 25;
        let doff = u32::from_le_bytes(s.d[item + 17..item + 21].try_into().unwrap()) as usize;
        let flags = SYS as usize + HDR as usize + doff + 0x18;
        s.d[flags..flags + 8].copy_from_slice(&(0x1u64 | BG_RAID0).to_le_bytes());
        s.refresh();
        let info = s.fill().unwrap();
        let runs = info.used.unwrap();
        assert_eq!(runs.runs()[3], (DATA, 2 * MIB));
    }

    #[test]
    fn other_checksum_types_warn() {
        let mut s = Synth::new();
        s.sb_mut()[0xC4] = 1;
        s.refresh();
        let info = s.fill().unwrap();
        assert!(info.warnings[0].contains("xxhash64"));
        assert_eq!(info.used.unwrap().runs(), EXACT);
    }

    #[test]
    fn unsupported_states() {
        for (off, bit, refuse) in [
            (0x38usize, SUPER_FLAG_SEEDING, Some("seed device")),
            (0x38, SUPER_FLAG_METADUMP, Some("metadata dump")),
            (0x38, SUPER_FLAG_CHANGING_FSID_V2, Some("fsid change")),
            (0xBC, INCOMPAT_ZONED, Some("zoned")),
            (0xBC, INCOMPAT_EXTENT_TREE_V2, None),
            (0xBC, INCOMPAT_RAID_STRIPE_TREE, None),
        ] {
            let mut s = Synth::new();
            s.sb_mut()[off..off + 8].copy_from_slice(&bit.to_le_bytes());
            s.refresh();
            match (s.fill(), refuse) {
                (Err(FsError::Refused { detail, .. }), Some(n)) => {
                    assert!(detail.contains(n), "{detail}")
                }
                (Ok(info), None) => {
                    assert!(info.used.is_none());
                    assert!(info.warnings[0].contains("imaged raw"));
                }
                (other, _) => panic!("{bit:#x}: {other:?}"),
            }
        }
    }

    #[test]
    fn device_larger_than_partition() {
        let s = Synth::new();
        let disk = MemDisk::from_vec(s.d[..6 << 20].to_vec(), 512);
        expect_corrupt(run_fill(&disk), "partition has");
    }

    #[test]
    fn every_single_byte_corruption_is_handled() {
        // Checksums off (type xxhash64, not verified) so that damage reaches every check.
        let mut s = Synth::new();
        s.sb_mut()[0xC4] = 1;
        let disk = MemDisk::from_vec(s.d.clone(), 512);
        let mut spans: Vec<(u64, usize)> = vec![(SUPER_OFF, 0x400)];
        for &(_, p) in &s.blocks {
            spans.push((p, 0x200));
            spans.push((p + NS as u64 - 0x200, 0x200));
        }
        let mut offsets = Vec::new();
        for (p, n) in spans {
            offsets.extend(p..p + n as u64);
        }
        for &off in &offsets {
            let b = s.d[off as usize] ^ 0xFF;
            let ov = Overlay {
                base: &disk,
                patches: vec![(off, vec![b])],
            };
            if let Ok(info) = run_fill(&ov) {
                if let Some(u) = info.used {
                    assert!(u.end() <= DEV as u64);
                }
            }
        }
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        for _ in 0..2000 {
            let mut patches = Vec::new();
            for _ in 0..(1 + rng.next() % 4) {
                let off = offsets[(rng.next() % offsets.len() as u64) as usize];
                patches.push((off, vec![rng.next() as u8]));
            }
            let ov = Overlay {
                base: &disk,
                patches,
            };
            let _ = run_fill(&ov);
        }
    }

    #[test]
    fn real_image_maps_and_survives_corruption() {
        have("mkfs.btrfs");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        for i in 0..50 {
            std::fs::write(root.join(format!("f{i}")), vec![i as u8; 1000 * i + 1]).unwrap();
        }
        let path = dir.path().join("b.img");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
        let st = Command::new("mkfs.btrfs")
            .args(["-q", "-m", "dup", "-d", "single", "--rootdir"])
            .arg(&root)
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success());
        let disk = FileDisk::open(&path).unwrap();
        let info = run_fill(&disk).unwrap();
        let used = info.used.unwrap();
        assert!(
            used.total() > MIB && used.total() < 16 * MIB,
            "{}",
            used.total()
        );
        // Corrupt the superblock and the roots of the chunk, root and extent trees, one byte at
        // a time, with checksums recomputed so that the damage reaches the parser.
        let mut sbuf = vec![0u8; 4096];
        disk.read_exact_at(&mut sbuf, SUPER_OFF).unwrap();
        let sb = parse_super(&Region::whole(&disk), &mut Vec::new()).unwrap();
        let part = Region::whole(&disk);
        let mut r = Reader {
            part: &part,
            sb: &sb,
            chunks: sys_chunks(&sb).unwrap(),
            max_nodes: 1 << 20,
        };
        let mut found = Vec::new();
        let _ = r.walk(
            CHUNK_TREE,
            sb.chunk_root,
            sb.chunk_root_level,
            &mut |key, data, at| {
                if key.kind == CHUNK_ITEM {
                    found.push((key.offset, parse_chunk(data, at)?.0));
                }
                Ok(())
            },
        );
        for (l, c) in found {
            r.chunks.insert(l, c, 0).unwrap();
        }
        let Ok((ext_root, _)) = tree_root(&r, EXTENT_TREE) else {
            panic!("no extent root")
        };
        let phys = |l: u64| {
            let (_, c, d) = r.chunks.find(l, sb.nodesize).unwrap();
            c.stripes[0].1 + d
        };
        let ns = sb.nodesize as usize;
        let mut targets = vec![(SUPER_OFF, 4096usize, 0x400usize)];
        for l in [sb.chunk_root, sb.root, ext_root] {
            targets.push((phys(l), ns, 0x180));
        }
        let mut n = 0;
        for (off, len, span) in targets {
            let mut orig = vec![0u8; len];
            disk.read_exact_at(&mut orig, off).unwrap();
            for i in 0x20..span {
                let mut b = orig.clone();
                b[i] ^= 0xA5;
                let c = crc32c(&b[0x20..]);
                b[0..4].copy_from_slice(&c.to_le_bytes());
                let ov = Overlay {
                    base: &disk,
                    patches: vec![(off, b)],
                };
                if let Ok(info) = run_fill(&ov) {
                    if let Some(u) = info.used {
                        assert!(u.end() <= 256 << 20);
                    }
                }
                n += 1;
            }
        }
        assert!(n > 1000);
    }
}
