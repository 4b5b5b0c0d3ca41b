//! NTFS: the used-cluster map from `$Bitmap`, plus the partition tail that holds the backup boot
//! sector (reference: shared/reference/filesystems.md, section 3).
//!
//! Steps: boot sector → MFT record 0 (the `$MFT` runlist) → record 6 (`$Bitmap`, its unnamed
//! `$DATA`) → the bitmap bits below `nr_clusters`, in bytes → the tail
//! `[nr_clusters × cluster_size, end of the backup boot sector)`. Then a self-check (LCN 0 and the
//! runs of `$MFT`, `$MFTMirr`, `$LogFile` and `$Bitmap` must be marked used) and the state checks
//! of section 3.5 (dirty flag, `$LogFile` restart area, Fast Startup, `hiberfil.sys`), which only
//! add warnings: the volume is imaged exactly as it is, and never written.
//!
//! `$ATTRIBUTE_LIST`s (very fragmented `$MFT`, `$Bitmap`, `hiberfil.sys`) are followed: the
//! `$DATA` pieces in extension records are joined in VCN order, and a gap is an error.
//! Not handled: `$BadClus` exclusion (bad clusters are stored like any used cluster).
//!
//! Every input byte is untrusted: no panics, checked arithmetic, every allocation bounded by
//! the record, page or chunk size (themselves bounded) and every loop by a count.

#![warn(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::as_conversions
)]

use crate::bytes::{le16, le32, le64};
use crate::disk::Region;
use crate::fs::{read_at, Extents, FsError, FsInfo, FsKind};

const FS: FsKind = FsKind::Ntfs;

/// Largest cluster Windows creates (Win10 1709+, 0x0D = 0xF4 with 512-byte sectors).
const MAX_CLUSTER: u64 = 2 << 20;
/// Largest MFT record or index block we accept (Windows uses 1 KiB or 4 KiB records).
const MAX_RECORD: u64 = 64 << 10;
/// Fixup stride: always 512 bytes, whatever the sector size.
const STRIDE: usize = 512;
/// Highest VCN + 1 we accept, so `vcn × cluster_size` never overflows.
const MAX_VCN: u64 = u64::MAX / MAX_CLUSTER;
/// The bitmap is read and decoded in chunks of this many bytes.
const CHUNK: usize = 1 << 20;
/// `$Boot` is 8 KiB: its clusters must be marked used.
const BOOT_FILE_BYTES: u64 = 8192;
/// At most this many root-directory index blocks are scanned for `hiberfil.sys`.
const MAX_INDEX_BLOCKS: u64 = 1024;
/// Largest `$ATTRIBUTE_LIST` we read (Windows caps it at 256 KiB).
const MAX_ATTR_LIST: u64 = 256 << 10;

// System files (MFT record numbers).
const REC_MFT: u64 = 0;
const REC_MFTMIRR: u64 = 1;
const REC_LOGFILE: u64 = 2;
const REC_VOLUME: u64 = 3;
const REC_ROOT: u64 = 5;
const REC_BITMAP: u64 = 6;

// Attribute types.
const AT_ATTRIBUTE_LIST: u32 = 0x20;
const AT_VOLUME_NAME: u32 = 0x60;
const AT_VOLUME_INFORMATION: u32 = 0x70;
const AT_DATA: u32 = 0x80;
const AT_INDEX_ROOT: u32 = 0x90;
const AT_INDEX_ALLOCATION: u32 = 0xA0;
const AT_END: u32 = 0xFFFF_FFFF;

/// "$I30", the directory index name, in UTF-16LE.
const I30: &[u8] = b"$\0I\x003\x000\0";
/// Low 48 bits of an MFT reference: the record number.
const REF_MASK: u64 = 0xFFFF_FFFF_FFFF;

/// Fills `info.used` (bytes relative to the partition start), the cluster size, the label, a
/// rough minimum size and the state warnings.
pub fn fill(part: &Region<'_>, info: &mut FsInfo) -> Result<(), FsError> {
    let part_len = part.len();
    if part_len < 512 {
        return Err(corrupt(
            0,
            format!("the partition is only {part_len} bytes, too small for an NTFS boot sector"),
        ));
    }
    let head = read_at(part, FS, 0, 512)?;
    let boot = Boot::parse(&head).map_err(|b| b.at(0, "boot sector"))?;
    let cs = boot.cluster_size;

    // The volume, as the boot sector describes it, must fit in the partition.
    let vol_bytes = boot.nr_clusters.checked_mul(cs);
    let sect_bytes = boot.total_sectors.checked_mul(boot.sector_size);
    match (vol_bytes, sect_bytes) {
        (Some(v), Some(s)) if v <= part_len && s <= part_len => {}
        _ => {
            return Err(corrupt(
                0x28,
                format!(
                    "the boot sector describes {} sectors of {} bytes ({} clusters of {cs}), more than the {part_len}-byte partition holds (truncated partition?)",
                    boot.total_sectors, boot.sector_size, boot.nr_clusters
                ),
            ))
        }
    }

    // MFT record 0: the $MFT runlist. It is read at the boot sector's LCN, before any map exists.
    let rec0_at = boot.mft_lcn.saturating_mul(cs);
    if rec0_at.saturating_add(boot.record_size) > part_len {
        return Err(corrupt(
            0x30,
            format!("MFT record 0 at partition byte {rec0_at:#x} runs past the partition"),
        ));
    }
    let buf = read_at(part, FS, rec0_at, usize_of(boot.record_size))?;
    let rec0 = Record::parse(REC_MFT, rec0_at, buf)?;
    let mft_attr_list = rec0.has(AT_ATTRIBUTE_LIST)?;
    // With an $ATTRIBUTE_LIST, record 0 holds only the first piece of the $MFT runlist, which
    // maps records 0-15 (all we need); later records may be unmapped (read errors say so).
    let mft = rec0.data_stream(&boot, mft_attr_list)?;
    let mft_start = mft.runs.first().and_then(|r| r.lcn);
    if mft_start != Some(boot.mft_lcn) {
        return Err(rec0.bad(
            0,
            format!(
                "$MFT does not start at LCN {}, where the boot sector says it is",
                boot.mft_lcn
            ),
        ));
    }
    let mut vol = Vol { part, boot, mft };
    if mft_attr_list {
        // Now that records 0-15 are reachable, join the other pieces of the $MFT runlist.
        match vol.data_stream(&rec0) {
            Ok(full) => vol.mft = full,
            Err(e) => info.warnings.push(format!(
                "only the first extent of the NTFS $MFT could be mapped ({e}); the used-cluster map is not affected, but hiberfil.sys may go unchecked"
            )),
        }
    }

    // $Bitmap.
    let rec6 = vol.record(REC_BITMAP)?;
    let bitmap = vol.data_stream(&rec6)?;
    let need = vol.boot.nr_clusters.div_ceil(8);
    if bitmap.size < need {
        return Err(rec6.bad(
            0,
            format!(
                "$Bitmap holds {} bytes but {} clusters need {need}",
                bitmap.size, vol.boot.nr_clusters
            ),
        ));
    }
    let mut used = Extents::new();
    let mut chunk = vec![0u8; usize_of(need.min(u64_of(CHUNK)))];
    let mut done = 0u64;
    while done < need {
        let n = (need.saturating_sub(done)).min(u64_of(chunk.len()));
        let buf = chunk.get_mut(..usize_of(n)).unwrap_or_default();
        bitmap.read(&vol, done, buf, "$Bitmap")?;
        let first_bit = done.saturating_mul(8);
        let nbits = n
            .saturating_mul(8)
            .min(vol.boot.nr_clusters.saturating_sub(first_bit));
        // Cannot overflow: first_bit + nbits <= nr_clusters and nr_clusters × cs <= part_len.
        used.add_bitmap(buf, nbits, first_bit.saturating_mul(cs), cs);
        done = done.saturating_add(n);
    }

    // Self-check: the system files must be marked used.
    let rec1 = vol.record(REC_MFTMIRR)?;
    let mirr = vol.data_stream(&rec1)?;
    let rec2 = vol.record(REC_LOGFILE)?;
    let logfile = vol.data_stream(&rec2)?;
    let boot_clusters = BOOT_FILE_BYTES.div_ceil(cs).min(vol.boot.nr_clusters);
    let bit_at = |lcn: u64| bitmap.offset_of(cs, lcn / 8).unwrap_or(rec6.at);
    if !covered(&used, 0, boot_clusters.saturating_mul(cs)) {
        return Err(corrupt(
            bit_at(0),
            "$Bitmap marks the boot sector cluster(s) (LCN 0) free".into(),
        ));
    }
    for (name, s) in [
        ("$MFT", &vol.mft),
        ("$MFTMirr", &mirr),
        ("$LogFile", &logfile),
        ("$Bitmap", &bitmap),
    ] {
        for r in &s.runs {
            let Some(lcn) = r.lcn else { continue };
            // In range: decode_runlist keeps lcn + len <= nr_clusters.
            if !covered(&used, lcn.saturating_mul(cs), r.len.saturating_mul(cs)) {
                return Err(corrupt(
                    bit_at(lcn),
                    format!(
                        "$Bitmap marks clusters of {name} free (LCN {lcn}, {} clusters)",
                        r.len
                    ),
                ));
            }
        }
    }
    if mirr.runs.first().and_then(|r| r.lcn) != Some(vol.boot.mftmirr_lcn) {
        return Err(rec1.bad(
            0,
            format!(
                "$MFTMirr does not start at LCN {}, where the boot sector says it is",
                vol.boot.mftmirr_lcn
            ),
        ));
    }
    let last_used_end = used.end();

    // The tail: the partial cluster after the volume and the backup boot sector, which sits in
    // the sector at total_sectors. A partition much larger than the volume keeps only that much.
    let tail_start = vol.boot.nr_clusters.saturating_mul(cs);
    let backup_end = vol
        .boot
        .total_sectors
        .saturating_add(1)
        .saturating_mul(vol.boot.sector_size);
    if backup_end > part_len {
        info.warnings.push(format!(
            "the NTFS volume fills the whole partition, leaving no room for its backup boot sector (it would be at partition byte {:#x})",
            backup_end.saturating_sub(vol.boot.sector_size)
        ));
    }
    let tail_end = backup_end.min(part_len).max(tail_start);
    used.add(tail_start, tail_end.saturating_sub(tail_start));
    // ntfsresize (and ntfs-3g, which checks the backup there) put the backup boot sector in the
    // partition's last sector when the partition is larger than the volume: keep that sector
    // too when it holds one.
    let last_sector = part_len.saturating_sub(vol.boot.sector_size);
    if last_sector >= tail_end {
        let b = read_at(part, FS, last_sector, 512)?;
        if b.get(3..11) == Some(b"NTFS    ".as_slice()) && le16(&b, 510) == Some(0xAA55) {
            used.add(last_sector, vol.boot.sector_size);
        }
    }

    // $Volume: label and dirty flag.
    let rec3 = vol.record(REC_VOLUME)?;
    let attrs = rec3.attrs()?;
    if let Some(a) = attrs
        .iter()
        .find(|a| a.ty == AT_VOLUME_NAME && !a.non_resident)
    {
        let v = a.value().map_err(|b| rec3.err(b))?;
        info.label = utf16(v);
    }
    if let Some(a) = attrs
        .iter()
        .find(|a| a.ty == AT_VOLUME_INFORMATION && !a.non_resident)
    {
        let v = a.value().map_err(|b| rec3.err(b))?;
        let flags = le16(v, 0x0A)
            .ok_or_else(|| rec3.bad(a.pos, "$VOLUME_INFORMATION is too short".into()))?;
        if flags & 0x0001 != 0 {
            info.warnings.push(
                "the NTFS volume is marked dirty (Windows did not shut down cleanly, or chkdsk is scheduled): it is imaged exactly as it is; run chkdsk in Windows first for a consistent copy".into(),
            );
        }
    }

    // $LogFile restart area (unclean shutdown, Fast Startup).
    match check_logfile(&vol, &logfile) {
        Ok(LogState::Clean) => {}
        Ok(LogState::Unclean) => info.warnings.push(
            "the NTFS journal ($LogFile) has changes that were not written back: Windows did not shut down cleanly, so the image may miss recent changes; boot Windows and shut it down fully first".into(),
        ),
        Ok(LogState::FastStartup) => info.warnings.push(
            "Windows Fast Startup (hybrid shutdown) left this volume's metadata cached in a hibernated session: the image may not match what Windows resumes into; turn Fast Startup off or run 'shutdown /s /t 0' in Windows, then image".into(),
        ),
        Ok(LogState::Unknown(why)) => info.warnings.push(format!(
            "could not tell whether Windows shut down cleanly ($LogFile: {why}); if in doubt, boot Windows and shut it down fully first"
        )),
        Err(e) => info.warnings.push(format!(
            "could not read the NTFS journal to check for a clean shutdown: {e}"
        )),
    }

    // hiberfil.sys in the root directory, with a live hibernation header.
    match find_hibernation(&vol) {
        Ok(false) => {}
        Ok(true) => info.warnings.push(
            "Windows is hibernated on this volume (hiberfil.sys holds a live session): resuming it after a restore can corrupt data; boot Windows and shut it down fully (or turn hibernation off with 'powercfg /h off'), then image".into(),
        ),
        Err(e) => info.warnings.push(format!("could not check for a hibernated Windows: {e}")),
    }

    info.block_size = u32::try_from(cs).unwrap_or(0);
    info.min_size = Some(last_used_end.saturating_add(tail_end.saturating_sub(tail_start)));
    info.used = Some(used);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Errors and small helpers.

fn corrupt(offset: u64, detail: String) -> FsError {
    FsError::Corrupt {
        fs: FS,
        offset,
        detail,
    }
}

/// A parse failure inside a buffer; `pos` is relative to the buffer's first byte.
#[derive(Debug, PartialEq, Eq)]
struct Bad {
    pos: usize,
    detail: String,
}

impl Bad {
    fn new(pos: usize, detail: impl Into<String>) -> Bad {
        Bad {
            pos,
            detail: detail.into(),
        }
    }

    /// The error, placed at partition byte `base + pos`.
    fn at(self, base: u64, what: &str) -> FsError {
        corrupt(
            base.saturating_add(u64_of(self.pos)),
            format!("{what}: {}", self.detail),
        )
    }
}

fn u64_of(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// For sizes already bounded by constants (records, chunks); saturates otherwise.
fn usize_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn utf16(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| {
            u16::from_le_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ])
        })
        .collect();
    String::from_utf16_lossy(&units)
        .trim_end_matches('\0')
        .to_string()
}

/// Is `[start, start + len)` entirely inside one range of `e`?
fn covered(e: &Extents, start: u64, len: u64) -> bool {
    if len == 0 {
        return true;
    }
    let runs = e.runs();
    let i = runs.partition_point(|r| r.0 <= start);
    let Some(i) = i.checked_sub(1) else {
        return false;
    };
    runs.get(i).is_some_and(|&(s, l)| {
        let end = s.saturating_add(l);
        start.checked_add(len).is_some_and(|e| e <= end)
    })
}

// ---------------------------------------------------------------------------------------------
// Boot sector.

/// The decoded boot sector fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Boot {
    sector_size: u64,
    sectors_per_cluster: u64,
    cluster_size: u64,
    total_sectors: u64,
    nr_clusters: u64,
    mft_lcn: u64,
    mftmirr_lcn: u64,
    record_size: u64,
    index_size: u64,
}

/// 0x0D: 1-128 as is; above 0x80 a negative exponent, 2^(256 − v) sectors (large clusters).
fn decode_sectors_per_cluster(v: u8) -> Option<u64> {
    match v {
        0 => None,
        1..=0x80 => v.is_power_of_two().then_some(u64::from(v)),
        _ => {
            let exp = 256u32.checked_sub(u32::from(v))?;
            (exp <= 16).then(|| 1u64 << exp)
        }
    }
}

/// 0x40 / 0x44 (signed): v > 0 is v clusters; v < 0 is 2^(−v) bytes.
fn decode_clusters_per(v: u8, cluster_size: u64) -> Option<u64> {
    let s = i8::from_le_bytes([v]);
    if s > 0 {
        u64::from(s.unsigned_abs()).checked_mul(cluster_size)
    } else if s < 0 {
        let exp = u32::from(s.unsigned_abs());
        (exp < 32).then(|| 1u64 << exp)
    } else {
        None
    }
}

impl Boot {
    fn parse(b: &[u8]) -> Result<Boot, Bad> {
        if b.get(3..11) != Some(b"NTFS    ") {
            return Err(Bad::new(3, "no \"NTFS    \" signature"));
        }
        let bps = le16(b, 0x0B).ok_or_else(|| Bad::new(0x0B, "truncated"))?;
        if !(256..=4096).contains(&bps) || !bps.is_power_of_two() {
            return Err(Bad::new(
                0x0B,
                format!("bytes per sector {bps} is not a power of two in 256..=4096"),
            ));
        }
        let spc_raw = b.get(0x0D).copied().unwrap_or(0);
        let spc = decode_sectors_per_cluster(spc_raw).ok_or_else(|| {
            Bad::new(
                0x0D,
                format!("invalid sectors-per-cluster byte {spc_raw:#04x}"),
            )
        })?;
        let sector_size = u64::from(bps);
        let cluster_size = sector_size.saturating_mul(spc);
        if cluster_size > MAX_CLUSTER {
            return Err(Bad::new(
                0x0D,
                format!("cluster size {cluster_size} is larger than 2 MiB"),
            ));
        }
        // Fields that only FAT uses must be zero on NTFS.
        let fat_fields: [(usize, usize); 6] = [
            (0x0E, 2),
            (0x10, 1),
            (0x11, 2),
            (0x13, 2),
            (0x16, 2),
            (0x20, 4),
        ];
        for (off, len) in fat_fields {
            let f = b
                .get(off..off.saturating_add(len))
                .ok_or_else(|| Bad::new(off, "truncated"))?;
            if f.iter().any(|&x| x != 0) {
                return Err(Bad::new(off, "a FAT-only BPB field is not zero"));
            }
        }
        let total_sectors = le64(b, 0x28).ok_or_else(|| Bad::new(0x28, "truncated"))?;
        let nr_clusters = total_sectors.checked_div(spc).unwrap_or(0);
        if nr_clusters == 0 {
            return Err(Bad::new(
                0x28,
                format!("{total_sectors} sectors make no whole cluster"),
            ));
        }
        let mft_lcn = le64(b, 0x30).ok_or_else(|| Bad::new(0x30, "truncated"))?;
        if mft_lcn == 0 || mft_lcn >= nr_clusters {
            return Err(Bad::new(
                0x30,
                format!("$MFT LCN {mft_lcn} is outside the volume (1..{nr_clusters})"),
            ));
        }
        let mftmirr_lcn = le64(b, 0x38).ok_or_else(|| Bad::new(0x38, "truncated"))?;
        if mftmirr_lcn == 0 || mftmirr_lcn >= nr_clusters {
            return Err(Bad::new(
                0x38,
                format!("$MFTMirr LCN {mftmirr_lcn} is outside the volume (1..{nr_clusters})"),
            ));
        }
        let size_field = |off: usize, what: &str| -> Result<u64, Bad> {
            let v = b.get(off).copied().unwrap_or(0);
            match decode_clusters_per(v, cluster_size) {
                Some(n) if n.is_power_of_two() && (512..=MAX_RECORD).contains(&n) => Ok(n),
                _ => Err(Bad::new(off, format!("invalid {what} size byte {v:#04x}"))),
            }
        };
        let record_size = size_field(0x40, "MFT record")?;
        let index_size = size_field(0x44, "index record")?;
        Ok(Boot {
            sector_size,
            sectors_per_cluster: spc,
            cluster_size,
            total_sectors,
            nr_clusters,
            mft_lcn,
            mftmirr_lcn,
            record_size,
            index_size,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Fixups, records, attributes.

/// Checks and removes the update-sequence fixups of a multi-sector record in place: the last two
/// bytes of every 512-byte stride must equal the update sequence number (else the write was torn)
/// and get back their saved value.
fn apply_fixups(rec: &mut [u8]) -> Result<(), Bad> {
    let usa_off = usize::from(le16(rec, 4).ok_or_else(|| Bad::new(4, "truncated header"))?);
    let usa_count = usize::from(le16(rec, 6).ok_or_else(|| Bad::new(6, "truncated header"))?);
    let strides = rec.len() / STRIDE;
    if rec.len() % STRIDE != 0 || strides == 0 || usa_count != strides.saturating_add(1) {
        return Err(Bad::new(
            6,
            format!(
                "update sequence count {usa_count} does not fit a {}-byte record",
                rec.len()
            ),
        ));
    }
    let usa_end = usa_count
        .checked_mul(2)
        .and_then(|n| n.checked_add(usa_off));
    if usa_off % 2 != 0 || usa_off < 8 || usa_end.is_none_or(|e| e > STRIDE.saturating_sub(2)) {
        return Err(Bad::new(
            4,
            format!("update sequence array offset {usa_off:#x} is invalid"),
        ));
    }
    let usn = le16(rec, usa_off).ok_or_else(|| Bad::new(usa_off, "truncated"))?;
    for k in 1..usa_count {
        let end = k.saturating_mul(STRIDE);
        let pos = end.saturating_sub(2);
        let saved_at = usa_off.saturating_add(k.saturating_mul(2));
        let saved: [u8; 2] =
            crate::bytes::arr(rec, saved_at).ok_or_else(|| Bad::new(saved_at, "truncated"))?;
        if le16(rec, pos) != Some(usn) {
            return Err(Bad::new(pos, format!("torn write: sector {k} does not end with the update sequence number {usn:#06x}")));
        }
        let slot = rec
            .get_mut(pos..end)
            .ok_or_else(|| Bad::new(pos, "truncated"))?;
        slot.copy_from_slice(&saved);
    }
    Ok(())
}

/// One attribute of a record.
#[derive(Debug)]
struct Attr<'a> {
    ty: u32,
    /// Offset of the attribute in its record.
    pos: usize,
    /// The whole attribute.
    raw: &'a [u8],
    non_resident: bool,
    /// The name, UTF-16LE bytes.
    name: &'a [u8],
}

/// The non-resident part of an attribute header.
#[derive(Debug)]
struct NonResident<'a> {
    lowest_vcn: u64,
    highest_vcn: u64,
    /// The mapping pairs, up to the end of the attribute, and their offset in the attribute.
    pairs: &'a [u8],
    pairs_off: usize,
    allocated: u64,
    size: u64,
    initialized: u64,
}

impl<'a> Attr<'a> {
    fn value(&self) -> Result<&'a [u8], Bad> {
        let len = usize_of(u64::from(le32(self.raw, 0x10).unwrap_or(u32::MAX)));
        let off = usize::from(le16(self.raw, 0x14).unwrap_or(u16::MAX));
        off.checked_add(len)
            .and_then(|end| self.raw.get(off..end))
            .ok_or_else(|| {
                Bad::new(
                    self.pos,
                    format!("resident value ({len} bytes at +{off:#x}) runs past the attribute"),
                )
            })
    }

    fn non_resident(&self) -> Result<NonResident<'a>, Bad> {
        let f = |off: usize| {
            le64(self.raw, off)
                .ok_or_else(|| Bad::new(self.pos, "non-resident header is truncated"))
        };
        let pairs_off = usize::from(le16(self.raw, 0x20).unwrap_or(u16::MAX));
        let pairs = self
            .raw
            .get(pairs_off..)
            .filter(|_| pairs_off >= 0x40)
            .ok_or_else(|| {
                Bad::new(
                    self.pos,
                    format!("mapping pairs offset {pairs_off:#x} is outside the attribute"),
                )
            })?;
        Ok(NonResident {
            lowest_vcn: f(0x10)?,
            highest_vcn: f(0x18)?,
            pairs,
            pairs_off,
            allocated: f(0x28)?,
            size: f(0x30)?,
            initialized: f(0x38)?,
        })
    }
}

/// The attributes of a record (fixups already applied), up to the end marker.
fn parse_attrs(rec: &[u8]) -> Result<Vec<Attr<'_>>, Bad> {
    let first = usize::from(le16(rec, 0x14).ok_or_else(|| Bad::new(0x14, "truncated header"))?);
    let in_use = usize_of(u64::from(
        le32(rec, 0x18).ok_or_else(|| Bad::new(0x18, "truncated header"))?,
    ));
    let rec = rec.get(..in_use).ok_or_else(|| {
        Bad::new(
            0x18,
            format!("bytes in use {in_use} exceed the record size {}", rec.len()),
        )
    })?;
    let mut out = Vec::new();
    let mut pos = first;
    // Every attribute is at least 0x18 bytes, so this ends within in_use / 0x18 steps.
    loop {
        let ty =
            le32(rec, pos).ok_or_else(|| Bad::new(pos, "the attribute list has no end marker"))?;
        if ty == AT_END {
            return Ok(out);
        }
        let len = usize_of(u64::from(le32(rec, pos.saturating_add(4)).unwrap_or(0)));
        let raw = pos
            .checked_add(len)
            .and_then(|end| rec.get(pos..end))
            .filter(|_| len >= 0x18)
            .ok_or_else(|| {
                Bad::new(
                    pos,
                    format!("attribute {ty:#x} has an invalid length {len}"),
                )
            })?;
        let non_resident = raw.get(8).copied().unwrap_or(0) != 0;
        if non_resident && len < 0x40 {
            return Err(Bad::new(
                pos,
                format!("non-resident attribute {ty:#x} is only {len} bytes"),
            ));
        }
        let name_len = usize::from(raw.get(9).copied().unwrap_or(0)).saturating_mul(2);
        let name_off = usize::from(le16(raw, 0x0A).unwrap_or(0));
        let name = name_off
            .checked_add(name_len)
            .and_then(|end| raw.get(name_off..end))
            .ok_or_else(|| {
                Bad::new(
                    pos,
                    format!("attribute {ty:#x} has its name outside the attribute"),
                )
            })?;
        out.push(Attr {
            ty,
            pos,
            raw,
            non_resident,
            name,
        });
        pos = pos.saturating_add(len);
    }
}

/// An MFT record, fixups applied.
struct Record {
    nr: u64,
    /// Partition byte offset of its first byte.
    at: u64,
    buf: Vec<u8>,
}

impl Record {
    /// Checks the `FILE` magic, applies the fixups and checks the in-use flag.
    fn parse(nr: u64, at: u64, buf: Vec<u8>) -> Result<Record, FsError> {
        let rec = Record::parse_any(nr, at, buf)?;
        if !rec.in_use() {
            return Err(rec.bad(0x16, "not in use".into()));
        }
        Ok(rec)
    }

    /// Checks the `FILE` magic and applies the fixups.
    fn parse_any(nr: u64, at: u64, mut buf: Vec<u8>) -> Result<Record, FsError> {
        let what = format!("MFT record {nr}");
        match buf.get(0..4) {
            Some(b"FILE") => {}
            Some(b"BAAD") => {
                return Err(Bad::new(0, "marked BAAD (a torn write found by chkdsk)").at(at, &what))
            }
            _ => return Err(Bad::new(0, "no FILE signature").at(at, &what)),
        }
        apply_fixups(&mut buf).map_err(|b| b.at(at, &what))?;
        Ok(Record { nr, at, buf })
    }

    fn in_use(&self) -> bool {
        le16(&self.buf, 0x16).unwrap_or(0) & 1 != 0
    }

    fn bad(&self, pos: usize, detail: String) -> FsError {
        self.err(Bad::new(pos, detail))
    }

    fn err(&self, b: Bad) -> FsError {
        b.at(self.at, &format!("MFT record {}", self.nr))
    }

    fn attrs(&self) -> Result<Vec<Attr<'_>>, FsError> {
        parse_attrs(&self.buf).map_err(|b| self.err(b))
    }

    fn has(&self, ty: u32) -> Result<bool, FsError> {
        Ok(self.attrs()?.iter().any(|a| a.ty == ty))
    }

    /// The unnamed non-resident `$DATA` stream, starting at VCN 0. `partial` accepts a runlist
    /// that covers only part of the stream (the rest lives in extension records).
    fn data_stream(&self, boot: &Boot, partial: bool) -> Result<Stream, FsError> {
        let attrs = self.attrs()?;
        let a = attrs
            .iter()
            .find(|a| a.ty == AT_DATA && a.name.is_empty())
            .ok_or_else(|| self.bad(0, "has no unnamed $DATA attribute".into()))?;
        if !a.non_resident {
            return Err(self.bad(
                a.pos,
                "its $DATA is resident, expected a non-resident stream".into(),
            ));
        }
        stream_of(a, boot, partial).map_err(|b| self.err(b))
    }
}

/// A non-resident stream: its runs (from VCN 0) and sizes.
#[derive(Debug)]
struct Stream {
    runs: Vec<Run>,
    size: u64,
    initialized: u64,
}

fn stream_of(a: &Attr<'_>, boot: &Boot, partial: bool) -> Result<Stream, Bad> {
    let nr = a.non_resident()?;
    if nr.lowest_vcn != 0 {
        return Err(Bad::new(
            a.pos,
            format!("first piece starts at VCN {}, not 0", nr.lowest_vcn),
        ));
    }
    check_sizes(a, &nr)?;
    let runs = piece_runs(a, &nr, boot)?;
    finish_stream(runs, &nr, a.pos, boot, partial)
}

fn check_sizes(a: &Attr<'_>, nr: &NonResident<'_>) -> Result<(), Bad> {
    if nr.initialized > nr.size || nr.size > nr.allocated {
        return Err(Bad::new(
            a.pos,
            format!(
                "inconsistent sizes: initialized {} > data {} or data > allocated {}",
                nr.initialized, nr.size, nr.allocated
            ),
        ));
    }
    Ok(())
}

/// The runs of one piece of a non-resident attribute, which must cover exactly its
/// `lowest_vcn..=highest_vcn`.
fn piece_runs(a: &Attr<'_>, nr: &NonResident<'_>, boot: &Boot) -> Result<Vec<Run>, Bad> {
    let pairs_pos = a.pos.saturating_add(nr.pairs_off);
    let runs = decode_runlist(nr.pairs, nr.lowest_vcn, boot.nr_clusters)
        .map_err(|b| Bad::new(pairs_pos.saturating_add(b.pos), b.detail))?;
    let end_vcn = runs
        .last()
        .map_or(nr.lowest_vcn, |r| r.vcn.saturating_add(r.len));
    let empty = runs.is_empty() && nr.lowest_vcn == 0 && nr.allocated == 0;
    if end_vcn != nr.highest_vcn.wrapping_add(1) && !empty {
        return Err(Bad::new(
            pairs_pos,
            format!(
                "the runlist covers VCN {}..{end_vcn} but the attribute says {}..={}",
                nr.lowest_vcn, nr.lowest_vcn, nr.highest_vcn
            ),
        ));
    }
    Ok(runs)
}

/// A stream from runs starting at VCN 0 and the sizes of its first piece. Unless `partial`,
/// the runs must map the whole allocated size.
fn finish_stream(
    runs: Vec<Run>,
    first: &NonResident<'_>,
    pos: usize,
    boot: &Boot,
    partial: bool,
) -> Result<Stream, Bad> {
    let end_vcn = runs.last().map_or(0, |r| r.vcn.saturating_add(r.len));
    let mapped = end_vcn.saturating_mul(boot.cluster_size);
    if !partial && first.allocated > mapped {
        return Err(Bad::new(
            pos,
            format!(
                "allocated size {} is more than the {mapped} bytes the runlist maps",
                first.allocated
            ),
        ));
    }
    Ok(Stream {
        runs,
        size: first.size,
        initialized: first.initialized,
    })
}

/// One `$ATTRIBUTE_LIST` entry.
#[derive(Debug, PartialEq, Eq)]
struct ListEntry {
    ty: u32,
    named: bool,
    start_vcn: u64,
    /// MFT reference of the record holding the attribute (low 48 bits: record number).
    mft_ref: u64,
}

/// Parses an `$ATTRIBUTE_LIST` value: entries of 0x00 type, 0x04 length (u16), 0x06 name
/// length, 0x08 starting VCN, 0x10 MFT reference.
fn parse_attr_list(b: &[u8]) -> Result<Vec<ListEntry>, Bad> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    // Every entry is at least 0x1A bytes.
    while pos < b.len() {
        let len = usize::from(le16(b, pos.saturating_add(4)).unwrap_or(0));
        let entry = pos
            .checked_add(len)
            .and_then(|end| b.get(pos..end))
            .filter(|_| len >= 0x1A)
            .ok_or_else(|| {
                Bad::new(
                    pos,
                    format!("$ATTRIBUTE_LIST entry has an invalid length {len}"),
                )
            })?;
        out.push(ListEntry {
            ty: le32(entry, 0).unwrap_or(0),
            named: entry.get(6).copied().unwrap_or(0) != 0,
            start_vcn: le64(entry, 8).unwrap_or(0),
            mft_ref: le64(entry, 0x10).unwrap_or(0),
        });
        pos = pos.saturating_add(len);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Runlists.

/// One run: `len` clusters from `vcn`, at `lcn` (`None` for a sparse run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    vcn: u64,
    lcn: Option<u64>,
    len: u64,
}

/// Decodes mapping pairs: header byte (low nibble = length size, high nibble = offset size),
/// the run length (unsigned), the LCN delta (signed, from the previous run; absent = sparse);
/// a 0x00 header ends the list. Every run must lie inside the volume's `nr_clusters`.
fn decode_runlist(b: &[u8], start_vcn: u64, nr_clusters: u64) -> Result<Vec<Run>, Bad> {
    let mut runs = Vec::new();
    let mut pos = 0usize;
    let mut vcn = start_vcn;
    let mut lcn: i64 = 0;
    // Each run consumes at least two bytes, so the loop ends within b.len() / 2 steps.
    loop {
        let Some(&h) = b.get(pos) else {
            return Err(Bad::new(pos, "runlist has no end marker"));
        };
        if h == 0 {
            return Ok(runs);
        }
        let len_size = usize::from(h & 0x0F);
        let off_size = usize::from(h >> 4);
        if len_size == 0 || len_size > 8 || off_size > 8 {
            return Err(Bad::new(pos, format!("invalid run header {h:#04x}")));
        }
        let field = |at: usize, n: usize| -> Result<[u8; 8], Bad> {
            let s = at
                .checked_add(n)
                .and_then(|end| b.get(at..end))
                .ok_or_else(|| Bad::new(pos, "runlist is truncated"))?;
            let mut v = [0u8; 8];
            v.get_mut(..n).unwrap_or_default().copy_from_slice(s);
            Ok(v)
        };
        let len_at = pos.saturating_add(1);
        let len = u64::from_le_bytes(field(len_at, len_size)?);
        let off_at = len_at.saturating_add(len_size);
        let run_lcn = if off_size == 0 {
            None
        } else {
            let mut v = field(off_at, off_size)?;
            // Sign-extend from the top byte of the field.
            let negative = v
                .get(off_size.saturating_sub(1))
                .is_some_and(|&x| x & 0x80 != 0);
            if negative {
                for x in v.iter_mut().skip(off_size) {
                    *x = 0xFF;
                }
            }
            let delta = i64::from_le_bytes(v);
            lcn = lcn.checked_add(delta).filter(|&l| l >= 0).ok_or_else(|| {
                Bad::new(pos, format!("LCN delta {delta} leads outside the volume"))
            })?;
            Some(u64::try_from(lcn).unwrap_or(u64::MAX))
        };
        let vcn_end = vcn.checked_add(len).filter(|&e| e <= MAX_VCN);
        let Some(vcn_end) = vcn_end.filter(|_| len > 0) else {
            return Err(Bad::new(
                pos,
                format!("invalid run length {len} at VCN {vcn}"),
            ));
        };
        if let Some(l) = run_lcn {
            if l.checked_add(len).is_none_or(|e| e > nr_clusters) {
                return Err(Bad::new(
                    pos,
                    format!("run of {len} clusters at LCN {l} goes past the volume's {nr_clusters} clusters"),
                ));
            }
        }
        runs.push(Run {
            vcn,
            lcn: run_lcn,
            len,
        });
        vcn = vcn_end;
        pos = off_at.saturating_add(off_size);
    }
}

// ---------------------------------------------------------------------------------------------
// The volume: reading streams and MFT records.

struct Vol<'a, 'b> {
    part: &'a Region<'b>,
    boot: Boot,
    mft: Stream,
}

impl Stream {
    /// Partition byte offset of stream byte `pos`, when mapped to a real cluster.
    fn offset_of(&self, cs: u64, pos: u64) -> Option<u64> {
        let vcn = pos.checked_div(cs)?;
        let r = self
            .runs
            .iter()
            .find(|r| vcn >= r.vcn && vcn < r.vcn.saturating_add(r.len))?;
        let lcn = r.lcn?.checked_add(vcn.checked_sub(r.vcn)?)?;
        lcn.checked_mul(cs)?.checked_add(pos.checked_rem(cs)?)
    }

    /// Reads stream bytes `[pos, pos + buf.len())`: sparse runs and bytes at or past the
    /// initialized size read as zero; bytes past the data size or not mapped are an error.
    fn read(&self, vol: &Vol<'_, '_>, pos: u64, buf: &mut [u8], what: &str) -> Result<(), FsError> {
        let cs = vol.boot.cluster_size;
        let where_ = || self.offset_of(cs, pos).unwrap_or(0);
        let end = pos
            .checked_add(u64_of(buf.len()))
            .filter(|&e| e <= self.size)
            .ok_or_else(|| {
                corrupt(
                    where_(),
                    format!(
                        "{what}: read of {} bytes at stream byte {pos} is past its size {}",
                        buf.len(),
                        self.size
                    ),
                )
            })?;
        buf.fill(0);
        let want_end = end.min(self.initialized);
        let mut mapped_end = 0u64;
        for r in &self.runs {
            // decode_runlist keeps vcn + len <= MAX_VCN, so these do not overflow.
            let rs = r.vcn.saturating_mul(cs);
            let re = r.vcn.saturating_add(r.len).saturating_mul(cs);
            mapped_end = mapped_end.max(re);
            let s = rs.max(pos);
            let e = re.min(want_end);
            if s >= e {
                continue;
            }
            let Some(lcn) = r.lcn else { continue };
            let disk = lcn.saturating_mul(cs).saturating_add(s.saturating_sub(rs));
            let from = usize_of(s.saturating_sub(pos));
            let to = usize_of(e.saturating_sub(pos));
            let dst = buf.get_mut(from..to).unwrap_or_default();
            vol.part
                .read_exact_at(dst, disk)
                .map_err(|source| FsError::Io {
                    fs: FS,
                    offset: disk,
                    source,
                })?;
        }
        if want_end > mapped_end {
            return Err(corrupt(
                where_(),
                format!(
                    "{what}: stream byte {} is not mapped by its runlist (maps {mapped_end} bytes)",
                    mapped_end.max(pos)
                ),
            ));
        }
        Ok(())
    }
}

impl Vol<'_, '_> {
    /// Reads MFT record `nr` through the `$MFT` runlist; it must be in use.
    fn record(&self, nr: u64) -> Result<Record, FsError> {
        let rec = self.record_any(nr)?;
        if !rec.in_use() {
            return Err(rec.bad(0x16, "not in use".into()));
        }
        Ok(rec)
    }

    /// The whole unnamed non-resident `$DATA` stream of `rec`, joining the pieces an
    /// `$ATTRIBUTE_LIST` spreads over extension records.
    fn data_stream(&self, rec: &Record) -> Result<Stream, FsError> {
        let attrs = rec.attrs()?;
        let Some(list) = attrs.iter().find(|a| a.ty == AT_ATTRIBUTE_LIST) else {
            return rec.data_stream(&self.boot, false);
        };
        let bytes = if list.non_resident {
            let s = stream_of(list, &self.boot, false).map_err(|b| rec.err(b))?;
            if s.size > MAX_ATTR_LIST {
                return Err(rec.bad(
                    list.pos,
                    format!("$ATTRIBUTE_LIST of {} bytes is too large", s.size),
                ));
            }
            let mut v = vec![0u8; usize_of(s.size)];
            s.read(self, 0, &mut v, "$ATTRIBUTE_LIST")?;
            v
        } else {
            list.value().map_err(|b| rec.err(b))?.to_vec()
        };
        let entries = parse_attr_list(&bytes).map_err(|b| rec.bad(list.pos, b.detail))?;
        let mut pieces: Vec<(u64, u64)> = entries
            .iter()
            .filter(|e| e.ty == AT_DATA && !e.named)
            .map(|e| (e.start_vcn, e.mft_ref & REF_MASK))
            .collect();
        pieces.sort_unstable();
        pieces.dedup();
        let mut runs: Vec<Run> = Vec::new();
        let mut first: Option<Stream> = None;
        let mut next_vcn = 0u64;
        // At most one piece per list entry, and the list is bounded by MAX_ATTR_LIST.
        for (vcn, nr) in pieces {
            if vcn != next_vcn {
                return Err(rec.bad(
                    list.pos,
                    format!("$ATTRIBUTE_LIST: the $DATA piece at VCN {vcn} does not follow VCN {next_vcn}"),
                ));
            }
            let ext;
            let holder = if nr == rec.nr {
                rec
            } else {
                ext = self.record(nr)?;
                if le64(&ext.buf, 0x20).map(|b| b & REF_MASK) != Some(rec.nr) {
                    return Err(ext.bad(
                        0x20,
                        format!("is not an extension record of record {}", rec.nr),
                    ));
                }
                &ext
            };
            let attrs = holder.attrs()?;
            let found = attrs.iter().find_map(|a| {
                let n = a.non_resident().ok()?;
                (a.ty == AT_DATA && a.name.is_empty() && a.non_resident && n.lowest_vcn == vcn)
                    .then_some((a, n))
            });
            let Some((a, n)) = found else {
                return Err(holder.bad(0, format!("has no $DATA piece starting at VCN {vcn} (record {}'s $ATTRIBUTE_LIST says it does)", rec.nr)));
            };
            let piece = piece_runs(a, &n, &self.boot).map_err(|b| holder.err(b))?;
            if vcn == 0 {
                check_sizes(a, &n).map_err(|b| holder.err(b))?;
                first = Some(
                    finish_stream(Vec::new(), &n, a.pos, &self.boot, true)
                        .map_err(|b| holder.err(b))?,
                );
            }
            next_vcn = piece.last().map_or(vcn, |r| r.vcn.saturating_add(r.len));
            runs.extend(piece);
        }
        let Some(first) = first else {
            return Err(rec.bad(
                list.pos,
                "$ATTRIBUTE_LIST has no unnamed $DATA starting at VCN 0".into(),
            ));
        };
        let mapped = next_vcn.saturating_mul(self.boot.cluster_size);
        if first.size > mapped {
            return Err(rec.bad(
                list.pos,
                format!(
                    "its $DATA pieces map {mapped} bytes, less than the data size {}",
                    first.size
                ),
            ));
        }
        Ok(Stream { runs, ..first })
    }

    /// Reads MFT record `nr`, in use or not.
    fn record_any(&self, nr: u64) -> Result<Record, FsError> {
        let rs = self.boot.record_size;
        let pos = nr.saturating_mul(rs);
        let mut buf = vec![0u8; usize_of(rs)];
        self.mft
            .read(self, pos, &mut buf, &format!("$MFT (record {nr})"))?;
        let at = self.mft.offset_of(self.boot.cluster_size, pos).unwrap_or(0);
        Record::parse_any(nr, at, buf)
    }
}

// ---------------------------------------------------------------------------------------------
// State checks: $LogFile and hibernation.

#[derive(Debug, PartialEq, Eq)]
enum LogState {
    Clean,
    Unclean,
    FastStartup,
    Unknown(String),
}

/// What a restart page says.
#[derive(Debug, PartialEq, Eq)]
struct Restart {
    lsn: u64,
    clean: bool,
    fast_startup: bool,
}

/// Parses the first 512 bytes of a restart page found at `$LogFile` byte `pos`. The fields used
/// lie in the first sector before its fixup word, so no fixups are needed.
fn parse_restart(p: &[u8], pos: u64) -> Result<Restart, String> {
    let magic = p.get(0..4).unwrap_or_default();
    let chkd = magic == b"CHKD";
    let sps = le32(p, 0x10).unwrap_or(0);
    let lps = le32(p, 0x14).unwrap_or(0);
    if sps < 512 || lps < 512 || !sps.is_power_of_two() || !lps.is_power_of_two() {
        return Err(format!(
            "restart page at {pos:#x} has invalid page sizes {sps}/{lps}"
        ));
    }
    if pos != 0 && pos != u64::from(sps) {
        return Err(format!(
            "restart page at {pos:#x} is not at 0 or the page size {sps}"
        ));
    }
    let minor = le16(p, 0x1A).unwrap_or(0);
    let major = le16(p, 0x1C).unwrap_or(0);
    let fast_startup = match (major, minor) {
        (1, 1) => false,
        (2, 0) => true,
        _ => return Err(format!("restart page version {major}.{minor} is unknown")),
    };
    let ra = usize::from(le16(p, 0x18).unwrap_or(0));
    if ra % 8 != 0 || ra < 0x1E || ra.saturating_add(0x10) > STRIDE.saturating_sub(2) {
        return Err(format!("restart area offset {ra:#x} is invalid"));
    }
    let area = p.get(ra..).unwrap_or_default();
    let in_use = le16(area, 0x0C).unwrap_or(0);
    let flags = le16(area, 0x0E).unwrap_or(0);
    let lsn = if chkd { le64(p, 0x08) } else { le64(area, 0) }.unwrap_or(0);
    Ok(Restart {
        lsn,
        clean: in_use == 0xFFFF || flags & 0x0002 != 0,
        fast_startup,
    })
}

/// Looks for the restart pages as ntfs-3g does (offsets 0, 512, 1024, 2048, … below the size)
/// and reports the state of the most recent one. All-0xFF (never used or emptied) is clean.
fn check_logfile(vol: &Vol<'_, '_>, log: &Stream) -> Result<LogState, FsError> {
    let mut empty = true;
    let mut found: Vec<Restart> = Vec::new();
    let mut last_err = None;
    let mut pos = 0u64;
    let mut page = [0u8; STRIDE];
    // Positions double, so at most 64 steps.
    for _ in 0..64 {
        if pos.saturating_add(u64_of(STRIDE)) > log.size {
            break;
        }
        log.read(vol, pos, &mut page, "$LogFile")?;
        let magic = page.get(0..4).unwrap_or_default();
        if magic != [0xFF; 4] {
            empty = false;
        } else if !empty {
            break;
        }
        if magic == b"RCRD" {
            break;
        }
        if magic == b"RSTR" || magic == b"CHKD" {
            match parse_restart(&page, pos) {
                Ok(r) => {
                    found.push(r);
                    if pos != 0 {
                        break;
                    }
                }
                Err(e) => last_err = Some(e),
            }
        }
        pos = if pos == 0 { 512 } else { pos.saturating_mul(2) };
    }
    if empty {
        return Ok(LogState::Clean);
    }
    let Some(best) = found.iter().max_by_key(|r| r.lsn) else {
        return Ok(LogState::Unknown(
            last_err.unwrap_or_else(|| "no valid restart page".into()),
        ));
    };
    Ok(if best.fast_startup {
        LogState::FastStartup
    } else if best.clean {
        LogState::Clean
    } else {
        LogState::Unclean
    })
}

/// Scans index entries in `b[start..end)` for `hiberfil.sys` with parent 5; returns its MFT
/// reference (with sequence number).
fn find_in_entries(b: &[u8], start: usize, end: usize) -> Option<u64> {
    let b = b.get(..end.min(b.len()))?;
    let mut pos = start;
    // Every entry is at least 0x10 bytes.
    while pos < b.len() {
        let file_ref = le64(b, pos)?;
        let len = usize::from(le16(b, pos.saturating_add(8))?);
        let key_len = usize::from(le16(b, pos.saturating_add(0x0A))?);
        let flags = le16(b, pos.saturating_add(0x0C))?;
        if flags & 2 != 0 || len < 0x10 {
            return None;
        }
        let key =
            b.get(pos.saturating_add(0x10)..pos.saturating_add(0x10).saturating_add(key_len))?;
        if le64(key, 0).map(|p| p & REF_MASK) == Some(REC_ROOT) {
            let n = usize::from(key.get(0x40).copied().unwrap_or(0)).saturating_mul(2);
            let name = key
                .get(0x42..0x42usize.saturating_add(n))
                .map(utf16)
                .unwrap_or_default();
            if name.eq_ignore_ascii_case("hiberfil.sys") {
                return Some(file_ref);
            }
        }
        pos = pos.saturating_add(len);
    }
    None
}

/// True when the root directory holds `hiberfil.sys` whose data starts with `hibr`/`HIBR`.
/// Looks it up in the root index (`$INDEX_ROOT` and every `$INDEX_ALLOCATION` block, up to
/// [`MAX_INDEX_BLOCKS`]), then checks the record's sequence number and its data header.
fn find_hibernation(vol: &Vol<'_, '_>) -> Result<bool, FsError> {
    let root = vol.record(REC_ROOT)?;
    let attrs = root.attrs()?;
    let mut file_ref = None;
    if let Some(a) = attrs
        .iter()
        .find(|a| a.ty == AT_INDEX_ROOT && a.name == I30 && !a.non_resident)
    {
        let v = a.value().map_err(|b| root.err(b))?;
        let hdr = 0x10usize;
        let start = usize_of(u64::from(le32(v, hdr).unwrap_or(0))).saturating_add(hdr);
        let end =
            usize_of(u64::from(le32(v, hdr.saturating_add(4)).unwrap_or(0))).saturating_add(hdr);
        file_ref = find_in_entries(v, start, end);
    }
    if file_ref.is_none() {
        if let Some(a) = attrs
            .iter()
            .find(|a| a.ty == AT_INDEX_ALLOCATION && a.name == I30 && a.non_resident)
        {
            let idx = stream_of(a, &vol.boot, false).map_err(|b| root.err(b))?;
            let bs = vol.boot.index_size;
            let mut block = vec![0u8; usize_of(bs)];
            let blocks = idx.size.checked_div(bs).unwrap_or(0).min(MAX_INDEX_BLOCKS);
            for i in 0..blocks {
                let pos = i.saturating_mul(bs);
                idx.read(vol, pos, &mut block, "root directory index")?;
                // Unused or damaged blocks are skipped: this check is best effort.
                if block.get(0..4) != Some(b"INDX") || apply_fixups(&mut block).is_err() {
                    continue;
                }
                let start =
                    usize_of(u64::from(le32(&block, 0x18).unwrap_or(0))).saturating_add(0x18);
                let end = usize_of(u64::from(le32(&block, 0x1C).unwrap_or(0))).saturating_add(0x18);
                file_ref = find_in_entries(&block, start, end);
                if file_ref.is_some() {
                    break;
                }
            }
        }
    }
    let Some(file_ref) = file_ref else {
        return Ok(false);
    };
    let rec = vol.record_any(file_ref & REF_MASK)?;
    // A stale index entry points to a record that was freed or reused since: its sequence number
    // differs.
    if !rec.in_use() || le16(&rec.buf, 0x10) != u16::try_from(file_ref >> 48).ok() {
        return Ok(false);
    }
    let attrs = rec.attrs()?;
    let mut head = [0u8; 4];
    if attrs.iter().any(|a| a.ty == AT_ATTRIBUTE_LIST) {
        // A big, fragmented hiberfil.sys: its $DATA may live in extension records.
        let s = vol.data_stream(&rec)?;
        if s.size < 4 {
            return Ok(false);
        }
        s.read(vol, 0, &mut head, "hiberfil.sys")?;
        return Ok(head.eq_ignore_ascii_case(b"hibr"));
    }
    let Some(a) = attrs.iter().find(|a| a.ty == AT_DATA && a.name.is_empty()) else {
        return Ok(false);
    };
    if a.non_resident {
        let s = stream_of(a, &vol.boot, true).map_err(|b| rec.err(b))?;
        if s.size < 4 {
            return Ok(false);
        }
        s.read(vol, 0, &mut head, "hiberfil.sys")?;
    } else {
        let v = a.value().map_err(|b| rec.err(b))?;
        let Some(h) = crate::bytes::arr::<4>(v, 0) else {
            return Ok(false);
        };
        head = h;
    }
    Ok(head.eq_ignore_ascii_case(b"hibr"))
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
    use crate::disk::{BlockDev, MemDisk};
    use std::io;
    use std::sync::Mutex;

    // --- Pure functions ---------------------------------------------------------------------

    #[test]
    fn runlist_basic_negative_sparse() {
        // 5 clusters at LCN 0x1000; 3 sparse; 2 at 0x1000 - 0x10 = 0xFF0; 1 at 0xFF0 + 0x20.
        let b = [
            0x21, 0x05, 0x00, 0x10, // len 5, delta +0x1000
            0x01, 0x03, // sparse, len 3
            0x11, 0x02, 0xF0, // len 2, delta -0x10
            0x11, 0x01, 0x20, // len 1, delta +0x20
            0x00,
        ];
        let runs = decode_runlist(&b, 0, 0x10000).unwrap();
        assert_eq!(
            runs,
            vec![
                Run {
                    vcn: 0,
                    lcn: Some(0x1000),
                    len: 5
                },
                Run {
                    vcn: 5,
                    lcn: None,
                    len: 3
                },
                Run {
                    vcn: 8,
                    lcn: Some(0xFF0),
                    len: 2
                },
                Run {
                    vcn: 10,
                    lcn: Some(0x1010),
                    len: 1
                },
            ]
        );
        // Multi-byte negative delta: -0x0100 as 2 bytes (00 FF).
        let b = [0x21, 0x01, 0x00, 0x02, 0x21, 0x01, 0x00, 0xFF, 0x00];
        let runs = decode_runlist(&b, 7, 0x1000).unwrap();
        assert_eq!(
            runs[1],
            Run {
                vcn: 8,
                lcn: Some(0x100),
                len: 1
            }
        );
        // An empty list.
        assert_eq!(decode_runlist(&[0], 0, 1).unwrap(), vec![]);
    }

    #[test]
    fn runlist_errors() {
        // Truncated: header says 2 offset bytes, only one follows; no end marker.
        assert!(decode_runlist(&[0x21, 0x05, 0x10], 0, 1 << 20).is_err());
        assert!(decode_runlist(&[0x11, 0x05, 0x10], 0, 1 << 20).is_err());
        assert!(decode_runlist(&[], 0, 1).is_err());
        // Overflowing length: 8 bytes of 0xFF.
        let mut b = vec![0x18];
        b.extend_from_slice(&[0xFF; 8]);
        b.push(0x01);
        b.push(0x00);
        let e = decode_runlist(&b, 0, u64::MAX).unwrap_err();
        assert!(e.detail.contains("run length"), "{e:?}");
        // Length overflowing the VCN space after a first run.
        let mut b = vec![0x01, 0x10, 0x08];
        b.extend_from_slice(&(MAX_VCN - 1).to_le_bytes());
        b.push(0);
        assert!(decode_runlist(&b, 0, u64::MAX).is_err());
        // Zero length, zero-size length field, 9-byte field.
        assert!(decode_runlist(&[0x11, 0x00, 0x05, 0x00], 0, 100).is_err());
        assert!(decode_runlist(&[0x10, 0x05, 0x00], 0, 100).is_err());
        assert!(decode_runlist(&[0x91, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0, 100).is_err());
        // Negative LCN.
        assert!(decode_runlist(&[0x11, 0x01, 0xFF, 0x00], 0, 100).is_err());
        // Past the volume.
        let e = decode_runlist(&[0x11, 0x10, 0x60, 0x00], 0, 100).unwrap_err();
        assert!(e.detail.contains("past the volume"), "{e:?}");
        assert!(decode_runlist(&[0x11, 0x04, 0x60, 0x00], 0, 100).is_ok());
        // Huge delta that overflows i64 when added.
        let mut b = vec![0x81, 0x01];
        b.extend_from_slice(&i64::MAX.to_le_bytes());
        b.extend_from_slice(&[0x81, 0x01]);
        b.extend_from_slice(&i64::MAX.to_le_bytes());
        b.push(0);
        assert!(decode_runlist(&b, 0, u64::MAX).is_err());
    }

    /// Protects a record in place (the inverse of `apply_fixups`), USA at 0x30.
    fn protect(r: &mut [u8], usn: u16) {
        let count = r.len() / 512 + 1;
        r[4..6].copy_from_slice(&0x30u16.to_le_bytes());
        r[6..8].copy_from_slice(&(count as u16).to_le_bytes());
        r[0x30..0x32].copy_from_slice(&usn.to_le_bytes());
        for k in 1..count {
            let end = k * 512;
            let saved = [r[end - 2], r[end - 1]];
            r[0x30 + 2 * k..0x32 + 2 * k].copy_from_slice(&saved);
            r[end - 2..end].copy_from_slice(&usn.to_le_bytes());
        }
    }

    #[test]
    fn fixups_good_and_torn() {
        let mut r = vec![0u8; 1024];
        r[0..4].copy_from_slice(b"FILE");
        r[510] = 0xAB;
        r[511] = 0xCD;
        r[1022] = 0x12;
        r[1023] = 0x34;
        let orig = r.clone();
        protect(&mut r, 7);
        assert_eq!(&r[510..512], &[7, 0]);
        let mut good = r.clone();
        apply_fixups(&mut good).unwrap();
        assert_eq!(good[510..512], orig[510..512]);
        assert_eq!(good[1022..1024], orig[1022..1024]);
        // Torn: the second sector was not rewritten.
        let mut torn = r.clone();
        torn[1022] = 6;
        let e = apply_fixups(&mut torn).unwrap_err();
        assert_eq!(e.pos, 1022);
        assert!(e.detail.contains("torn"), "{e:?}");
        // Wrong count, odd or out-of-range offset, short buffer.
        let mut bad = r.clone();
        bad[6] = 2;
        assert!(apply_fixups(&mut bad).is_err());
        let mut bad = r.clone();
        bad[4] = 0x31;
        assert!(apply_fixups(&mut bad).is_err());
        let mut bad = r.clone();
        bad[4..6].copy_from_slice(&0x1FCu16.to_le_bytes());
        assert!(apply_fixups(&mut bad).is_err());
        assert!(apply_fixups(&mut r.clone()[..1000]).is_err());
        assert!(apply_fixups(&mut []).is_err());
    }

    fn boot_sector(
        bps: u16,
        spc: u8,
        total: u64,
        mft: u64,
        mirr: u64,
        rec: u8,
        idx: u8,
    ) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0..3].copy_from_slice(&[0xEB, 0x52, 0x90]);
        b[3..11].copy_from_slice(b"NTFS    ");
        b[0x0B..0x0D].copy_from_slice(&bps.to_le_bytes());
        b[0x0D] = spc;
        b[0x15] = 0xF8;
        b[0x28..0x30].copy_from_slice(&total.to_le_bytes());
        b[0x30..0x38].copy_from_slice(&mft.to_le_bytes());
        b[0x38..0x40].copy_from_slice(&mirr.to_le_bytes());
        b[0x40] = rec;
        b[0x44] = idx;
        b[0x48..0x50].copy_from_slice(&0x1234_5678_9ABC_DEF0u64.to_le_bytes());
        b[0x1FE] = 0x55;
        b[0x1FF] = 0xAA;
        b
    }

    #[test]
    fn boot_fields() {
        let b = Boot::parse(&boot_sector(512, 8, 614_399, 4, 38_399, 0xF6, 0xF4)).unwrap();
        assert_eq!(
            b,
            Boot {
                sector_size: 512,
                sectors_per_cluster: 8,
                cluster_size: 4096,
                total_sectors: 614_399,
                nr_clusters: 76_799,
                mft_lcn: 4,
                mftmirr_lcn: 38_399,
                record_size: 1024,
                index_size: 4096,
            }
        );
        // Large clusters: 0xF8 = 2^8 sectors = 128 KiB; 0xF4 = 2^12 = 2 MiB with 512-byte sectors.
        let b = Boot::parse(&boot_sector(512, 0xF8, 1 << 20, 4, 5, 0xF6, 0xF4)).unwrap();
        assert_eq!((b.cluster_size, b.nr_clusters), (128 << 10, 4096));
        let b = Boot::parse(&boot_sector(512, 0xF4, 1 << 20, 4, 5, 0xF6, 0xF4)).unwrap();
        assert_eq!(b.cluster_size, 2 << 20);
        // 4 KiB sectors with 0xF4 would be 16 MiB clusters: refused.
        assert!(Boot::parse(&boot_sector(4096, 0xF4, 1 << 20, 4, 5, 0xF6, 0xF4)).is_err());
        // 4Kn: 4096-byte sectors, 1 sector per cluster, records of 1 cluster (positive encoding).
        let b = Boot::parse(&boot_sector(4096, 1, 1000, 4, 5, 1, 1)).unwrap();
        assert_eq!(
            (b.cluster_size, b.record_size, b.index_size),
            (4096, 4096, 4096)
        );
        // Positive clusters-per-record: 2 × 512-byte clusters = 1 KiB records.
        let b = Boot::parse(&boot_sector(512, 1, 1000, 4, 5, 2, 8)).unwrap();
        assert_eq!((b.record_size, b.index_size), (1024, 4096));
        // Invalid fields.
        for bs in [
            boot_sector(500, 8, 1000, 4, 5, 0xF6, 0xF4), // bytes per sector
            boot_sector(8192, 1, 1000, 4, 5, 0xF6, 0xF4), // bytes per sector
            boot_sector(512, 3, 1000, 4, 5, 0xF6, 0xF4), // spc not a power of two
            boot_sector(512, 0, 1000, 4, 5, 0xF6, 0xF4), // spc 0
            boot_sector(512, 0x81, 1000, 4, 5, 0xF6, 0xF4), // 2^127 sectors
            boot_sector(512, 8, 7, 4, 5, 0xF6, 0xF4),    // no whole cluster
            boot_sector(512, 8, 1000, 0, 5, 0xF6, 0xF4), // MFT at LCN 0
            boot_sector(512, 8, 1000, 125, 5, 0xF6, 0xF4), // MFT past the end
            boot_sector(512, 8, 1000, 4, 125, 0xF6, 0xF4), // MFTMirr past the end
            boot_sector(512, 8, 1000, 4, 5, 0, 0xF4),    // record size 0
            boot_sector(512, 8, 1000, 4, 5, 0xF8, 0xF4), // 256-byte records
            boot_sector(512, 8, 1000, 4, 5, 0x80, 0xF4), // 2^128
            boot_sector(512, 8, 1000, 4, 5, 0x7F, 0xF4), // 127 clusters
            boot_sector(512, 8, 1000, 4, 5, 3, 0xF4),    // 3 clusters: not a power of two
        ] {
            assert!(Boot::parse(&bs).is_err(), "{:?}", Boot::parse(&bs));
        }
        let mut fat = boot_sector(512, 8, 1000, 4, 5, 0xF6, 0xF4);
        fat[0x0E] = 1; // reserved sectors
        assert!(Boot::parse(&fat).is_err());
        let mut fat = boot_sector(512, 8, 1000, 4, 5, 0xF6, 0xF4);
        fat[0x20] = 1; // large sectors
        assert!(Boot::parse(&fat).is_err());
        for n in 0..100 {
            let _ = Boot::parse(&boot_sector(512, 8, 1000, 4, 5, 0xF6, 0xF4)[..n]);
        }
        assert_eq!(decode_sectors_per_cluster(0xF0), Some(1 << 16));
        assert_eq!(decode_sectors_per_cluster(0xEF), None);
        assert_eq!(decode_sectors_per_cluster(0xFF), Some(2));
        assert_eq!(decode_clusters_per(0xF6, 4096), Some(1024));
        assert_eq!(decode_clusters_per(0x02, 4096), Some(8192));
        assert_eq!(decode_clusters_per(0x80, 4096), None);
    }

    #[test]
    fn restart_pages() {
        let page = |magic: &[u8; 4], major: u16, minor: u16, in_use: u16, flags: u16, lsn: u64| {
            let mut p = vec![0u8; 512];
            p[0..4].copy_from_slice(magic);
            p[0x10..0x14].copy_from_slice(&4096u32.to_le_bytes());
            p[0x14..0x18].copy_from_slice(&4096u32.to_le_bytes());
            p[0x18..0x1A].copy_from_slice(&0x30u16.to_le_bytes());
            p[0x1A..0x1C].copy_from_slice(&minor.to_le_bytes());
            p[0x1C..0x1E].copy_from_slice(&major.to_le_bytes());
            p[0x30..0x38].copy_from_slice(&lsn.to_le_bytes());
            p[0x3C..0x3E].copy_from_slice(&in_use.to_le_bytes());
            p[0x3E..0x40].copy_from_slice(&flags.to_le_bytes());
            p
        };
        let r = parse_restart(&page(b"RSTR", 1, 1, 0xFFFF, 0, 9), 0).unwrap();
        assert_eq!(
            r,
            Restart {
                lsn: 9,
                clean: true,
                fast_startup: false
            }
        );
        let r = parse_restart(&page(b"RSTR", 1, 1, 0, 0, 9), 4096).unwrap();
        assert!(!r.clean);
        let r = parse_restart(&page(b"RSTR", 1, 1, 0, 2, 9), 0).unwrap();
        assert!(r.clean);
        let r = parse_restart(&page(b"RSTR", 2, 0, 0xFFFF, 2, 9), 0).unwrap();
        assert!(r.fast_startup);
        assert!(parse_restart(&page(b"RSTR", 1, 2, 0xFFFF, 0, 9), 0).is_err());
        assert!(parse_restart(&page(b"RSTR", 1, 1, 0xFFFF, 0, 9), 512).is_err());
        let mut p = page(b"RSTR", 1, 1, 0xFFFF, 0, 9);
        p[0x18..0x1A].copy_from_slice(&0x1F8u16.to_le_bytes()); // restart area past the first sector
        assert!(parse_restart(&p, 0).is_err());
        let mut p = page(b"RSTR", 1, 1, 0xFFFF, 0, 9);
        p[0x11] = 0x11; // page size not a power of two
        assert!(parse_restart(&p, 0).is_err());
        assert!(parse_restart(&[], 0).is_err());
    }

    #[test]
    fn covered_ranges() {
        let e = Extents::from_unsorted(vec![(0, 10), (20, 10)]);
        assert!(covered(&e, 0, 10));
        assert!(covered(&e, 22, 3));
        assert!(!covered(&e, 5, 10));
        assert!(!covered(&e, 10, 1));
        assert!(!covered(&e, 35, 1));
        assert!(covered(&e, 35, 0));
        assert!(!covered(&Extents::new(), 0, 1));
    }

    // --- A synthetic volume built by hand ---------------------------------------------------
    //
    // 1 MiB partition, 512-byte sectors, 4 KiB clusters, total_sectors 2047 → 255 clusters and
    // a one-cluster tail. LCN 0-1 $Boot, 4-8 $MFT (20 records), 10 $Bitmap, 11 $MFTMirr,
    // 12-13 $LogFile, 14 root index block, 20 hiberfil.sys data.

    const CS: usize = 4096;
    const PART: usize = 256 * CS;

    fn align8(n: usize) -> usize {
        (n + 7) & !7
    }

    fn utf16le(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    fn resident(ty: u32, name: &str, value: &[u8]) -> Vec<u8> {
        let name = utf16le(name);
        let voff = align8(0x18 + name.len());
        let len = align8(voff + value.len());
        let mut a = vec![0u8; len];
        a[0..4].copy_from_slice(&ty.to_le_bytes());
        a[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        a[9] = (name.len() / 2) as u8;
        a[0x0A..0x0C].copy_from_slice(&0x18u16.to_le_bytes());
        a[0x10..0x14].copy_from_slice(&(value.len() as u32).to_le_bytes());
        a[0x14..0x16].copy_from_slice(&(voff as u16).to_le_bytes());
        a[0x18..0x18 + name.len()].copy_from_slice(&name);
        a[voff..voff + value.len()].copy_from_slice(value);
        a
    }

    /// A non-resident attribute with one run of `len` clusters at `lcn`.
    fn nonres(ty: u32, name: &str, lcn: u8, len: u8, size: u64) -> Vec<u8> {
        nonres_pairs(
            ty,
            name,
            &[0x11, len, lcn, 0],
            u64::from(len) - 1,
            u64::from(len) * 4096,
            size,
            size,
        )
    }

    fn nonres_pairs(
        ty: u32,
        name: &str,
        pairs: &[u8],
        highest: u64,
        alloc: u64,
        size: u64,
        init: u64,
    ) -> Vec<u8> {
        nonres_piece(ty, name, pairs, 0, highest, alloc, size, init)
    }

    #[allow(clippy::too_many_arguments)]
    fn nonres_piece(
        ty: u32,
        name: &str,
        pairs: &[u8],
        lowest: u64,
        highest: u64,
        alloc: u64,
        size: u64,
        init: u64,
    ) -> Vec<u8> {
        let name = utf16le(name);
        let poff = align8(0x40 + name.len());
        let len = align8(poff + pairs.len());
        let mut a = vec![0u8; len];
        a[0..4].copy_from_slice(&ty.to_le_bytes());
        a[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        a[8] = 1;
        a[9] = (name.len() / 2) as u8;
        a[0x0A..0x0C].copy_from_slice(&0x40u16.to_le_bytes());
        a[0x10..0x18].copy_from_slice(&lowest.to_le_bytes());
        a[0x18..0x20].copy_from_slice(&highest.to_le_bytes());
        a[0x20..0x22].copy_from_slice(&(poff as u16).to_le_bytes());
        a[0x28..0x30].copy_from_slice(&alloc.to_le_bytes());
        a[0x30..0x38].copy_from_slice(&size.to_le_bytes());
        a[0x38..0x40].copy_from_slice(&init.to_le_bytes());
        a[0x40..0x40 + name.len()].copy_from_slice(&name);
        a[poff..poff + pairs.len()].copy_from_slice(pairs);
        a
    }

    fn record(nr: u32, seq: u16, flags: u16, attrs: &[Vec<u8>]) -> Vec<u8> {
        record_ext(nr, seq, flags, 0, attrs)
    }

    /// An extension record of `base` (or a base record when `base` is 0).
    fn record_ext(nr: u32, seq: u16, flags: u16, base: u64, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut r = vec![0u8; 1024];
        r[0x20..0x28].copy_from_slice(&(base | 1 << 48).to_le_bytes());
        r[0..4].copy_from_slice(b"FILE");
        r[0x10..0x12].copy_from_slice(&seq.to_le_bytes());
        r[0x12..0x14].copy_from_slice(&1u16.to_le_bytes());
        r[0x14..0x16].copy_from_slice(&0x38u16.to_le_bytes());
        r[0x16..0x18].copy_from_slice(&flags.to_le_bytes());
        r[0x1C..0x20].copy_from_slice(&1024u32.to_le_bytes());
        r[0x2C..0x30].copy_from_slice(&nr.to_le_bytes());
        let mut pos = 0x38;
        for a in attrs {
            r[pos..pos + a.len()].copy_from_slice(a);
            pos += a.len();
        }
        r[pos..pos + 4].copy_from_slice(&AT_END.to_le_bytes());
        r[0x18..0x1C].copy_from_slice(&((pos + 8) as u32).to_le_bytes());
        protect(&mut r, 1);
        r
    }

    /// A directory index entry for `name` in the root, pointing at record `nr` / `seq`.
    fn index_entry(nr: u64, seq: u16, name: &str) -> Vec<u8> {
        let name16 = utf16le(name);
        let key_len = 0x42 + name16.len();
        let len = align8(0x10 + key_len);
        let mut e = vec![0u8; len];
        e[0..8].copy_from_slice(&(nr | u64::from(seq) << 48).to_le_bytes());
        e[8..10].copy_from_slice(&(len as u16).to_le_bytes());
        e[0x0A..0x0C].copy_from_slice(&(key_len as u16).to_le_bytes());
        e[0x10..0x18].copy_from_slice(&(5u64 | 5 << 48).to_le_bytes());
        e[0x10 + 0x40] = (name16.len() / 2) as u8;
        e[0x10 + 0x41] = 3;
        e[0x10 + 0x42..0x10 + 0x42 + name16.len()].copy_from_slice(&name16);
        e
    }

    fn last_entry() -> Vec<u8> {
        let mut e = vec![0u8; 0x10];
        e[8] = 0x10;
        e[0x0C] = 2;
        e
    }

    /// Index header (entries right after it) + entries.
    fn index_body(entries: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = entries.concat();
        let mut h = vec![0u8; 0x10];
        h[0..4].copy_from_slice(&0x10u32.to_le_bytes());
        h[4..8].copy_from_slice(&((0x10 + body.len()) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&((0x10 + body.len()) as u32).to_le_bytes());
        h.extend_from_slice(&body);
        h
    }

    /// One `$ATTRIBUTE_LIST` entry for an unnamed `$DATA` piece.
    fn list_entry(start_vcn: u64, rec: u64) -> Vec<u8> {
        let mut e = vec![0u8; 0x20];
        e[0..4].copy_from_slice(&AT_DATA.to_le_bytes());
        e[4..6].copy_from_slice(&0x20u16.to_le_bytes());
        e[7] = 0x1A;
        e[8..0x10].copy_from_slice(&start_vcn.to_le_bytes());
        e[0x10..0x18].copy_from_slice(&(rec | 1 << 48).to_le_bytes());
        e
    }

    /// Partition offset of MFT record `nr`: the $MFT is 4 clusters at LCN 4 then 1 at LCN 15.
    fn rec_at(nr: usize) -> usize {
        if nr < 16 {
            4 * CS + nr * 1024
        } else {
            15 * CS + (nr - 16) * 1024
        }
    }

    struct Synth {
        /// $MFT's runlist split over record 0 and extension record 12.
        mft_list: bool,
        /// Record 12 claims to extend record 3 instead.
        mft_list_broken: bool,
        /// $Bitmap's $DATA split over record 6 and extension record 17: 0 valid, 1 record 17
        /// extends another record, 2 the second piece leaves a gap.
        bitmap_list: Option<u8>,
        dirty: bool,
        hiberfil: Option<&'static [u8; 4]>,
        hiberfil_seq: u16,
        /// Put the hiberfil.sys entry in an INDX block instead of the index root.
        in_indx: bool,
        /// Bits to clear from the bitmap.
        clear_bit: Option<usize>,
    }

    impl Default for Synth {
        fn default() -> Synth {
            Synth {
                dirty: false,
                hiberfil: None,
                hiberfil_seq: 1,
                in_indx: false,
                mft_list: false,
                mft_list_broken: false,
                bitmap_list: None,
                clear_bit: None,
            }
        }
    }

    fn put(img: &mut [u8], at: usize, b: &[u8]) {
        img[at..at + b.len()].copy_from_slice(b);
    }

    fn synth(o: &Synth) -> Vec<u8> {
        let mut img = vec![0u8; PART];
        put(&mut img, 0, &boot_sector(512, 8, 2047, 4, 11, 0xF6, 0xF4));
        put(
            &mut img,
            2047 * 512,
            &boot_sector(512, 8, 2047, 4, 11, 0xF6, 0xF4),
        );
        let mut recs: Vec<(u32, Vec<u8>)> = Vec::new();
        let mft_size = 5 * 4096;
        if o.mft_list {
            let list = [list_entry(0, 0), list_entry(4, 12)].concat();
            let piece1 = nonres_piece(
                AT_DATA,
                "",
                &[0x11, 4, 4, 0],
                0,
                3,
                mft_size,
                mft_size,
                mft_size,
            );
            recs.push((
                0,
                record(0, 1, 1, &[resident(AT_ATTRIBUTE_LIST, "", &list), piece1]),
            ));
            let piece2 = nonres_piece(AT_DATA, "", &[0x11, 1, 15, 0], 4, 4, 0, 0, 0);
            let base = if o.mft_list_broken { 3 } else { 0 };
            recs.push((12, record_ext(12, 1, 1, base, &[piece2])));
        } else {
            let pairs = [0x11, 4, 4, 0x11, 1, 11, 0];
            let data = nonres_pairs(AT_DATA, "", &pairs, 4, mft_size, mft_size, mft_size);
            recs.push((0, record(0, 1, 1, &[data])));
        }
        recs.push((1, record(1, 1, 1, &[nonres(AT_DATA, "", 11, 1, 4096)])));
        recs.push((2, record(2, 1, 1, &[nonres(AT_DATA, "", 12, 2, 8192)])));
        let mut volinfo = vec![0u8; 12];
        volinfo[8] = 3;
        volinfo[9] = 1;
        if o.dirty {
            volinfo[0x0A] = 1;
        }
        recs.push((
            3,
            record(
                3,
                1,
                1,
                &[
                    resident(AT_VOLUME_NAME, "", &utf16le("Synth")),
                    resident(AT_VOLUME_INFORMATION, "", &volinfo),
                ],
            ),
        ));
        let hib_entry = index_entry(16, 1, "HIBERFIL.SYS");
        let mut root_attrs = Vec::new();
        let mut ir = vec![0u8; 0x10];
        ir[0..4].copy_from_slice(&0x30u32.to_le_bytes());
        ir[4..8].copy_from_slice(&1u32.to_le_bytes());
        ir[8..12].copy_from_slice(&4096u32.to_le_bytes());
        ir[12] = 1;
        if o.in_indx {
            ir.extend_from_slice(&index_body(&[last_entry()]));
            root_attrs.push(resident(AT_INDEX_ROOT, "$I30", &ir));
            root_attrs.push(nonres(AT_INDEX_ALLOCATION, "$I30", 14, 1, 4096));
            let mut blk = vec![0u8; 4096];
            blk[0..4].copy_from_slice(b"INDX");
            let a = index_entry(17, 1, "aaa.txt");
            let body = index_body(&[a, hib_entry.clone(), last_entry()]);
            blk[0x18..0x18 + body.len()].copy_from_slice(&body);
            // protect() puts the USA at 0x30, inside the header area; move the entries past it.
            let mut moved = vec![0u8; 4096];
            moved[0..0x18].copy_from_slice(&blk[0..0x18]);
            let body_off = 0x40usize;
            moved[0x18..0x1C].copy_from_slice(&((body_off - 0x18) as u32).to_le_bytes());
            let elen = body.len() - 0x10;
            moved[0x1C..0x20].copy_from_slice(&((body_off - 0x18 + elen) as u32).to_le_bytes());
            moved[body_off..body_off + elen].copy_from_slice(&body[0x10..]);
            protect(&mut moved, 3);
            put(&mut img, 14 * CS, &moved);
        } else {
            let mut entries = Vec::new();
            if o.hiberfil.is_some() {
                entries.push(hib_entry);
            }
            entries.push(last_entry());
            ir.extend_from_slice(&index_body(&entries));
            root_attrs.push(resident(AT_INDEX_ROOT, "$I30", &ir));
        }
        recs.push((5, record(5, 5, 3, &root_attrs)));
        if let Some(kind) = o.bitmap_list {
            let vcn2 = if kind == 2 { 2 } else { 1 };
            let list = [list_entry(0, 6), list_entry(vcn2, 17)].concat();
            let piece1 = nonres_piece(AT_DATA, "", &[0x11, 1, 10, 0], 0, 0, 8192, 8192, 8192);
            recs.push((
                6,
                record(6, 6, 1, &[resident(AT_ATTRIBUTE_LIST, "", &list), piece1]),
            ));
            let piece2 = nonres_piece(AT_DATA, "", &[0x11, 1, 21, 0], vcn2, vcn2, 0, 0, 0);
            let base = if kind == 1 { 5 } else { 6 };
            recs.push((17, record_ext(17, 1, 1, base, &[piece2])));
        } else {
            let data = nonres_pairs(AT_DATA, "", &[0x11, 1, 10, 0], 0, 4096, 32, 32);
            recs.push((6, record(6, 6, 1, &[data])));
        }
        if let Some(h) = o.hiberfil {
            recs.push((
                16,
                record(16, o.hiberfil_seq, 1, &[nonres(AT_DATA, "", 20, 1, 4096)]),
            ));
            put(&mut img, 20 * CS, h);
        }
        for (nr, r) in &recs {
            put(&mut img, rec_at(*nr as usize), r);
            if *nr < 4 {
                put(&mut img, 11 * CS + *nr as usize * 1024, r);
            }
        }
        // $LogFile: all 0xFF (empty).
        img[12 * CS..14 * CS].fill(0xFF);
        // $Bitmap.
        let mut bits = vec![0u8; 32];
        let mut set = |c: usize| bits[c / 8] |= 1 << (c % 8);
        for c in [0, 1, 4, 5, 6, 7, 10, 11, 12, 13, 15, 255] {
            set(c);
        }
        if o.bitmap_list.is_some() {
            set(21);
        }
        if o.in_indx {
            set(14);
        }
        if o.hiberfil.is_some() {
            set(20);
        }
        if let Some(c) = o.clear_bit {
            bits[c / 8] &= !(1 << (c % 8));
        }
        put(&mut img, 10 * CS, &bits);
        img
    }

    fn run(img: Vec<u8>) -> Result<FsInfo, FsError> {
        let d = MemDisk::from_vec(img, 512);
        let r = Region::whole(&d);
        let mut info = FsInfo::raw(FsKind::Ntfs);
        fill(&r, &mut info).map(|()| info)
    }

    #[test]
    fn synthetic_volume() {
        let info = run(synth(&Synth::default())).unwrap();
        let used = info.used.unwrap();
        let c = |n: u64| n * 4096;
        assert_eq!(
            used.runs(),
            &[
                (0, c(2)),
                (c(4), c(4)),
                (c(10), c(4)),
                (c(15), c(1)),
                (c(255), c(1))
            ]
        );
        assert_eq!(info.label, "Synth");
        assert_eq!(info.block_size, 4096);
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        assert_eq!(info.min_size, Some(c(16) + c(1)));

        // A partition larger than the volume: the tail stops after the backup boot sector
        // (sector 2047, the partition's old end).
        for extra in [2048usize, 1 << 20] {
            let mut img = synth(&Synth::default());
            img.resize(PART + extra, 0);
            let used = run(img).unwrap().used.unwrap();
            assert_eq!(used.runs().last(), Some(&(c(255), c(1))));
        }
        // ... and keeps a copy of the boot sector in the partition's last sector (ntfsresize's
        // place for it).
        let mut img = synth(&Synth::default());
        let boot = img[..512].to_vec();
        img.resize(PART + (1 << 20), 0);
        let end = img.len();
        img[end - 512..].copy_from_slice(&boot);
        let used = run(img).unwrap().used.unwrap();
        assert_eq!(used.runs().last(), Some(&((end - 512) as u64, 512)));

        // A partial-cluster tail: 2044 sectors, total_sectors 2043, 255 clusters; the tail is
        // 2048 bytes (the last 3 sectors of the volume + the backup boot sector).
        let mut img = synth(&Synth::default());
        img[0x28..0x30].copy_from_slice(&2043u64.to_le_bytes());
        img.truncate(2044 * 512);
        let used = run(img).unwrap().used.unwrap();
        assert_eq!(used.runs().last(), Some(&(c(255), 2048)));
        assert_eq!(used.end(), 2044 * 512);

        // No room for the backup boot sector: a warning, the tail is what there is.
        let mut img = synth(&Synth::default());
        img[0x28..0x30].copy_from_slice(&2048u64.to_le_bytes());
        let info = run(img).unwrap();
        assert!(
            info.warnings[0].contains("no room for its backup boot sector"),
            "{:?}",
            info.warnings
        );
    }

    #[test]
    fn synthetic_attribute_lists() {
        let c = |n: u64| n * 4096;
        // $MFT in two pieces; hiberfil.sys (record 16) is only reachable through the second.
        let info = run(synth(&Synth {
            mft_list: true,
            hiberfil: Some(b"hibr"),
            ..Synth::default()
        }))
        .unwrap();
        assert!(
            info.warnings.len() == 1 && info.warnings[0].contains("hibernated"),
            "{:?}",
            info.warnings
        );
        assert!(covered(info.used.as_ref().unwrap(), c(15), c(1)));
        // A broken extension record: the map still comes from the first extent, with warnings.
        let info = run(synth(&Synth {
            mft_list: true,
            mft_list_broken: true,
            hiberfil: Some(b"hibr"),
            ..Synth::default()
        }))
        .unwrap();
        assert!(
            info.warnings[0].contains("only the first extent"),
            "{:?}",
            info.warnings
        );
        assert!(
            info.warnings[1].contains("could not check"),
            "{:?}",
            info.warnings
        );
        // $Bitmap in two pieces: both runs must be (and are) marked used.
        let info = run(synth(&Synth {
            bitmap_list: Some(0),
            mft_list: true,
            ..Synth::default()
        }))
        .unwrap();
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        let used = info.used.unwrap();
        assert!(covered(&used, c(21), c(1)) && covered(&used, c(10), c(1)));
        // Broken $Bitmap lists are errors.
        for (kind, what) in [
            (1, "not an extension record of record 6"),
            (2, "does not follow VCN 1"),
        ] {
            let e = run(synth(&Synth {
                bitmap_list: Some(kind),
                ..Synth::default()
            }))
            .unwrap_err();
            assert!(e.to_string().contains(what), "{e}");
        }
        // The list parser.
        let list = [list_entry(0, 6), list_entry(3, 17)].concat();
        let e = parse_attr_list(&list).unwrap();
        assert_eq!(
            e[1],
            ListEntry {
                ty: AT_DATA,
                named: false,
                start_vcn: 3,
                mft_ref: 17 | 1 << 48
            }
        );
        assert!(parse_attr_list(&list[..0x30]).is_err());
        let mut zero_len = list.clone();
        zero_len[0x24] = 0;
        assert!(parse_attr_list(&zero_len).is_err());
        assert_eq!(parse_attr_list(&[]).unwrap(), vec![]);
    }

    #[test]
    fn synthetic_states() {
        let w = |o: Synth| run(synth(&o)).unwrap().warnings;
        let dirty = w(Synth {
            dirty: true,
            ..Synth::default()
        });
        assert!(dirty.len() == 1 && dirty[0].contains("dirty"), "{dirty:?}");
        for magic in [b"hibr", b"HIBR"] {
            let h = w(Synth {
                hiberfil: Some(magic),
                ..Synth::default()
            });
            assert!(h.len() == 1 && h[0].contains("hibernated"), "{h:?}");
            let h = w(Synth {
                hiberfil: Some(magic),
                in_indx: true,
                ..Synth::default()
            });
            assert!(h.len() == 1 && h[0].contains("hibernated"), "{h:?}");
        }
        assert!(w(Synth {
            hiberfil: Some(b"\0\0\0\0"),
            ..Synth::default()
        })
        .is_empty());
        assert!(w(Synth {
            hiberfil: Some(b"wake"),
            in_indx: true,
            ..Synth::default()
        })
        .is_empty());
        // A stale entry: the record's sequence number moved on.
        assert!(w(Synth {
            hiberfil: Some(b"hibr"),
            hiberfil_seq: 2,
            ..Synth::default()
        })
        .is_empty());
    }

    /// Writes restart pages into the synthetic $LogFile (LCN 12, 2 pages of 4 KiB).
    fn with_log(pages: &[(usize, u16, u16, u16, u16, u64)]) -> Vec<String> {
        let mut img = synth(&Synth::default());
        for &(at, major, minor, in_use, flags, lsn) in pages {
            let mut p = vec![0u8; 4096];
            // The USA (at 0x30, 9 entries) ends at 0x42: the restart area goes after it.
            p[0..4].copy_from_slice(b"RSTR");
            p[0x10..0x14].copy_from_slice(&4096u32.to_le_bytes());
            p[0x14..0x18].copy_from_slice(&4096u32.to_le_bytes());
            p[0x18..0x1A].copy_from_slice(&0x48u16.to_le_bytes());
            p[0x1A..0x1C].copy_from_slice(&minor.to_le_bytes());
            p[0x1C..0x1E].copy_from_slice(&major.to_le_bytes());
            p[0x48..0x50].copy_from_slice(&lsn.to_le_bytes());
            p[0x54..0x56].copy_from_slice(&in_use.to_le_bytes());
            p[0x56..0x58].copy_from_slice(&flags.to_le_bytes());
            protect(&mut p, 9);
            put(&mut img, 12 * CS + at, &p);
        }
        run(img).unwrap().warnings
    }

    #[test]
    fn synthetic_logfile() {
        assert!(with_log(&[(0, 1, 1, 0xFFFF, 0, 5), (4096, 1, 1, 0xFFFF, 0, 4)]).is_empty());
        assert!(with_log(&[(0, 1, 1, 0, 2, 5), (4096, 1, 1, 0, 2, 5)]).is_empty());
        // The newer page (the second) says unclean.
        let w = with_log(&[(0, 1, 1, 0xFFFF, 0, 5), (4096, 1, 1, 0, 0, 6)]);
        assert!(
            w.len() == 1 && w[0].contains("did not shut down cleanly"),
            "{w:?}"
        );
        // The older one does: ignored.
        let w = with_log(&[(0, 1, 1, 0xFFFF, 0, 7), (4096, 1, 1, 0, 0, 6)]);
        assert!(w.is_empty(), "{w:?}");
        let w = with_log(&[(0, 2, 0, 0xFFFF, 2, 5), (4096, 2, 0, 0xFFFF, 2, 5)]);
        assert!(w.len() == 1 && w[0].contains("Fast Startup"), "{w:?}");
        // Only the second copy survives.
        let w = with_log(&[(4096, 1, 1, 0, 0, 6)]);
        assert!(
            w.len() == 1 && w[0].contains("did not shut down cleanly"),
            "{w:?}"
        );
        // Unknown version: cannot tell.
        let w = with_log(&[(0, 3, 0, 0xFFFF, 2, 5)]);
        assert!(w.len() == 1 && w[0].contains("could not tell"), "{w:?}");
    }

    #[test]
    fn synthetic_refusals() {
        // A system file's cluster marked free.
        for (bit, name) in [
            (0, "LCN 0"),
            (6, "$MFT"),
            (15, "$MFT"),
            (11, "$MFTMirr"),
            (13, "$LogFile"),
            (10, "$Bitmap"),
        ] {
            let e = run(synth(&Synth {
                clear_bit: Some(bit),
                ..Synth::default()
            }))
            .unwrap_err();
            let s = e.to_string();
            assert!(
                matches!(e, FsError::Corrupt { .. }) && s.contains(name),
                "{s}"
            );
            assert!(s.contains(&format!("{:#x}", 10 * CS + bit / 8)), "{s}");
        }
        // A torn $Bitmap record: error at the end of its first sector.
        let mut img = synth(&Synth::default());
        img[4 * CS + 6 * 1024 + 510] ^= 1;
        let s = run(img).unwrap_err().to_string();
        assert!(
            s.contains("torn") && s.contains(&format!("{:#x}", 4 * CS + 6 * 1024 + 510)),
            "{s}"
        );
        // The volume larger than the partition.
        let mut img = synth(&Synth::default());
        img.truncate(PART - 1024);
        let s = run(img).unwrap_err().to_string();
        assert!(s.contains("truncated partition"), "{s}");
    }

    // --- Never panic: mutations and truncations ---------------------------------------------

    /// A read-only disk over borrowed bytes with one byte replaced, recording what is read.
    struct Mutated<'a> {
        data: &'a [u8],
        at: usize,
        val: u8,
        reads: Option<Mutex<Vec<(u64, usize)>>>,
    }

    impl BlockDev for Mutated<'_> {
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
            let src = start
                .checked_add(buf.len())
                .and_then(|end| self.data.get(start..end))
                .ok_or(io::ErrorKind::UnexpectedEof)?;
            buf.copy_from_slice(src);
            if (start..start + buf.len()).contains(&self.at) {
                buf[self.at - start] = self.val;
            }
            if let Some(r) = &self.reads {
                r.lock().unwrap().push((offset, buf.len()));
            }
            Ok(())
        }
        fn write_all_at(&self, _: &[u8], _: u64) -> io::Result<()> {
            Err(io::ErrorKind::PermissionDenied.into())
        }
        fn len(&self) -> u64 {
            self.data.len() as u64
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

    fn fill_on(d: &dyn BlockDev, len: u64) -> Result<FsInfo, FsError> {
        let r = Region::new(d, 0, len);
        let mut info = FsInfo::raw(FsKind::Ntfs);
        fill(&r, &mut info).map(|()| info)
    }

    /// Every byte `fill` reads from the pristine `img` is flipped (XOR 0xFF), one at a time,
    /// then `extra` seeded-random (byte, value) replacements among them; then truncations
    /// (every 512-byte length up to 64 KiB, the last 16 sectors, every 256 KiB, a few odd
    /// lengths). `fill` must return without panicking, and any map it returns must stay inside
    /// the partition. Returns the number of runs.
    fn sweep(img: &[u8], seed: u64, extra: usize) -> usize {
        let len = img.len() as u64;
        let rec = Mutated {
            data: img,
            at: usize::MAX,
            val: 0,
            reads: Some(Mutex::new(Vec::new())),
        };
        fill_on(&rec, len).expect("the pristine image must map");
        let mut bytes: Vec<usize> = Vec::new();
        for (off, n) in rec.reads.unwrap().into_inner().unwrap() {
            bytes.extend(off as usize..off as usize + n);
        }
        bytes.sort_unstable();
        bytes.dedup();
        let mut rng = seed | 1;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let check = |at: usize, val: u8, l: u64| {
            if let Ok(info) = fill_on(
                &Mutated {
                    data: img,
                    at,
                    val,
                    reads: None,
                },
                l,
            ) {
                assert!(info.used.unwrap().end() <= l);
            }
        };
        for &at in &bytes {
            check(at, img[at] ^ 0xFF, len);
        }
        for _ in 0..extra {
            let at = bytes[next() as usize % bytes.len()];
            check(at, next() as u8, len);
        }
        let lens: Vec<u64> = (0..=len.min(64 << 10))
            .step_by(512)
            .chain((0..16).map(|k| len - k * 512))
            .chain((0..len).step_by(256 << 10))
            .chain([1, 511, 513, len - 1])
            .collect();
        for &l in &lens {
            check(usize::MAX, 0, l);
        }
        bytes.len() + extra + lens.len()
    }

    #[test]
    fn synthetic_never_panics() {
        // One volume with every optional structure: dirty flag, hiberfil.sys in an INDX block,
        // $MFT and $Bitmap split by attribute lists, and a restart page in $LogFile.
        let mut img = synth(&Synth {
            hiberfil: Some(b"hibr"),
            in_indx: true,
            dirty: true,
            mft_list: true,
            bitmap_list: Some(0),
            ..Synth::default()
        });
        let log = 12 * CS;
        img[log..log + 4].copy_from_slice(b"RSTR");
        img[log + 0x10..log + 0x14].copy_from_slice(&4096u32.to_le_bytes());
        img[log + 0x14..log + 0x18].copy_from_slice(&4096u32.to_le_bytes());
        img[log + 0x18] = 0x48;
        img[log + 0x1A] = 1;
        img[log + 0x1C] = 1;
        let info = run(img.clone()).unwrap();
        assert_eq!(info.warnings.len(), 3, "{:?}", info.warnings);
        assert!(sweep(&img, 0x9E37_79B9_7F4A_7C15, 5000) > 10_000);
    }

    /// The same over a real volume made by `mkntfs` (skipped when it is not installed).
    #[test]
    fn mkntfs_image_never_panics() {
        let dir = std::env::temp_dir().join(format!("ferroclone-ntfs-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.img");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        let out = std::process::Command::new("mkntfs")
            .args(["-F", "-Q", "-q", "-L", "Unit"])
            .arg(&path)
            .output();
        let ok = matches!(&out, Ok(o) if o.status.success());
        if !ok {
            eprintln!("mkntfs is not available ({out:?}): skipping");
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        let img = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let info = run(img.clone()).unwrap();
        assert_eq!(info.label, "Unit");
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        let used = info.used.unwrap();
        // The tail holds the backup boot sector.
        assert_eq!(used.end(), 8 << 20);
        assert!(sweep(&img, 42, 5000) > 10_000);
    }
}
