//! XFS used-block map (reference: ../shared/reference/filesystems.md §7).
//!
//! Used = the complement, per allocation group (AG), of the free space: the records of the
//! by-block-number free-space B+tree (bnobt) plus the blocks on the AG free list (AGFL), whose
//! content is meaningless. Everything else (AG headers, every btree, inodes, the internal log,
//! directories, data) is used. AG `a` block `b` sits at byte `(a × agblocks + b) × blocksize`:
//! linear, unlike the `a << agblklog | b` fsblock numbers.
//!
//! Refused: an external log, a realtime subvolume, an unfinished mkfs, the needs-repair flag,
//! and a log holding changes that were never replayed (XFS has no clean flag: `check_log`
//! finds the log head from the cycle numbers and requires the last record to be an unmount
//! record, as the kernel's and xfs_repair's `xlog_find_tail` do).
//!
//! Every field is big-endian and untrusted: reads go through `crate::bytes`, arithmetic is
//! checked, every btree pointer must lie inside its AG, no block is visited twice, the depth is
//! bounded by the AGF's level, and v5 checksums, owners and addresses are verified.

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::as_conversions
)]

use std::collections::HashSet;

use crate::bytes::{arr, be16, be32, be64};
use crate::disk::Region;
use crate::fs::checksum::crc32c_ok;
use crate::fs::{read_at, Extents, FsError, FsInfo, FsKind};

const FS: FsKind = FsKind::Xfs;

/// Deepest free-space btree the kernel builds (its computed `m_alloc_maxlevels` stays below).
const MAX_BTREE_LEVELS: u32 = 9;
/// Short-form btree block header sizes: v4 and v5 (CRC) filesystems.
const BTREE_HDR_V4: u64 = 16;
const BTREE_HDR_V5: u64 = 56;
/// v5 AGFL header (magic, seqno, uuid, lsn, crc).
const AGFL_HDR_V5: u64 = 36;
/// v5 incompat feature bits that matter here.
const INCOMPAT_META_UUID: u32 = 0x4;
const INCOMPAT_NEEDSREPAIR: u32 = 0x10;

/// The log works in 512-byte basic blocks.
const BB: u64 = 512;
/// How far around the head the cycle numbers are checked: every in-flight log write fits in
/// it (XLOG_MAX_ICLOGS × XLOG_MAX_RECORD_BSIZE = 8 × 256 KiB, the kernel's scan distance).
const LOG_WINDOW_BBS: u64 = 4096;
const XLOG_HEADER_MAGIC: u32 = 0xFEED_BABE;
const XLOG_HEADER_CYCLE_SIZE: u64 = 32 * 1024;
const XLOG_MAX_RECORD_BYTES: u64 = 256 * 1024;
const XLOG_UNMOUNT_TRANS: u8 = 0x20;

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

/// `v mod n`, 0 when `n` is 0.
fn wrap(v: u64, n: u64) -> u64 {
    v.checked_rem(n).unwrap_or(0)
}

fn to_usize(v: u64, offset: u64) -> Result<usize, FsError> {
    usize::try_from(v).map_err(|_| corrupt(offset, format!("size {v} does not fit in memory")))
}

/// The superblock fields the map needs, validated.
#[derive(Debug, Clone)]
struct Super {
    block: u64,
    sect: u64,
    dblocks: u64,
    agblocks: u64,
    agcount: u64,
    agblklog: u32,
    logstart: u64,
    logblocks: u64,
    v5: bool,
    /// The UUID stamped into v5 metadata blocks.
    meta_uuid: [u8; 16],
}

impl Super {
    /// Length in blocks of AG `agno` (the last one may be short).
    fn ag_len(&self, agno: u64) -> u64 {
        if agno.saturating_add(1) >= self.agcount {
            self.dblocks
                .saturating_sub(agno.saturating_mul(self.agblocks))
        } else {
            self.agblocks
        }
    }

    /// Blocks taken by the four AG header sectors (SB, AGF, AGI, AGFL) at the start of each AG.
    fn header_blocks(&self) -> u64 {
        self.sect.saturating_mul(4).div_ceil(self.block.max(1))
    }

    /// Partition byte offset of AG `agno` block `agbno`; both validated against the geometry
    /// by the caller, so the product stays below `dblocks × blocksize` ≤ the partition length.
    fn byte_of(&self, agno: u64, agbno: u64) -> u64 {
        agno.saturating_mul(self.agblocks)
            .saturating_add(agbno)
            .saturating_mul(self.block)
    }
}

fn parse_super(part: &Region<'_>) -> Result<Super, FsError> {
    let head = read_at(part, FS, 0, 512)?;
    if head.get(0..4) != Some(b"XFSB") {
        return Err(corrupt(0, "no XFS superblock magic (XFSB)"));
    }
    let field32 = |off: usize| be32(&head, off).unwrap_or(0);
    let field64 = |off: usize| be64(&head, off).unwrap_or(0);
    let version = be16(&head, 0x64).unwrap_or(0) & 0xF;
    if version != 4 && version != 5 {
        return Err(corrupt(
            0x64,
            format!("superblock version {version}; only versions 4 and 5 are supported"),
        ));
    }
    let block = u64::from(field32(0x04));
    if !block.is_power_of_two() || !(512..=65536).contains(&block) {
        return Err(corrupt(
            0x04,
            format!("block size {block} is not a power of two in 512..=65536"),
        ));
    }
    let sect = u64::from(be16(&head, 0x66).unwrap_or(0));
    if !sect.is_power_of_two() || !(512..=32768).contains(&sect) || sect > block {
        return Err(corrupt(
            0x66,
            format!("sector size {sect} is not a power of two in 512..=32768 and ≤ the block size {block}"),
        ));
    }
    let agblocks = u64::from(field32(0x54));
    let agcount = u64::from(field32(0x58));
    let dblocks = field64(0x08);
    let agblklog = u32::from(head.get(0x7C).copied().unwrap_or(0));
    if !(64..=0x7FFF_FFFF).contains(&agblocks) {
        return Err(corrupt(
            0x54,
            format!("AG size {agblocks} blocks is outside 64..=2^31-1"),
        ));
    }
    // agblklog = number of bits of (agblocks - 1), the fsblock split point.
    let want_log = u64::BITS.saturating_sub(agblocks.saturating_sub(1).leading_zeros());
    if agblklog != want_log {
        return Err(corrupt(
            0x7C,
            format!(
                "agblklog {agblklog} does not match the AG size {agblocks} (expected {want_log})"
            ),
        ));
    }
    if agcount == 0 {
        return Err(corrupt(0x58, "AG count is 0"));
    }
    let full = agcount.saturating_sub(1).saturating_mul(agblocks);
    let max = agcount.saturating_mul(agblocks);
    if dblocks <= full || dblocks > max {
        return Err(corrupt(
            0x08,
            format!("{dblocks} blocks do not fit {agcount} AGs of {agblocks} blocks"),
        ));
    }
    let fs_bytes = dblocks
        .checked_mul(block)
        .ok_or_else(|| corrupt(0x08, format!("{dblocks} blocks of {block} bytes overflow")))?;
    if fs_bytes > part.len() {
        return Err(corrupt(
            0x08,
            format!(
                "the filesystem ({fs_bytes} bytes) is larger than its partition ({} bytes)",
                part.len()
            ),
        ));
    }
    let sb = Super {
        block,
        sect,
        dblocks,
        agblocks,
        agcount,
        agblklog,
        logstart: field64(0x30),
        logblocks: u64::from(field32(0x60)),
        v5: version == 5,
        meta_uuid: [0; 16],
    };
    if sb.ag_len(agcount.saturating_sub(1)) <= sb.header_blocks() {
        return Err(corrupt(
            0x08,
            "the last AG is too short to hold its headers",
        ));
    }
    let mut sb = sb;
    let uuid: [u8; 16] = arr(&head, 0x20).unwrap_or([0; 16]);
    sb.meta_uuid = uuid;
    if sb.v5 {
        let full = read_at(part, FS, 0, to_usize(sect, 0x66)?)?;
        if !crc32c_ok(&full, 0xE0) {
            return Err(corrupt(0xE0, "superblock checksum mismatch"));
        }
        let incompat = field32(0xD8);
        if incompat & INCOMPAT_META_UUID != 0 {
            sb.meta_uuid = arr(&head, 0xF8).unwrap_or([0; 16]);
        }
    }
    Ok(sb)
}

/// The states in which the on-disk free-space trees cannot be trusted or the data is elsewhere.
fn check_refusals(part: &Region<'_>, sb: &Super) -> Result<(), FsError> {
    let head = read_at(part, FS, 0, 512)?;
    if head.get(0x7E).copied().unwrap_or(0) != 0 {
        return Err(refused(
            "mkfs never finished on this filesystem (sb_inprogress is set); re-create it or save with --raw",
        ));
    }
    if sb.logstart == 0 {
        return Err(refused(
            "the log is on another device (external log), so it cannot be checked for unreplayed \
             changes; mount and unmount the filesystem with its log device, then save with --raw",
        ));
    }
    if be64(&head, 0x10).unwrap_or(0) != 0 || be64(&head, 0x18).unwrap_or(0) != 0 {
        return Err(refused(
            "the filesystem has a realtime subvolume on another device, which a partition image \
             cannot hold; save both devices with --raw",
        ));
    }
    if sb.v5 && be32(&head, 0xD8).unwrap_or(0) & INCOMPAT_NEEDSREPAIR != 0 {
        return Err(refused(
            "the filesystem is marked as needing repair; run xfs_repair on it, then save again",
        ));
    }
    Ok(())
}

/// Reads the internal log's cycle numbers around its head.
struct Log<'a, 'p> {
    part: &'a Region<'p>,
    /// Partition byte offset of the log.
    off: u64,
    /// Length in basic blocks.
    bbs: u64,
}

impl Log<'_, '_> {
    fn bb_off(&self, bb: u64) -> u64 {
        // bb < self.bbs, and off + bbs × 512 was checked to lie inside the filesystem.
        self.off.saturating_add(bb.saturating_mul(BB))
    }

    /// `count` basic blocks from `first` (no wrap: the caller splits at the log's end).
    fn read(&self, first: u64, count: u64) -> Result<Vec<u8>, FsError> {
        let off = self.bb_off(first);
        read_at(self.part, FS, off, to_usize(count.saturating_mul(BB), off)?)
    }

    /// `count` basic blocks ending just before `end` (exclusive), wrapping around the log's
    /// start, in log order.
    fn read_before(&self, end: u64, count: u64) -> Result<Vec<u8>, FsError> {
        if count <= end {
            return self.read(end.saturating_sub(count), count);
        }
        let tail = count.saturating_sub(end);
        let mut v = self.read(self.bbs.saturating_sub(tail), tail)?;
        v.extend(self.read(0, end)?);
        Ok(v)
    }

    fn cycle(&self, bb: u64) -> Result<u32, FsError> {
        let b = self.read(bb, 1)?;
        Ok(cycle_of(&b))
    }
}

/// The cycle number stamped at the start of a basic block (a record header keeps it in its
/// second word, after the magic).
fn cycle_of(bb: &[u8]) -> u32 {
    match be32(bb, 0) {
        Some(XLOG_HEADER_MAGIC) => be32(bb, 4).unwrap_or(0),
        Some(c) => c,
        None => 0,
    }
}

fn log_dirty() -> FsError {
    refused(
        "the log holds changes that are not yet in the filesystem (it was not unmounted cleanly); \
         mount it once and unmount it to replay the log (or run xfs_repair), then save again",
    )
}

fn log_unverifiable(why: &str) -> FsError {
    refused(format!(
        "cannot tell whether the log is clean ({why}); mount and unmount the filesystem to \
         replay the log, check it with xfs_repair -n, then save again"
    ))
}

/// Refuses a filesystem whose internal log holds unreplayed changes.
///
/// The log is a ring of 512-byte blocks, each stamped with the cycle (lap) it was written in:
/// blocks `[0, head)` carry cycle C and `[head, end)` cycle C − 1. The head is found by binary
/// search, then the cycles in a window around it (every write that could have been in flight)
/// are checked, then the last record before the head must be a lone unmount record ending
/// exactly at the head: that is the kernel's definition of a clean log.
fn check_log(part: &Region<'_>, sb: &Super) -> Result<(), FsError> {
    let mask = 1u64
        .checked_shl(sb.agblklog)
        .map(|m| m.saturating_sub(1))
        .unwrap_or(u64::MAX);
    let agno = sb.logstart.checked_shr(sb.agblklog).unwrap_or(0);
    let agbno = sb.logstart & mask;
    let fits = agno < sb.agcount
        && sb.logblocks > 0
        && agbno
            .checked_add(sb.logblocks)
            .is_some_and(|end| end <= sb.ag_len(agno));
    if !fits {
        return Err(corrupt(
            0x30,
            format!(
                "the internal log (fs block {:#x}, {} blocks) lies outside its AG",
                sb.logstart, sb.logblocks
            ),
        ));
    }
    let log = Log {
        part,
        off: sb.byte_of(agno, agbno),
        bbs: sb.logblocks.saturating_mul(sb.block / BB),
    };
    let n = log.bbs;
    let c0 = log.cycle(0)?;
    if c0 == 0 {
        // A zeroed log (xfs_repair -L, or never written): nothing to replay.
        return Ok(());
    }
    let last = log.cycle(n.saturating_sub(1))?;
    let head = if last == c0 {
        n
    } else if last == c0.wrapping_sub(1) {
        let (mut lo, mut hi) = (0u64, n.saturating_sub(1));
        // Invariant: cycle(lo) == c0, cycle(hi) != c0. At most 64 steps.
        while hi.saturating_sub(lo) > 1 {
            let mid = lo.saturating_add(hi.saturating_sub(lo) / 2);
            if log.cycle(mid)? == c0 {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    } else {
        return Err(log_unverifiable(&format!(
            "cycle {c0} at its start and {last} at its end"
        )));
    };

    // Before the head: cycle C down to block 0, then C − 1 from the end of the log.
    let w = LOG_WINDOW_BBS.min(n);
    let before = log.read_before(head, w)?;
    let first_pos = wrap(head.saturating_add(n).saturating_sub(w), n);
    let mut rec: Option<(u64, usize)> = None;
    for k in 0..w {
        let pos = wrap(first_pos.saturating_add(k), n);
        let at = to_usize(k.saturating_mul(BB), log.off)?;
        let bb = before.get(at..).unwrap_or(&[]);
        let want = if pos < head { c0 } else { c0.wrapping_sub(1) };
        if cycle_of(bb) != want {
            return Err(log_unverifiable(&format!(
                "log block {pos} has cycle {}, expected {want}",
                cycle_of(bb)
            )));
        }
        if be32(bb, 0) == Some(XLOG_HEADER_MAGIC) {
            rec = Some((pos, at));
        }
    }
    // After the head: the previous lap, C − 1 (nothing there when the head is at the end).
    if head < n {
        let count = w.min(n.saturating_sub(head));
        let after = log.read(head, count)?;
        for k in 0..count {
            let at = to_usize(k.saturating_mul(BB), log.off)?;
            let c = cycle_of(after.get(at..).unwrap_or(&[]));
            if c != c0.wrapping_sub(1) {
                return Err(log_unverifiable(&format!(
                    "log block {} after the head has cycle {c}, expected {}",
                    head.saturating_add(k),
                    c0.wrapping_sub(1)
                )));
            }
        }
    }

    let Some((rec_pos, at)) = rec else {
        return Err(log_unverifiable("no log record header before the head"));
    };
    let hdr = before.get(at..).unwrap_or(&[]);
    let h_version = be32(hdr, 8).unwrap_or(0);
    let h_len = u64::from(be32(hdr, 12).unwrap_or(0));
    let h_lsn = be64(hdr, 16).unwrap_or(0);
    let h_logops = be32(hdr, 40).unwrap_or(0);
    let h_size = u64::from(be32(hdr, 0x140).unwrap_or(0));
    if h_len > XLOG_MAX_RECORD_BYTES || !(1..=2).contains(&h_version) {
        return Err(log_unverifiable(&format!(
            "the last record header (log block {rec_pos}) has version {h_version}, length {h_len}"
        )));
    }
    if h_lsn & 0xFFFF_FFFF != rec_pos || h_lsn.checked_shr(32) != Some(u64::from(cycle_of(hdr))) {
        return Err(log_unverifiable(&format!(
            "the last record header (log block {rec_pos}) carries LSN {h_lsn:#x}"
        )));
    }
    let hblks = if h_version & 2 != 0 && h_size > XLOG_HEADER_CYCLE_SIZE {
        h_size.div_ceil(XLOG_HEADER_CYCLE_SIZE)
    } else {
        1
    };
    let data_pos = wrap(rec_pos.saturating_add(hblks), n);
    let end = wrap(data_pos.saturating_add(h_len.div_ceil(BB)), n);
    if end != wrap(head, n) || h_logops != 1 {
        return Err(log_dirty());
    }
    let data = log.read(data_pos, 1)?;
    // Op header: tid(4) len(4) clientid(1) flags(1); the flags byte is untouched by the
    // cycle stamp in the first word.
    if data.get(9).copied().unwrap_or(0) & XLOG_UNMOUNT_TRANS == 0 {
        return Err(log_dirty());
    }
    Ok(())
}

/// One AG's position and the checks shared by its reads.
struct Ag<'a, 'p> {
    part: &'a Region<'p>,
    sb: &'a Super,
    agno: u64,
    len: u64,
}

impl Ag<'_, '_> {
    fn sect_off(&self, n: u64) -> u64 {
        self.sb
            .byte_of(self.agno, 0)
            .saturating_add(n.saturating_mul(self.sb.sect))
    }

    /// A block number inside this AG, past its header sectors.
    fn block_ok(&self, agbno: u64) -> bool {
        agbno >= self.sb.header_blocks() && agbno < self.len
    }

    /// Verifies a v5 checksum; `what` names the structure for the error.
    fn crc(&self, buf: &[u8], crc_off: usize, at: u64, what: &str) -> Result<(), FsError> {
        if self.sb.v5 && !crc32c_ok(buf, crc_off) {
            return Err(corrupt(
                at,
                format!("AG {}: {what} checksum mismatch", self.agno),
            ));
        }
        Ok(())
    }
}

/// The AGF fields the walk needs.
struct Agf {
    off: u64,
    bno_root: u64,
    bno_level: u32,
    flfirst: u64,
    fllast: u64,
    flcount: u64,
    freeblks: u64,
}

fn read_agf(ag: &Ag<'_, '_>) -> Result<Agf, FsError> {
    let off = ag.sect_off(1);
    let buf = read_at(ag.part, FS, off, to_usize(ag.sb.sect, off)?)?;
    let agno = ag.agno;
    if buf.get(0..4) != Some(b"XAGF") || be32(&buf, 4) != Some(1) {
        return Err(corrupt(
            off,
            format!("AG {agno}: no AGF magic (XAGF, version 1)"),
        ));
    }
    ag.crc(&buf, 0xD8, off, "AGF")?;
    let f = |o: usize| u64::from(be32(&buf, o).unwrap_or(0));
    if f(0x08) != agno {
        return Err(corrupt(
            off,
            format!("AG {agno}: the AGF says it belongs to AG {}", f(0x08)),
        ));
    }
    if f(0x0C) != ag.len {
        return Err(corrupt(
            off,
            format!(
                "AG {agno}: the AGF says {} blocks, the superblock {}",
                f(0x0C),
                ag.len
            ),
        ));
    }
    if ag.sb.v5 && arr::<16>(&buf, 0x40) != Some(ag.sb.meta_uuid) {
        return Err(corrupt(
            off,
            format!("AG {agno}: the AGF carries another filesystem's UUID"),
        ));
    }
    let bno_level = be32(&buf, 0x1C).unwrap_or(0);
    if !(1..=MAX_BTREE_LEVELS).contains(&bno_level) {
        return Err(corrupt(
            off,
            format!(
                "AG {agno}: free-space tree height {bno_level} is outside 1..={MAX_BTREE_LEVELS}"
            ),
        ));
    }
    let freeblks = f(0x34);
    if freeblks > ag.len {
        return Err(corrupt(
            off,
            format!(
                "AG {agno}: {freeblks} free blocks in an AG of {} blocks",
                ag.len
            ),
        ));
    }
    Ok(Agf {
        off,
        bno_root: f(0x10),
        bno_level,
        flfirst: f(0x28),
        fllast: f(0x2C),
        flcount: f(0x30),
        freeblks,
    })
}

/// State of one AG's bnobt walk.
struct BnoWalk {
    visited: HashSet<u64>,
    /// Free extents `(agbno, blocks)`, in ascending order.
    recs: Vec<(u64, u64)>,
    /// First block a next record may start at (records are sorted and disjoint).
    next_free: u64,
}

/// Walks the bnobt subtree rooted at `agbno`, whose root must have `level`; `from` is the
/// partition offset of the pointer (for errors).
fn walk_bno(
    ag: &Ag<'_, '_>,
    st: &mut BnoWalk,
    agbno: u64,
    level: u32,
    from: u64,
) -> Result<(), FsError> {
    let agno = ag.agno;
    if !ag.block_ok(agbno) {
        return Err(corrupt(
            from,
            format!(
                "AG {agno}: free-space tree pointer to block {agbno}, outside the AG's blocks {}..{}",
                ag.sb.header_blocks(),
                ag.len
            ),
        ));
    }
    if !st.visited.insert(agbno) {
        return Err(corrupt(
            from,
            format!("AG {agno}: free-space tree block {agbno} is reached twice (a cycle)"),
        ));
    }
    let sb = ag.sb;
    let off = sb.byte_of(agno, agbno);
    let buf = read_at(ag.part, FS, off, to_usize(sb.block, off)?)?;
    let (magic, hdr) = if sb.v5 {
        (b"AB3B", BTREE_HDR_V5)
    } else {
        (b"ABTB", BTREE_HDR_V4)
    };
    if buf.get(0..4) != Some(magic.as_slice()) {
        return Err(corrupt(
            off,
            format!(
                "AG {agno}: free-space tree block {agbno} has magic {:02x?}, expected {}",
                buf.get(0..4).unwrap_or(&[]),
                String::from_utf8_lossy(magic)
            ),
        ));
    }
    let got_level = u32::from(be16(&buf, 4).unwrap_or(0));
    if got_level != level {
        return Err(corrupt(
            off,
            format!("AG {agno}: free-space tree block {agbno} is at level {got_level}, expected {level}"),
        ));
    }
    if sb.v5 {
        if be64(&buf, 16) != Some(off / BB) {
            return Err(corrupt(
                off,
                format!("AG {agno}: free-space tree block {agbno} records another address"),
            ));
        }
        if arr::<16>(&buf, 32) != Some(sb.meta_uuid) || be32(&buf, 48).map(u64::from) != Some(agno)
        {
            return Err(corrupt(
                off,
                format!(
                    "AG {agno}: free-space tree block {agbno} belongs to another filesystem or AG"
                ),
            ));
        }
        ag.crc(&buf, 52, off, &format!("free-space tree block {agbno}"))?;
    }
    let numrecs = u64::from(be16(&buf, 6).unwrap_or(0));
    let room = sb.block.saturating_sub(hdr);
    if level == 0 {
        let maxrecs = room / 8;
        if numrecs > maxrecs {
            return Err(corrupt(
                off,
                format!("AG {agno}: free-space leaf {agbno} claims {numrecs} records, room for {maxrecs}"),
            ));
        }
        for i in 0..numrecs {
            let at = to_usize(hdr.saturating_add(i.saturating_mul(8)), off)?;
            let start = u64::from(be32(&buf, at).unwrap_or(0));
            let count = u64::from(be32(&buf, at.saturating_add(4)).unwrap_or(0));
            let end = start.saturating_add(count);
            if count == 0 || start < st.next_free || end > ag.len {
                return Err(corrupt(
                    off,
                    format!(
                        "AG {agno}: free extent {start}+{count} in leaf {agbno} is empty, out of \
                         order or past the AG's {} blocks",
                        ag.len
                    ),
                ));
            }
            st.next_free = end;
            st.recs.push((start, count));
        }
        return Ok(());
    }
    let maxrecs = room / 12;
    if numrecs == 0 || numrecs > maxrecs {
        return Err(corrupt(
            off,
            format!("AG {agno}: free-space node {agbno} claims {numrecs} pointers (1..={maxrecs})"),
        ));
    }
    let ptrs = hdr.saturating_add(maxrecs.saturating_mul(8));
    for i in 0..numrecs {
        let at = ptrs.saturating_add(i.saturating_mul(4));
        let child = u64::from(be32(&buf, to_usize(at, off)?).unwrap_or(0));
        walk_bno(
            ag,
            st,
            child,
            level.saturating_sub(1),
            off.saturating_add(at),
        )?;
    }
    Ok(())
}

/// The blocks on the AG free list, or `None` when its indices are inconsistent (the kernel then
/// resets the list; its blocks stay marked used here, which is safe).
fn read_agfl(ag: &Ag<'_, '_>, agf: &Agf) -> Result<Option<Vec<u64>>, FsError> {
    if agf.flcount == 0 {
        return Ok(Some(Vec::new()));
    }
    let off = ag.sect_off(3);
    let buf = read_at(ag.part, FS, off, to_usize(ag.sb.sect, off)?)?;
    let agno = ag.agno;
    let hdr = if ag.sb.v5 {
        if buf.get(0..4) != Some(b"XAFL") || be32(&buf, 4).map(u64::from) != Some(agno) {
            return Err(corrupt(
                off,
                format!("AG {agno}: no AGFL magic (XAFL) for this AG"),
            ));
        }
        if arr::<16>(&buf, 8) != Some(ag.sb.meta_uuid) {
            return Err(corrupt(
                off,
                format!("AG {agno}: the AGFL carries another filesystem's UUID"),
            ));
        }
        ag.crc(&buf, 32, off, "AGFL")?;
        AGFL_HDR_V5
    } else {
        0
    };
    let slots = ag.sb.sect.saturating_sub(hdr) / 4;
    let span = if agf.fllast >= agf.flfirst {
        agf.fllast.saturating_sub(agf.flfirst).saturating_add(1)
    } else {
        slots
            .saturating_sub(agf.flfirst)
            .saturating_add(agf.fllast)
            .saturating_add(1)
    };
    if agf.flfirst >= slots || agf.fllast >= slots || agf.flcount > slots || span != agf.flcount {
        return Ok(None);
    }
    let mut blocks = Vec::new();
    let mut i = agf.flfirst;
    for _ in 0..agf.flcount {
        let at = hdr.saturating_add(i.saturating_mul(4));
        let b = u64::from(be32(&buf, to_usize(at, off)?).unwrap_or(0));
        if !ag.block_ok(b) {
            return Err(corrupt(
                off.saturating_add(at),
                format!("AG {agno}: free-list entry {i} points to block {b}, outside the AG"),
            ));
        }
        blocks.push(b);
        i = wrap(i.saturating_add(1), slots);
    }
    Ok(Some(blocks))
}

/// Adds the used bytes of one AG to `used`; returns a warning, if any.
fn map_ag(ag: &Ag<'_, '_>, used: &mut Extents) -> Result<Option<String>, FsError> {
    let agf = read_agf(ag)?;
    let mut st = BnoWalk {
        visited: HashSet::new(),
        recs: Vec::new(),
        next_free: ag.sb.header_blocks(),
    };
    walk_bno(
        ag,
        &mut st,
        agf.bno_root,
        agf.bno_level.saturating_sub(1),
        agf.off.saturating_add(0x10),
    )?;
    let listed: u64 = st.recs.iter().fold(0u64, |a, r| a.saturating_add(r.1));
    if listed != agf.freeblks {
        return Err(corrupt(
            agf.off,
            format!(
                "AG {}: the free-space tree lists {listed} free blocks but the AGF counts {}",
                ag.agno, agf.freeblks
            ),
        ));
    }
    let mut warning = None;
    let mut free = st.recs;
    match read_agfl(ag, &agf)? {
        Some(list) => free.extend(list.into_iter().map(|b| (b, 1))),
        None => {
            warning = Some(format!(
                "AG {}: the free list's indices are inconsistent (first {}, last {}, count {}); \
                 its blocks are saved as used",
                ag.agno, agf.flfirst, agf.fllast, agf.flcount
            ))
        }
    }
    let free = Extents::from_unsorted(free);
    let mut at = 0u64;
    let block = ag.sb.block;
    let base = ag.sb.byte_of(ag.agno, 0);
    let mut add_used = |from: u64, to: u64| {
        if to > from {
            used.add(
                base.saturating_add(from.saturating_mul(block)),
                to.saturating_sub(from).saturating_mul(block),
            );
        }
    };
    for &(s, l) in free.runs() {
        add_used(at, s);
        at = s.saturating_add(l);
    }
    add_used(at, ag.len);
    Ok(warning)
}

/// Fills `info.used` (bytes the filesystem uses, relative to the partition start) and the block
/// size for an XFS partition.
pub fn fill(part: &Region<'_>, info: &mut FsInfo) -> Result<(), FsError> {
    let sb = parse_super(part)?;
    info.block_size = u32::try_from(sb.block).unwrap_or(0);
    check_refusals(part, &sb)?;
    check_log(part, &sb)?;
    let mut used = Extents::new();
    for agno in 0..sb.agcount {
        let ag = Ag {
            part,
            sb: &sb,
            agno,
            len: sb.ag_len(agno),
        };
        if let Some(w) = map_ag(&ag, &mut used)? {
            info.warnings.push(w);
        }
    }
    info.used = Some(used);
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
pub(crate) mod tests {
    use super::*;
    use crate::disk::{BlockDev, FileDisk, MemDisk};
    use std::io;
    use std::path::Path;
    use std::process::Command;

    /// A read-only view of a disk with some byte ranges replaced (corruption tests over real
    /// images without copying them).
    pub(crate) struct Overlay<'a> {
        pub(crate) base: &'a dyn BlockDev,
        pub(crate) patches: Vec<(u64, Vec<u8>)>,
    }

    impl BlockDev for Overlay<'_> {
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.base.read_exact_at(buf, offset)?;
            let end = offset + buf.len() as u64;
            for (p_off, p) in &self.patches {
                let p_end = p_off + p.len() as u64;
                let s = offset.max(*p_off);
                let e = end.min(p_end);
                if s < e {
                    buf[(s - offset) as usize..(e - offset) as usize]
                        .copy_from_slice(&p[(s - p_off) as usize..(e - p_off) as usize]);
                }
            }
            Ok(())
        }
        fn write_all_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
            Err(io::Error::other("read-only overlay"))
        }
        fn len(&self) -> u64 {
            self.base.len()
        }
        fn logical_sector(&self) -> u32 {
            512
        }
        fn physical_sector(&self) -> u32 {
            512
        }
        fn sync(&self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Checks an external tool is installed; a missing one fails the test (CI installs every
    /// tool through scripts/setup.sh, so nothing is skipped).
    pub(crate) fn have(tool: &str) -> bool {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(ok, "{tool} is needed by this test; run scripts/setup.sh");
        ok
    }

    /// Writes the little-endian CRC-32C of `buf` (field taken as zero) at `off`.
    pub(crate) fn set_crc(buf: &mut [u8], off: usize) {
        buf[off..off + 4].fill(0);
        let c = crate::fs::checksum::crc32c(buf);
        buf[off..off + 4].copy_from_slice(&c.to_le_bytes());
    }

    const BS: usize = 4096;
    const SECT: usize = 512;
    const AGB: usize = 64;
    const DBLOCKS: usize = 120;
    const LOG_AGBNO: usize = 40;
    const LOG_BLOCKS: usize = 8;
    const UUID: [u8; 16] = *b"0123456789abcdef";

    fn p16(d: &mut [u8], off: usize, v: u16) {
        d[off..off + 2].copy_from_slice(&v.to_be_bytes());
    }
    fn p32(d: &mut [u8], off: usize, v: u32) {
        d[off..off + 4].copy_from_slice(&v.to_be_bytes());
    }
    fn p64(d: &mut [u8], off: usize, v: u64) {
        d[off..off + 8].copy_from_slice(&v.to_be_bytes());
    }

    /// A tiny synthetic XFS: 2 AGs (64 + 56 blocks of 4 KiB), a clean 8-block log in AG 0,
    /// a one-level bnobt in AG 0 and a two-level one in AG 1.
    pub(crate) struct Synth {
        pub(crate) v5: bool,
        pub(crate) d: Vec<u8>,
    }

    /// Btree blocks: (ag, agbno).
    const BTREE_BLOCKS: [(usize, usize); 4] = [(0, 4), (1, 2), (1, 3), (1, 4)];

    impl Synth {
        fn new(v5: bool) -> Synth {
            let mut s = Synth {
                v5,
                d: vec![0u8; DBLOCKS * BS],
            };
            s.build();
            s
        }

        fn blk(ag: usize, b: usize) -> usize {
            (ag * AGB + b) * BS
        }

        fn build(&mut self) {
            let v5 = self.v5;
            let d = &mut self.d;
            d[0..4].copy_from_slice(b"XFSB");
            p32(d, 0x04, BS as u32);
            p64(d, 0x08, DBLOCKS as u64);
            d[0x20..0x30].copy_from_slice(&UUID);
            p64(d, 0x30, LOG_AGBNO as u64);
            p32(d, 0x54, AGB as u32);
            p32(d, 0x58, 2);
            p32(d, 0x60, LOG_BLOCKS as u32);
            p16(d, 0x64, if v5 { 0xB4A5 } else { 0xB4A4 });
            p16(d, 0x66, SECT as u16);
            d[0x7C] = 6;
            // Log: an unmount record at BB 0-1 in cycle 1, the rest never written (cycle 0).
            let log = LOG_AGBNO * BS;
            p32(d, log, XLOG_HEADER_MAGIC);
            p32(d, log + 4, 1);
            p32(d, log + 8, 2);
            p32(d, log + 12, 512);
            p64(d, log + 16, 1 << 32);
            p64(d, log + 24, 1 << 32);
            p32(d, log + 40, 1);
            p32(d, log + 0x140, 32768);
            p32(d, log + 512, 1);
            p32(d, log + 512 + 4, 8);
            d[log + 512 + 8] = 0xAA;
            d[log + 512 + 9] = XLOG_UNMOUNT_TRANS;
            // AG 0: leaf at 4 with (10,5) (50,14); free list [5, 6].
            // AG 1: node at 2 → leaves 3 [(10,2)] and 4 [(20,3) (30,4)]; empty free list.
            let ag_len = [AGB, DBLOCKS - AGB];
            let free = [19u32, 9];
            let root = [4u32, 2];
            let levels = [1u32, 2];
            for ag in 0..2 {
                let base = Self::blk(ag, 0);
                if ag == 1 {
                    d.copy_within(0..SECT, base);
                }
                let agf = base + SECT;
                d[agf..agf + 4].copy_from_slice(b"XAGF");
                p32(d, agf + 4, 1);
                p32(d, agf + 8, ag as u32);
                p32(d, agf + 0x0C, ag_len[ag] as u32);
                p32(d, agf + 0x10, root[ag]);
                p32(d, agf + 0x1C, levels[ag]);
                p32(d, agf + 0x34, free[ag]);
                d[agf + 0x40..agf + 0x50].copy_from_slice(&UUID);
                if ag == 0 {
                    p32(d, agf + 0x28, 0);
                    p32(d, agf + 0x2C, 1);
                    p32(d, agf + 0x30, 2);
                } else {
                    p32(d, agf + 0x28, 0);
                    p32(d, agf + 0x2C, 117);
                    p32(d, agf + 0x30, 0);
                }
                let agfl = base + 3 * SECT;
                let fl_hdr = if v5 { 36 } else { 0 };
                if v5 {
                    d[agfl..agfl + 4].copy_from_slice(b"XAFL");
                    p32(d, agfl + 4, ag as u32);
                    d[agfl + 8..agfl + 24].copy_from_slice(&UUID);
                }
                if ag == 0 {
                    p32(d, agfl + fl_hdr, 5);
                    p32(d, agfl + fl_hdr + 4, 6);
                }
            }
            let leaf = |d: &mut Vec<u8>, ag: usize, b: usize, recs: &[(u32, u32)]| {
                let o = Self::blk(ag, b);
                d[o..o + 4].copy_from_slice(if v5 { b"AB3B" } else { b"ABTB" });
                p16(d, o + 4, 0);
                p16(d, o + 6, recs.len() as u16);
                let h = if v5 { 56 } else { 16 };
                for (i, &(s, c)) in recs.iter().enumerate() {
                    p32(d, o + h + 8 * i, s);
                    p32(d, o + h + 8 * i + 4, c);
                }
            };
            leaf(d, 0, 4, &[(10, 5), (50, 14)]);
            leaf(d, 1, 3, &[(10, 2)]);
            leaf(d, 1, 4, &[(20, 3), (30, 4)]);
            let o = Self::blk(1, 2);
            d[o..o + 4].copy_from_slice(if v5 { b"AB3B" } else { b"ABTB" });
            p16(d, o + 4, 1);
            p16(d, o + 6, 2);
            let h = if v5 { 56 } else { 16 };
            let maxrecs = (BS - h) / 12;
            p32(d, o + h, 10);
            p32(d, o + h + 8, 20);
            p32(d, o + h + maxrecs * 8, 3);
            p32(d, o + h + maxrecs * 8 + 4, 4);
            self.refresh();
        }

        /// Recomputes every v5 stamp and checksum (after a deliberate corruption, so that the
        /// check under test, not the checksum, sees it).
        pub(crate) fn refresh(&mut self) {
            if !self.v5 {
                return;
            }
            let d = &mut self.d;
            for ag in 0..2 {
                let base = Self::blk(ag, 0);
                set_crc(&mut d[base..base + SECT], 0xE0);
                set_crc(&mut d[base + SECT..base + 2 * SECT], 0xD8);
                set_crc(&mut d[base + 3 * SECT..base + 4 * SECT], 32);
            }
            for (ag, b) in BTREE_BLOCKS {
                let o = Self::blk(ag, b);
                p64(d, o + 16, (o / 512) as u64);
                d[o + 32..o + 48].copy_from_slice(&UUID);
                p32(d, o + 48, ag as u32);
                set_crc(&mut d[o..o + BS], 52);
            }
        }

        pub(crate) fn fill(&self) -> Result<FsInfo, FsError> {
            Synth {
                v5: self.v5,
                d: self.d.clone(),
            }
            .fill_owned()
        }

        pub(crate) fn fill_owned(self) -> Result<FsInfo, FsError> {
            let disk = MemDisk::from_vec(self.d, 512);
            let part = Region::whole(&disk);
            let mut info = FsInfo::raw(FsKind::Xfs);
            fill(&part, &mut info).map(|()| info)
        }
    }

    fn used_blocks(info: &FsInfo) -> Vec<(u64, u64)> {
        let bs = BS as u64;
        info.used
            .as_ref()
            .unwrap()
            .runs()
            .iter()
            .map(|&(s, l)| (s / bs, l / bs))
            .collect()
    }

    fn expect_corrupt(r: Result<FsInfo, FsError>, needle: &str) {
        match r {
            Err(FsError::Corrupt { detail, .. }) => {
                assert!(detail.contains(needle), "{detail:?} lacks {needle:?}")
            }
            other => panic!("expected Corrupt({needle}), got {other:?}"),
        }
    }

    fn expect_refused(r: Result<FsInfo, FsError>, needle: &str) {
        match r {
            Err(FsError::Refused { detail, .. }) => {
                assert!(detail.contains(needle), "{detail:?} lacks {needle:?}")
            }
            other => panic!("expected Refused({needle}), got {other:?}"),
        }
    }

    const EXPECTED: [(u64, u64); 7] = [
        (0, 5),   // AG 0 headers, bnobt root; 5-6 on the free list
        (7, 3),   // 7..10
        (15, 35), // 15..50 (includes the log at 40..48)
        (64, 10), // AG 1: 0..10
        (76, 8),  // 12..20
        (87, 7),  // 23..30
        (98, 22), // 34..56
    ];

    #[test]
    fn synthetic_v5_and_v4_maps_are_exact() {
        for v5 in [true, false] {
            let s = Synth::new(v5);
            let info = s.fill().unwrap();
            assert_eq!(used_blocks(&info), EXPECTED, "v5={v5}");
            assert_eq!(info.block_size, 4096);
            assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        }
    }

    #[test]
    fn bad_magic_in_btree_block() {
        let mut s = Synth::new(true);
        s.d[Synth::blk(1, 3)] = b'X';
        s.refresh();
        expect_corrupt(s.fill(), "magic");
    }

    #[test]
    fn level_too_deep_or_wrong() {
        let mut s = Synth::new(true);
        p32(&mut s.d, AGB * BS + SECT + 0x1C, 10);
        s.refresh();
        expect_corrupt(s.fill(), "height 10");
        let mut s = Synth::new(true);
        p32(&mut s.d, AGB * BS + SECT + 0x1C, 3);
        s.refresh();
        expect_corrupt(s.fill(), "expected 2");
        let mut s = Synth::new(false);
        p16(&mut s.d, Synth::blk(1, 4) + 4, 1);
        expect_corrupt(s.fill(), "at level 1, expected 0");
    }

    #[test]
    fn pointer_outside_the_ag() {
        for bad in [56u32, 64, 0, u32::MAX] {
            let mut s = Synth::new(true);
            let o = Synth::blk(1, 2) + 56 + ((BS - 56) / 12) * 8 + 4;
            p32(&mut s.d, o, bad);
            s.refresh();
            expect_corrupt(s.fill(), "outside the AG");
        }
    }

    #[test]
    fn cycle_is_detected() {
        // The node points to itself.
        let mut s = Synth::new(false);
        let o = Synth::blk(1, 2) + 16 + ((BS - 16) / 12) * 8 + 4;
        p32(&mut s.d, o, 2);
        expect_corrupt(s.fill(), "twice");
        // Both pointers to the same leaf.
        let mut s = Synth::new(false);
        p32(&mut s.d, o, 3);
        expect_corrupt(s.fill(), "twice");
    }

    #[test]
    fn records_checked() {
        // Overlapping / out-of-order records.
        let mut s = Synth::new(true);
        p32(&mut s.d, Synth::blk(1, 4) + 56, 5);
        s.refresh();
        expect_corrupt(s.fill(), "out of order");
        // Past the AG's end.
        let mut s = Synth::new(true);
        p32(&mut s.d, Synth::blk(1, 4) + 56 + 12, 40);
        s.refresh();
        expect_corrupt(s.fill(), "past the AG");
        // Too many records for the block.
        let mut s = Synth::new(true);
        p16(&mut s.d, Synth::blk(0, 4) + 6, 1000);
        s.refresh();
        expect_corrupt(s.fill(), "room for");
    }

    #[test]
    fn free_count_cross_check() {
        let mut s = Synth::new(true);
        p32(&mut s.d, SECT + 0x34, 20);
        s.refresh();
        expect_corrupt(s.fill(), "AGF counts 20");
    }

    #[test]
    fn checksums_checked() {
        for (off, what) in [
            (0x10, "superblock"),
            (SECT + 0x38, "AGF"),
            (3 * SECT + 40, "AGFL"),
            (Synth::blk(0, 4) + 100, "free-space tree block 4"),
        ] {
            let mut s = Synth::new(true);
            s.d[off] ^= 1;
            let r = s.fill();
            match r {
                Err(FsError::Corrupt { detail, .. }) => {
                    assert!(
                        detail.contains(what) && detail.contains("checksum"),
                        "{detail}"
                    )
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn inconsistent_free_list_is_kept_as_used() {
        let mut s = Synth::new(true);
        p32(&mut s.d, SECT + 0x30, 3);
        s.refresh();
        let info = s.fill().unwrap();
        assert_eq!(info.warnings.len(), 1);
        assert_eq!(used_blocks(&info)[0], (0, 10));
    }

    #[test]
    fn refusals() {
        let mut s = Synth::new(true);
        p64(&mut s.d, 0x30, 0);
        s.refresh();
        expect_refused(s.fill(), "external log");
        let mut s = Synth::new(true);
        p64(&mut s.d, 0x10, 8);
        s.refresh();
        expect_refused(s.fill(), "realtime");
        let mut s = Synth::new(true);
        s.d[0x7E] = 1;
        s.refresh();
        expect_refused(s.fill(), "mkfs never finished");
        let mut s = Synth::new(true);
        p32(&mut s.d, 0xD8, INCOMPAT_NEEDSREPAIR);
        s.refresh();
        expect_refused(s.fill(), "needing repair");
    }

    #[test]
    fn dirty_log_is_refused() {
        let log = LOG_AGBNO * BS;
        // The last record is a transaction, not an unmount record.
        let mut s = Synth::new(true);
        s.d[log + 512 + 9] = 0x01;
        expect_refused(s.fill(), "not unmounted cleanly");
        // A second record after the unmount record.
        let mut s = Synth::new(true);
        s.d.copy_within(log..log + 1024, log + 1024);
        p64(&mut s.d, log + 1024 + 16, (1 << 32) | 2);
        s.d[log + 1024 + 512 + 9] = 0x02;
        expect_refused(s.fill(), "not unmounted cleanly");
        // Cycle numbers that fit no head: unverifiable, refused.
        let mut s = Synth::new(true);
        p32(&mut s.d, log + 10 * 512, 7);
        expect_refused(s.fill(), "cannot tell whether the log is clean");
        // A log wrapped exactly at its end, last record an unmount record: clean.
        let mut s = Synth::new(true);
        let n = LOG_BLOCKS * BS / 512;
        s.d.copy_within(log..log + 1024, log + (n - 2) * 512);
        for bb in 0..n - 2 {
            p32(&mut s.d, log + bb * 512, 1);
        }
        p64(
            &mut s.d,
            log + (n - 2) * 512 + 16,
            (1 << 32) | (n as u64 - 2),
        );
        s.fill().unwrap();
        // A zeroed log is clean.
        let mut s = Synth::new(true);
        s.d[log..log + LOG_BLOCKS * BS].fill(0);
        s.fill().unwrap();
    }

    #[test]
    fn superblock_geometry_checked() {
        for (off, val, needle) in [
            (0x04usize, 1000u32, "block size"),
            (0x54, 8, "AG size"),
            (0x58, 0, "AG count"),
            (0x58, 1, "do not fit"),
            (0x58, 5, "do not fit"),
        ] {
            let mut s = Synth::new(false);
            p32(&mut s.d, off, val);
            expect_corrupt(s.fill(), needle);
        }
        let mut s = Synth::new(false);
        s.d[0x7C] = 7;
        expect_corrupt(s.fill(), "agblklog");
        let mut s = Synth::new(false);
        p64(&mut s.d, 0x08, 1 << 40);
        expect_corrupt(s.fill(), "do not fit");
        // Larger than the partition.
        let s = Synth::new(false);
        let disk = MemDisk::from_vec(s.d[..100 * BS].to_vec(), 512);
        let mut info = FsInfo::raw(FsKind::Xfs);
        expect_corrupt(
            fill(&Region::whole(&disk), &mut info).map(|()| info),
            "larger than",
        );
    }

    /// Tiny xorshift: deterministic pseudo-random corruption.
    pub(crate) struct Rng(pub(crate) u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn every_single_byte_corruption_is_handled() {
        // v4 has no checksums, so corruptions reach every check. Headers of both AGs, the
        // btree blocks' used parts and the log's first blocks.
        let mut offsets: Vec<usize> = Vec::new();
        for ag in 0..2 {
            let b = Synth::blk(ag, 0);
            offsets.extend(b..b + 0x100);
            offsets.extend(b + SECT..b + SECT + 0xE0);
            offsets.extend(b + 3 * SECT..b + 3 * SECT + 0x40);
        }
        for (ag, b) in BTREE_BLOCKS {
            offsets.extend(Synth::blk(ag, b)..Synth::blk(ag, b) + 48);
        }
        let o = Synth::blk(1, 2) + 16 + ((BS - 16) / 12) * 8;
        offsets.extend(o..o + 8);
        offsets.extend(LOG_AGBNO * BS..LOG_AGBNO * BS + 1024);
        for (v5, x) in [(false, 0xFFu8), (true, 0x01)] {
            let base = Synth::new(v5);
            for &off in &offsets {
                let mut s = Synth {
                    v5,
                    d: base.d.clone(),
                };
                s.d[off] ^= x;
                s.refresh();
                let _ = s.fill_owned();
            }
        }
        let base = Synth::new(false);
        // Random multi-byte damage.
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..1500 {
            let mut s = Synth {
                v5: false,
                d: base.d.clone(),
            };
            for _ in 0..(1 + rng.next() % 4) {
                let off = offsets[(rng.next() % offsets.len() as u64) as usize];
                s.d[off] = rng.next() as u8;
            }
            let _ = s.fill_owned();
        }
    }

    /// A real filesystem made by mkfs.xfs (a missing mkfs.xfs fails the test in `have`).
    fn real_image(dir: &Path, name: &str, opts: &[&str]) -> Option<std::path::PathBuf> {
        have("mkfs.xfs");
        let path = dir.join(name);
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(300 << 20).unwrap();
        let st = Command::new("mkfs.xfs")
            .args(["-q", "-f"])
            .args(opts)
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success());
        Some(path)
    }

    #[test]
    fn real_images_map_and_survive_corruption() {
        let dir = tempfile::tempdir().unwrap();
        for (name, opts, v5) in [
            ("v5.xfs", &["-m", "crc=1"][..], true),
            ("v4.xfs", &["-m", "crc=0"][..], false),
        ] {
            let Some(path) = real_image(dir.path(), name, opts) else {
                return;
            };
            let disk = FileDisk::open(&path).unwrap();
            let mut info = FsInfo::raw(FsKind::Xfs);
            fill(&Region::whole(&disk), &mut info).unwrap();
            let used = info.used.clone().unwrap();
            assert!(
                used.total() > 0 && used.total() < 100 << 20,
                "{}",
                used.total()
            );
            // Corrupt each byte of AG 0's headers and its bnobt root (checksums recomputed
            // on v5 so the corruption reaches the parser), and the log's first record.
            let sb = parse_super(&Region::whole(&disk)).unwrap();
            let agf = disk_read(&disk, sb.sect, sb.sect);
            let root = u64::from(be32(&agf, 0x10).unwrap());
            let bs = sb.block;
            let mut targets: Vec<(u64, u64, Option<usize>, usize)> = vec![
                (0, sb.sect, v5.then_some(0xE0), 0xE0),
                (sb.sect, sb.sect, v5.then_some(0xD8), 0xE0),
                (3 * sb.sect, sb.sect, v5.then_some(32), 64),
                (root * bs, bs, v5.then_some(52), 80),
            ];
            let log_off = {
                let agno = sb.logstart >> sb.agblklog;
                let agbno = sb.logstart & ((1 << sb.agblklog) - 1);
                sb.byte_of(agno, agbno)
            };
            targets.push((log_off, 1024, None, 48));
            targets.push((log_off + 512, 512, None, 12));
            let mut runs = 0;
            for (off, len, crc, span) in targets {
                let orig = disk_read(&disk, off, len);
                for i in 0..span {
                    let mut b = orig.clone();
                    b[i] ^= 0x5A;
                    if let Some(c) = crc {
                        if i < c || i >= c + 4 {
                            set_crc(&mut b, c);
                        }
                    }
                    let ov = Overlay {
                        base: &disk,
                        patches: vec![(off, b)],
                    };
                    let mut info = FsInfo::raw(FsKind::Xfs);
                    if fill(&Region::whole(&ov), &mut info).is_ok() {
                        // Whatever was accepted still maps inside the filesystem.
                        assert!(info.used.unwrap().end() <= 300 << 20);
                    }
                    runs += 1;
                }
            }
            assert!(runs > 500);
        }
    }

    fn disk_read(d: &dyn BlockDev, off: u64, len: u64) -> Vec<u8> {
        let mut b = vec![0u8; len as usize];
        d.read_exact_at(&mut b, off).unwrap();
        b
    }
}
