//! Fitting a partition layout onto a target of another size (`--fit`): which partition grows or
//! shrinks, where the partitions after it go, and how large the target must be. Pure
//! arithmetic on byte offsets; nothing here reads or writes a disk.
//!
//! The rule (DESIGN §4): partitions before the resized one stay where they are; the resized
//! one starts where it did and ends where the space allows; the partitions after it keep their
//! sizes and the gaps between them and move as one block, by a whole number of MiB, so that the
//! last one ends at the end of the usable space (the GPT's last usable LBA, the end of an MBR
//! disk). The last partition absorbs the remainder below 1 MiB, so its start stays aligned.

use crate::disk::table::TableKind;
use crate::engine::save::human_bytes;
use crate::fs::FsKind;

/// Moves are whole MiB: a partition aligned to 1 MiB on the source stays aligned.
pub const ALIGN: u64 = 1 << 20;

/// Largest sector number an MBR entry can hold (32-bit LBA and length).
const MBR_MAX_SECTORS: u64 = u32::MAX as u64;

/// How to fit the layout onto a target of another size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Every partition where it was.
    None,
    /// Resize the main data partition.
    Auto,
    /// Resize partition N.
    Part(u32),
}

/// One partition of the source layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrcPart {
    /// Partition number.
    pub number: u32,
    /// First byte on the source.
    pub start: u64,
    /// Length on the source.
    pub size: u64,
    /// What it holds.
    pub fs: FsKind,
    /// Smallest size its filesystem can be shrunk to, when it can be.
    pub min_size: Option<u64>,
    /// A logical partition inside the MBR's extended partition.
    pub logical: bool,
}

impl SrcPart {
    fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// The source disk as far as fitting is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrcLayout {
    /// Its table.
    pub table: TableKind,
    /// Logical sector size.
    pub sector_size: u64,
    /// Size of the source disk.
    pub disk_size: u64,
    /// Partitions, any order.
    pub parts: Vec<SrcPart>,
    /// MBR extended container (start, size).
    pub extended: Option<(u64, u64)>,
    /// Bytes of one GPT partition array (0 without GPT).
    pub gpt_array_bytes: u64,
    /// End of the boot area (everything before the first partition).
    pub boot_area_end: u64,
}

impl SrcLayout {
    /// Bytes the backup GPT (array + header) takes at the end of the disk.
    fn tail_bytes(&self) -> u64 {
        if self.table == TableKind::Gpt {
            (self.gpt_array_bytes.div_ceil(self.sector_size) + 1) * self.sector_size
        } else {
            0
        }
    }

    /// One past the last byte a partition may use on a disk of `len` bytes.
    fn usable_end(&self, len: u64) -> u64 {
        let ss = self.sector_size;
        let whole = len / ss * ss;
        match self.table {
            TableKind::Gpt => whole.saturating_sub(self.tail_bytes()),
            TableKind::Mbr => whole.min(MBR_MAX_SECTORS * ss),
            TableKind::None => len,
        }
    }

    /// The smallest disk holding every partition where it is.
    pub fn required_unchanged(&self) -> u64 {
        let end = self
            .parts
            .iter()
            .map(SrcPart::end)
            .chain(self.extended.map(|(s, l)| s + l))
            .chain([self.boot_area_end])
            .max()
            .unwrap_or(0);
        match self.table {
            TableKind::None => self.disk_size,
            TableKind::Gpt => end.div_ceil(self.sector_size) * self.sector_size + self.tail_bytes(),
            TableKind::Mbr => end,
        }
    }
}

/// Where one partition goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Partition number.
    pub number: u32,
    /// Start on the source.
    pub src_start: u64,
    /// Size on the source.
    pub src_size: u64,
    /// Start on the target.
    pub start: u64,
    /// Size on the target.
    pub size: u64,
    /// What it holds.
    pub fs: FsKind,
    /// Logical (MBR).
    pub logical: bool,
}

impl Placed {
    /// One past its last byte on the target.
    pub fn end(&self) -> u64 {
        self.start + self.size
    }

    /// Starts somewhere else than on the source.
    pub fn moved(&self) -> bool {
        self.start != self.src_start
    }

    /// Has another size than on the source.
    pub fn resized(&self) -> bool {
        self.size != self.src_size
    }
}

/// What happens to the resized partition's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing to resize.
    None,
    /// Grown in place on the target.
    Grow,
    /// Shrunk before it is written.
    Shrink,
}

/// A fitted layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Every partition, in the source's order.
    pub parts: Vec<Placed>,
    /// The MBR extended container on the target.
    pub extended: Option<(u64, u64)>,
    /// The partition whose filesystem is resized, and how.
    pub resized: Option<(u32, Change)>,
    /// Size of the target.
    pub target_len: u64,
    /// The smallest target this fit could use.
    pub required: u64,
    /// Nothing moves and nothing changes size.
    pub identity: bool,
    /// Things the user should know about the plan.
    pub notes: Vec<String>,
}

impl Layout {
    /// A partition by number.
    pub fn part(&self, number: u32) -> Option<&Placed> {
        self.parts.iter().find(|p| p.number == number)
    }
}

/// Why a layout does not fit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The target is too small.
    #[error("the target is too small: {have} bytes ({}), {what} needs at least {need} bytes ({}){hint}", human_bytes(*have), human_bytes(*need))]
    TooSmall {
        /// Bytes needed.
        need: u64,
        /// Bytes the target has.
        have: u64,
        /// What needs them.
        what: String,
        /// A hint for the user (starts with a newline when present).
        hint: String,
    },
    /// `--fit auto` found nothing to resize.
    #[error("--fit auto: no NTFS, ext2/3/4, XFS or btrfs partition to resize; use --fit none or --fit N")]
    NothingToResize,
    /// `--fit N` names a partition the source does not have.
    #[error("--fit {0}: the source has no partition {0}")]
    NoSuchPartition(u32),
    /// The partition's filesystem cannot be resized (as asked).
    #[error("partition {number} holds {fs}, which {why}")]
    CannotResize {
        /// Partition.
        number: u32,
        /// Its filesystem.
        fs: FsKind,
        /// What cannot be done.
        why: String,
    },
}

/// Filesystems ferroclone can grow with the real tools.
pub fn can_grow(fs: FsKind) -> bool {
    matches!(
        fs,
        FsKind::Ntfs | FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 | FsKind::Xfs | FsKind::Btrfs
    )
}

/// Filesystems ferroclone can shrink (XFS cannot shrink at all).
pub fn can_shrink(fs: FsKind) -> bool {
    matches!(
        fs,
        FsKind::Ntfs | FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4
    )
}

fn floor_to(v: i128, a: i128) -> i128 {
    v.div_euclid(a) * a
}

fn ceil_to(v: i128, a: i128) -> i128 {
    -floor_to(-v, a)
}

fn to_u64(v: i128) -> u64 {
    u64::try_from(v.max(0)).unwrap_or(u64::MAX)
}

/// Fits `src` onto a target of `target_len` bytes.
pub fn plan(src: &SrcLayout, target_len: u64, fit: Fit) -> Result<Layout, LayoutError> {
    let unchanged = |required: u64| Layout {
        parts: src
            .parts
            .iter()
            .map(|p| Placed {
                number: p.number,
                src_start: p.start,
                src_size: p.size,
                start: p.start,
                size: p.size,
                fs: p.fs,
                logical: p.logical,
            })
            .collect(),
        extended: src.extended,
        resized: None,
        target_len,
        required,
        identity: true,
        notes: Vec::new(),
    };
    let keep = src.required_unchanged();
    let resize = match fit {
        Fit::None => None,
        Fit::Auto => Some(
            src.parts
                .iter()
                .filter(|p| can_grow(p.fs))
                // The largest; the first of equals.
                .max_by(|a, b| a.size.cmp(&b.size).then(b.number.cmp(&a.number)))
                .ok_or(LayoutError::NothingToResize)?,
        ),
        Fit::Part(n) => {
            let p = src
                .parts
                .iter()
                .find(|p| p.number == n)
                .ok_or(LayoutError::NoSuchPartition(n))?;
            if !can_grow(p.fs) {
                return Err(LayoutError::CannotResize {
                    number: n,
                    fs: p.fs,
                    why: "ferroclone cannot resize (NTFS, ext2/3/4, XFS and btrfs can be)".into(),
                });
            }
            Some(p)
        }
    };
    let Some(r) = resize else {
        if target_len < keep {
            return Err(LayoutError::TooSmall {
                need: keep,
                have: target_len,
                what: "the layout".into(),
                hint: if src.table == TableKind::None {
                    String::new()
                } else {
                    "\n  hint: --fit auto resizes the main partition to fit".into()
                },
            });
        }
        return Ok(unchanged(keep));
    };
    if target_len == src.disk_size {
        return Ok(unchanged(keep));
    }

    let ss = i128::from(src.sector_size);
    let align = i128::from(ALIGN.max(src.sector_size));
    let usable = i128::from(src.usable_end(target_len));
    let tail = i128::from(src.tail_bytes());
    let after: Vec<&SrcPart> = src.parts.iter().filter(|p| p.start > r.start).collect();
    let last = after.iter().max_by_key(|p| p.end()).copied();
    let r_size = i128::from(r.size);
    // How far the partitions after `r` move, and `r`'s new size.
    let (delta, new_r_size) = match last {
        Some(l) => {
            let d = floor_to(usable - i128::from(l.end()), align);
            (d, r_size + d)
        }
        None => (0, floor_to(usable - i128::from(r.start), ss)),
    };
    // The smallest size `r` may take, and the target that gives it.
    let shrinkable = can_shrink(r.fs);
    let r_min = match (shrinkable, r.min_size) {
        (true, Some(m)) => ceil_to(i128::from(m.min(r.size)), ss),
        _ => r_size,
    };
    let need = match last {
        Some(l) => {
            let d_min = ceil_to(r_min - r_size, align);
            i128::from(l.end()) + d_min + tail
        }
        None => i128::from(r.start) + r_min + tail,
    };
    let need = to_u64(need.max(i128::from(src.boot_area_end)));
    if new_r_size < r_min || need > target_len {
        let why = if new_r_size < r_size && !shrinkable {
            format!(
                "; {} cannot be shrunk, so the target must be at least as large as the source's layout",
                r.fs
            )
        } else if new_r_size < r_size && r.min_size.is_none() {
            "; its smallest size is not known, so it cannot be shrunk".into()
        } else {
            String::new()
        };
        return Err(LayoutError::TooSmall {
            need,
            have: target_len,
            what: format!(
                "partition {} ({}) at its smallest ({}){why}",
                r.number,
                r.fs,
                human_bytes(to_u64(r_min))
            ),
            hint: String::new(),
        });
    }
    let mut notes = Vec::new();
    if src.table == TableKind::Mbr && target_len / src.sector_size > MBR_MAX_SECTORS {
        notes.push(format!(
            "an MBR partition table addresses only the first {} of a disk: the last {} of the \
             target stay unused (convert the disk to GPT to use them)",
            human_bytes(MBR_MAX_SECTORS * src.sector_size),
            human_bytes(target_len - MBR_MAX_SECTORS * src.sector_size)
        ));
    }
    let parts: Vec<Placed> = src
        .parts
        .iter()
        .map(|p| {
            let (start, size) = if p.number == r.number {
                (i128::from(p.start), new_r_size)
            } else if p.start > r.start {
                let start = i128::from(p.start) + delta;
                let size = if last.is_some_and(|l| l.number == p.number) {
                    usable - start
                } else {
                    i128::from(p.size)
                };
                (start, size)
            } else {
                (i128::from(p.start), i128::from(p.size))
            };
            Placed {
                number: p.number,
                src_start: p.start,
                src_size: p.size,
                start: to_u64(start),
                size: to_u64(size),
                fs: p.fs,
                logical: p.logical,
            }
        })
        .collect();
    let extended = src.extended.map(|(s, l)| {
        let old_end = i128::from(s + l);
        let s = i128::from(s);
        let (ns, ne) = if s > i128::from(r.start) || old_end > i128::from(r.start) {
            // The container holds `r` or lies after it: its end moves with the block.
            let ns = if s > i128::from(r.start) {
                s + delta
            } else {
                s
            };
            let logical_end = parts
                .iter()
                .filter(|p| p.logical)
                .map(|p| i128::from(p.end()))
                .max()
                .unwrap_or(0);
            (ns, (old_end + delta).max(logical_end).min(usable))
        } else {
            (s, old_end)
        };
        (to_u64(ns), to_u64(ne - ns))
    });
    let change = match new_r_size.cmp(&r_size) {
        std::cmp::Ordering::Greater => Change::Grow,
        std::cmp::Ordering::Less => Change::Shrink,
        std::cmp::Ordering::Equal => Change::None,
    };
    let identity = parts.iter().all(|p| !p.moved() && !p.resized()) && extended == src.extended;
    Ok(Layout {
        parts,
        extended,
        resized: Some((r.number, change)),
        target_len,
        required: need,
        identity,
        notes,
    })
}

/// A partition of the target's own table, for partition jobs (`--parts N --into M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetPart {
    /// Its number on the target.
    pub number: u32,
    /// First byte.
    pub start: u64,
    /// Length.
    pub size: u64,
}

/// Places source partitions into existing partitions of the target (`pairs` of source number
/// and target partition), the target's table unchanged. A target partition of another size
/// needs `--fit` (other than `none`) to resize the filesystem; at most one may be resized.
pub fn into(
    src: &SrcLayout,
    pairs: &[(u32, TargetPart)],
    target_len: u64,
    fit: Fit,
) -> Result<Layout, LayoutError> {
    let mut parts = Vec::new();
    let mut resized = None;
    for &(n, t) in pairs {
        let p = src
            .parts
            .iter()
            .find(|p| p.number == n)
            .ok_or(LayoutError::NoSuchPartition(n))?;
        let allowed = match fit {
            Fit::None => false,
            Fit::Auto => true,
            Fit::Part(k) => k == n,
        };
        let change = match t.size.cmp(&p.size) {
            std::cmp::Ordering::Equal => Change::None,
            std::cmp::Ordering::Greater if allowed && can_grow(p.fs) => Change::Grow,
            // The filesystem keeps its size; the partition is just larger.
            std::cmp::Ordering::Greater => Change::None,
            std::cmp::Ordering::Less => {
                let min = p
                    .min_size
                    .filter(|_| allowed && can_shrink(p.fs))
                    .map(|m| m.div_ceil(src.sector_size) * src.sector_size);
                match min {
                    Some(m) if m <= t.size => Change::Shrink,
                    _ => {
                        return Err(LayoutError::TooSmall {
                            need: min.unwrap_or(p.size),
                            have: t.size,
                            what: format!(
                                "partition {n} ({}){}",
                                p.fs,
                                if min.is_some() {
                                    " at its smallest"
                                } else {
                                    ""
                                }
                            ),
                            hint: if allowed || !can_shrink(p.fs) {
                                String::new()
                            } else {
                                "\n  hint: --fit auto shrinks the filesystem when its data fits"
                                    .into()
                            },
                        })
                    }
                }
            }
        };
        if change != Change::None {
            if resized.is_some() {
                return Err(LayoutError::CannotResize {
                    number: n,
                    fs: p.fs,
                    why: "would be the second filesystem resized in one job; resize one at a time"
                        .into(),
                });
            }
            resized = Some((n, change));
        }
        parts.push(Placed {
            number: n,
            src_start: p.start,
            src_size: p.size,
            start: t.start,
            size: t.size,
            fs: p.fs,
            logical: p.logical,
        });
    }
    Ok(Layout {
        parts,
        extended: None,
        resized,
        target_len,
        required: target_len,
        identity: false,
        notes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn p(number: u32, start_mib: u64, size_mib: u64, fs: FsKind) -> SrcPart {
        SrcPart {
            number,
            start: start_mib * MIB,
            size: size_mib * MIB,
            fs,
            min_size: None,
            logical: number > 4,
        }
    }

    /// The 256 MiB Windows fixture: ESP, MSR, C:, Recovery, 1 MiB free, backup GPT.
    fn windows() -> SrcLayout {
        let mut c = p(3, 57, 168, FsKind::Ntfs);
        c.min_size = Some(77_303_808);
        SrcLayout {
            table: TableKind::Gpt,
            sector_size: 512,
            disk_size: 256 * MIB,
            parts: vec![
                p(1, 1, 40, FsKind::Vfat),
                p(2, 41, 16, FsKind::Unknown),
                c,
                p(4, 225, 30, FsKind::Ntfs),
            ],
            extended: None,
            gpt_array_bytes: 16384,
            boot_area_end: MIB,
        }
    }

    #[test]
    fn none_keeps_everything_and_needs_the_layout() {
        let l = plan(&windows(), 512 * MIB, Fit::None).unwrap();
        assert!(l.identity);
        assert_eq!(l.required, 255 * MIB + 33 * 512);
        let e = plan(&windows(), 200 * MIB, Fit::None).unwrap_err();
        assert!(e.to_string().contains("--fit auto"), "{e}");
    }

    #[test]
    fn auto_grows_c_and_moves_recovery_to_the_end() {
        let l = plan(&windows(), 512 * MIB, Fit::Auto).unwrap();
        assert_eq!(l.resized, Some((3, Change::Grow)));
        let usable = 512 * MIB - 33 * 512;
        let rec = l.part(4).unwrap();
        assert_eq!(rec.end(), usable, "Recovery ends at the last usable byte");
        assert_eq!(rec.start % MIB, 0, "and starts aligned");
        assert_eq!(rec.start, 481 * MIB);
        let c = l.part(3).unwrap();
        assert_eq!((c.start, c.end()), (57 * MIB, 481 * MIB));
        assert_eq!(l.part(1).unwrap().start, MIB);
        assert!(!l.part(2).unwrap().moved());
        assert!(!l.identity);
    }

    #[test]
    fn auto_shrinks_c_when_it_fits() {
        let l = plan(&windows(), 192 * MIB, Fit::Auto).unwrap();
        assert_eq!(l.resized, Some((3, Change::Shrink)));
        let c = l.part(3).unwrap();
        assert!(c.size >= 77_303_808);
        assert_eq!(l.part(4).unwrap().end(), 192 * MIB - 33 * 512);
        // The smallest target: C: at its minimum rounded up to whole MiB of movement.
        let need = l.required;
        assert!(plan(&windows(), need, Fit::Auto).is_ok());
        let e = plan(&windows(), need - 512, Fit::Auto).unwrap_err();
        match e {
            LayoutError::TooSmall { need: n, .. } => assert_eq!(n, need),
            e => panic!("{e}"),
        }
        // C: min 73.7 MiB = 168 - 94.3 → moves by -94 MiB; Recovery ends at 161 MiB.
        assert_eq!(need, 161 * MIB + 33 * 512);
    }

    #[test]
    fn shrinking_without_a_known_minimum_is_refused() {
        let mut w = windows();
        w.parts[2].min_size = None;
        let e = plan(&w, 200 * MIB, Fit::Auto).unwrap_err();
        assert!(e.to_string().contains("not known"), "{e}");
        assert!(e.to_string().contains(&format!("{}", 255 * MIB + 33 * 512)));
    }

    #[test]
    fn fit_n_checks_the_partition() {
        assert!(matches!(
            plan(&windows(), 512 * MIB, Fit::Part(9)),
            Err(LayoutError::NoSuchPartition(9))
        ));
        assert!(plan(&windows(), 512 * MIB, Fit::Part(1))
            .unwrap_err()
            .to_string()
            .contains("vfat"));
        let l = plan(&windows(), 512 * MIB, Fit::Part(4)).unwrap();
        assert_eq!(l.part(4).unwrap().end(), 512 * MIB - 33 * 512);
        assert!(l.parts.iter().filter(|p| p.number != 4).all(|p| !p.moved()));
    }

    #[test]
    fn same_size_is_identity() {
        let l = plan(&windows(), 256 * MIB, Fit::Auto).unwrap();
        assert!(l.identity);
    }

    fn legacy() -> SrcLayout {
        SrcLayout {
            table: TableKind::Mbr,
            sector_size: 512,
            disk_size: 512 * MIB,
            parts: vec![
                p(1, 1, 200, FsKind::Ext4),
                p(5, 202, 200, FsKind::Ext4),
                p(6, 403, 64, FsKind::Swap),
            ],
            extended: Some((201 * MIB, 311 * MIB)),
            gpt_array_bytes: 0,
            boot_area_end: MIB,
        }
    }

    #[test]
    fn mbr_grows_the_first_of_equals_and_moves_the_extended_container() {
        let l = plan(&legacy(), 1024 * MIB, Fit::Auto).unwrap();
        assert_eq!(l.resized, Some((1, Change::Grow)));
        let delta = 1024 - 467;
        assert_eq!(l.part(1).unwrap().size, (200 + delta) * MIB);
        assert_eq!(l.part(5).unwrap().start, (202 + delta) * MIB);
        assert_eq!(l.part(6).unwrap().end(), 1024 * MIB);
        assert_eq!(
            l.extended,
            Some(((201 + delta) * MIB, (1024 - 201 - delta) * MIB))
        );
    }

    #[test]
    fn mbr_growing_a_logical_grows_its_container() {
        let l = plan(&legacy(), 1024 * MIB, Fit::Part(5)).unwrap();
        assert_eq!(
            l.part(1).unwrap(),
            &plan(&legacy(), 512 * MIB, Fit::None).unwrap().parts[0]
        );
        assert_eq!(l.part(6).unwrap().end(), 1024 * MIB);
        assert_eq!(l.extended, Some((201 * MIB, 823 * MIB)));
    }

    #[test]
    fn mbr_beyond_2_tib_uses_the_first_2_tib_and_says_so() {
        let t = 3u64 << 40;
        let l = plan(&legacy(), t, Fit::Auto).unwrap();
        assert_eq!(l.part(6).unwrap().end(), u64::from(u32::MAX) * 512);
        assert!(l.notes[0].contains("MBR"), "{:?}", l.notes);
    }

    #[test]
    fn bare_filesystem_grows_to_the_target() {
        let src = SrcLayout {
            table: TableKind::None,
            sector_size: 512,
            disk_size: 128 * MIB,
            parts: vec![p(1, 0, 128, FsKind::Ext4)],
            extended: None,
            gpt_array_bytes: 0,
            boot_area_end: 0,
        };
        let l = plan(&src, 300 * MIB, Fit::Auto).unwrap();
        assert_eq!(l.part(1).unwrap().size, 300 * MIB);
        assert_eq!(l.resized, Some((1, Change::Grow)));
    }

    #[test]
    fn partition_jobs() {
        let t = |number, start_mib, size_mib| TargetPart {
            number,
            start: start_mib * MIB,
            size: size_mib * MIB,
        };
        let w = windows();
        let l = into(&w, &[(3, t(2, 10, 200))], 300 * MIB, Fit::None).unwrap();
        assert_eq!(
            l.resized, None,
            "a larger partition without --fit keeps the fs"
        );
        assert_eq!((l.parts[0].start, l.parts[0].size), (10 * MIB, 200 * MIB));
        let l = into(&w, &[(3, t(2, 10, 200))], 300 * MIB, Fit::Auto).unwrap();
        assert_eq!(l.resized, Some((3, Change::Grow)));
        let l = into(&w, &[(3, t(2, 10, 100))], 300 * MIB, Fit::Auto).unwrap();
        assert_eq!(l.resized, Some((3, Change::Shrink)));
        let e = into(&w, &[(3, t(2, 10, 100))], 300 * MIB, Fit::None).unwrap_err();
        assert!(e.to_string().contains("--fit auto"), "{e}");
        let e = into(&w, &[(3, t(2, 10, 50))], 300 * MIB, Fit::Auto).unwrap_err();
        assert!(e.to_string().contains("77303808"), "{e}");
        let e = into(&w, &[(1, t(1, 1, 20))], 300 * MIB, Fit::Auto).unwrap_err();
        assert!(e.to_string().contains("41943040"), "{e}");
    }

    #[test]
    fn xfs_cannot_shrink() {
        let mut w = windows();
        w.parts[2].fs = FsKind::Xfs;
        w.parts[2].min_size = Some(MIB);
        let e = plan(&w, 200 * MIB, Fit::Auto).unwrap_err();
        assert!(e.to_string().contains("xfs cannot be shrunk"), "{e}");
    }
}
