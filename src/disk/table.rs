//! Partition tables: GPT (512 and 4096-byte sectors, primary or backup header), MBR with the
//! EBR chain of an extended partition, or none (a filesystem on the whole device).
//!
//! Parsed by hand rather than through the `gpt` and `mbrman` crates: we need the raw sectors of
//! every table structure for the image, to say which GPT header was used when one is damaged,
//! to bound every allocation and loop (EBR chains), and to never panic on hostile bytes
//! (mbrman's `Index` panics; gpt defaults to 512-byte sectors). See docs/ARCHITECTURE.md.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::fmt;

use serde::Serialize;

use crate::bytes::{guid_mixed, le16, le32, le64, utf16_field};
use crate::disk::Region;

/// Largest GPT partition array we accept (the usual one is 16 KiB).
const MAX_GPT_ARRAY_BYTES: u64 = 4 << 20;
/// Most logical partitions we follow in an EBR chain.
const MAX_LOGICAL: usize = 256;

/// Which table a disk has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// GUID partition table.
    Gpt,
    /// DOS/MBR table, possibly with an extended partition.
    Mbr,
    /// No table: a filesystem (or nothing) on the whole device.
    None,
}

impl fmt::Display for TableKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableKind::Gpt => "gpt",
            TableKind::Mbr => "mbr",
            TableKind::None => "none",
        })
    }
}

/// One partition, in bytes from the start of the disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// 1-based number as Linux names it (GPT: array slot + 1; MBR: 1–4 primary, 5… logical).
    pub number: u32,
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// GPT type GUID, or the MBR type byte as `0x83`.
    pub type_id: String,
    /// GPT partition name (empty for MBR).
    pub name: String,
    /// GPT unique partition GUID.
    pub guid: Option<String>,
    /// MBR boot flag, or GPT legacy-BIOS-bootable attribute.
    pub bootable: bool,
}

impl Partition {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }
}

/// GPT layout facts a restore needs to move the backup header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GptLayout {
    /// LBA of the primary header (1).
    pub primary_lba: u64,
    /// LBA of the backup header as recorded.
    pub backup_lba: u64,
    /// First usable LBA.
    pub first_usable: u64,
    /// Last usable LBA.
    pub last_usable: u64,
    /// LBA of the primary partition array.
    pub primary_entries_lba: u64,
    /// Entries in the array.
    pub num_entries: u32,
    /// Bytes per entry.
    pub entry_size: u32,
    /// Which header the table was read from.
    pub used_header: &'static str,
}

/// A parsed partition table.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionTable {
    /// GPT, MBR or none.
    pub kind: TableKind,
    /// Logical sector size the table was read with.
    pub sector_size: u32,
    /// GPT disk GUID or MBR signature (`0x1234abcd`).
    pub disk_id: Option<String>,
    /// Data partitions (not the extended container), by number.
    pub partitions: Vec<Partition>,
    /// The extended partition container of an MBR disk, as (start, size) in bytes.
    pub extended: Option<(u64, u64)>,
    /// Byte ranges holding table structures outside the partitions: MBR, GPT headers and
    /// arrays, EBR sectors. Sorted, may touch.
    pub table_areas: Vec<(u64, u64)>,
    /// GPT details.
    pub gpt: Option<GptLayout>,
    /// Things the user should know (a damaged header, a hybrid MBR).
    pub warnings: Vec<String>,
}

/// Why a table could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// Reading the disk failed.
    #[error("reading the partition table at byte {offset:#x}: {source}")]
    Io {
        /// Where.
        offset: u64,
        /// Why.
        source: std::io::Error,
    },
    /// A structure is damaged.
    #[error("{what} at byte {offset:#x}: {detail}")]
    Corrupt {
        /// Which structure.
        what: &'static str,
        /// Where.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// Partitions overlap or leave the disk.
    #[error("partition {number}: {detail}")]
    BadPartition {
        /// Which partition.
        number: u32,
        /// What is wrong.
        detail: String,
    },
}

fn read(disk: &Region<'_>, offset: u64, len: u64) -> Result<Vec<u8>, TableError> {
    let n = usize::try_from(len).map_err(|_| TableError::Corrupt {
        what: "table read",
        offset,
        detail: format!("length {len} too large"),
    })?;
    disk.read_vec(offset, n)
        .map_err(|source| TableError::Io { offset, source })
}

/// Reads the partition table of `disk` (a whole-disk region) with its logical sector size.
pub fn read_table(disk: &Region<'_>) -> Result<PartitionTable, TableError> {
    let ss = u64::from(disk.logical_sector());
    if !(512..=65536).contains(&ss) || !ss.is_power_of_two() {
        return Err(TableError::Corrupt {
            what: "disk",
            offset: 0,
            detail: format!("logical sector size {ss} is not a power of two from 512 to 65536"),
        });
    }
    if disk.len() < ss.saturating_mul(2) {
        return Ok(no_table(disk.len(), ss));
    }
    let mbr = read(disk, 0, ss)?;
    let has_55aa = le16(&mbr, 510) == Some(0xAA55);
    let gpt_sig = read(disk, ss, 8)?;
    let protective = has_55aa && mbr_entries(&mbr).iter().any(|e| e.ptype == 0xEE);
    if gpt_sig == b"EFI PART" || protective {
        return read_gpt(disk, &mbr);
    }
    // A backup GPT at the end with a wiped start still means GPT.
    if has_55aa && looks_like_mbr(&mbr, disk.len().checked_div(ss).unwrap_or(0)) {
        return read_mbr(disk, &mbr);
    }
    Ok(no_table(disk.len(), ss))
}

fn no_table(len: u64, ss: u64) -> PartitionTable {
    PartitionTable {
        kind: TableKind::None,
        sector_size: u32::try_from(ss).unwrap_or(0),
        disk_id: None,
        partitions: if len > 0 {
            vec![Partition {
                number: 1,
                start: 0,
                size: len,
                type_id: String::new(),
                name: String::new(),
                guid: None,
                bootable: false,
            }]
        } else {
            Vec::new()
        },
        extended: None,
        table_areas: Vec::new(),
        gpt: None,
        warnings: Vec::new(),
    }
}

#[derive(Debug, Clone, Copy)]
struct MbrEntry {
    status: u8,
    ptype: u8,
    lba: u32,
    sectors: u32,
}

fn mbr_entries(sector: &[u8]) -> [MbrEntry; 4] {
    let entry = |base: usize| {
        let e = sector.get(base..).unwrap_or(&[]);
        MbrEntry {
            status: e.first().copied().unwrap_or(0),
            ptype: e.get(4).copied().unwrap_or(0),
            lba: le32(e, 8).unwrap_or(0),
            sectors: le32(e, 12).unwrap_or(0),
        }
    };
    [entry(446), entry(462), entry(478), entry(494)]
}

/// A boot sector of a filesystem also ends in 55AA; an MBR has sane status bytes, at least one
/// entry, and no filesystem signature where a volume boot record has one.
fn looks_like_mbr(sector: &[u8], disk_sectors: u64) -> bool {
    let oem = sector.get(3..11).unwrap_or(&[]);
    if oem == b"NTFS    " || oem == b"EXFAT   " || oem == b"-FVE-FS-" {
        return false;
    }
    let fat_sig = sector.get(0x36..0x3B) == Some(b"FAT12")
        || sector.get(0x36..0x3B) == Some(b"FAT16")
        || sector.get(0x52..0x57) == Some(b"FAT32");
    if fat_sig {
        return false;
    }
    let entries = mbr_entries(sector);
    let mut any = false;
    for e in entries {
        if e.status != 0 && e.status != 0x80 {
            return false;
        }
        if e.ptype != 0 {
            any = true;
            if e.lba == 0 || u64::from(e.lba) >= disk_sectors {
                return false;
            }
        }
    }
    any
}

fn is_extended(t: u8) -> bool {
    matches!(t, 0x05 | 0x0F | 0x85)
}

fn read_mbr(disk: &Region<'_>, mbr: &[u8]) -> Result<PartitionTable, TableError> {
    let ss = u64::from(disk.logical_sector());
    let mut parts = Vec::new();
    let mut areas = vec![(0, ss)];
    let mut extended = None;
    for (i, e) in mbr_entries(mbr).iter().enumerate() {
        if e.ptype == 0 || e.sectors == 0 {
            continue;
        }
        let number = u32::try_from(i).unwrap_or(0).saturating_add(1);
        // 32-bit LBAs times a sector size of at most 64 KiB: no overflow.
        let start = u64::from(e.lba).saturating_mul(ss);
        let size = u64::from(e.sectors).saturating_mul(ss);
        if is_extended(e.ptype) {
            if extended.is_some() {
                return Err(TableError::BadPartition {
                    number,
                    detail: "a second extended partition".into(),
                });
            }
            extended = Some((start, size));
            read_ebr_chain(
                disk,
                u64::from(e.lba),
                u64::from(e.sectors),
                &mut parts,
                &mut areas,
            )?;
        } else {
            parts.push(Partition {
                number,
                start,
                size,
                type_id: format!("0x{:02x}", e.ptype),
                name: String::new(),
                guid: None,
                bootable: e.status == 0x80,
            });
        }
    }
    parts.sort_by_key(|p| p.number);
    let mut table = PartitionTable {
        kind: TableKind::Mbr,
        sector_size: u32::try_from(ss).unwrap_or(0),
        disk_id: le32(mbr, 440).map(|s| format!("0x{s:08x}")),
        partitions: parts,
        extended,
        table_areas: areas,
        gpt: None,
        warnings: Vec::new(),
    };
    check_partitions(&mut table, disk.len(), None)?;
    Ok(table)
}

fn read_ebr_chain(
    disk: &Region<'_>,
    ext_lba: u64,
    ext_sectors: u64,
    parts: &mut Vec<Partition>,
    areas: &mut Vec<(u64, u64)>,
) -> Result<(), TableError> {
    let ss = u64::from(disk.logical_sector());
    let ext_end = ext_lba.saturating_add(ext_sectors);
    let mut ebr_lba = ext_lba;
    let mut seen = Vec::new();
    let mut number = 5u32;
    loop {
        if seen.contains(&ebr_lba) {
            return Err(TableError::Corrupt {
                what: "EBR chain",
                offset: ebr_lba.saturating_mul(ss),
                detail: "the chain loops back to an EBR already read".into(),
            });
        }
        if seen.len() >= MAX_LOGICAL {
            return Err(TableError::Corrupt {
                what: "EBR chain",
                offset: ebr_lba.saturating_mul(ss),
                detail: format!("more than {MAX_LOGICAL} logical partitions"),
            });
        }
        if ebr_lba < ext_lba || ebr_lba >= ext_end {
            return Err(TableError::Corrupt {
                what: "EBR chain",
                offset: ebr_lba.saturating_mul(ss),
                detail: "an EBR outside its extended partition".into(),
            });
        }
        seen.push(ebr_lba);
        let at = ebr_lba.saturating_mul(ss);
        let sector = read(disk, at, ss)?;
        if le16(&sector, 510) != Some(0xAA55) {
            return Err(TableError::Corrupt {
                what: "EBR",
                offset: at,
                detail: "missing 55AA signature".into(),
            });
        }
        areas.push((at, ss));
        let [logical, next, ..] = mbr_entries(&sector);
        if logical.ptype != 0 && logical.sectors != 0 {
            let start_lba = ebr_lba.saturating_add(u64::from(logical.lba));
            parts.push(Partition {
                number,
                start: start_lba.saturating_mul(ss),
                size: u64::from(logical.sectors).saturating_mul(ss),
                type_id: format!("0x{:02x}", logical.ptype),
                name: String::new(),
                guid: None,
                bootable: logical.status == 0x80,
            });
            number = number.saturating_add(1);
        }
        if next.ptype == 0 || next.lba == 0 {
            return Ok(());
        }
        ebr_lba = ext_lba.saturating_add(u64::from(next.lba));
    }
}

struct GptHeader {
    my_lba: u64,
    alt_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: String,
    entries_lba: u64,
    num_entries: u32,
    entry_size: u32,
    entries_crc: u32,
}

fn parse_gpt_header(buf: &[u8], at: u64) -> Result<GptHeader, String> {
    if buf.get(0..8) != Some(b"EFI PART") {
        return Err("no EFI PART signature".into());
    }
    let hsize = le32(buf, 12).ok_or("short header")?;
    if !(92..=buf.len()).contains(&usize::try_from(hsize).unwrap_or(usize::MAX)) {
        return Err(format!("header size {hsize} out of range"));
    }
    let stored = le32(buf, 16).ok_or("short header")?;
    let mut copy = buf
        .get(..usize::try_from(hsize).unwrap_or(usize::MAX))
        .ok_or("short header")?
        .to_vec();
    if let Some(field) = copy.get_mut(16..20) {
        field.fill(0);
    }
    let actual = crc32fast::hash(&copy);
    if stored != actual {
        return Err(format!(
            "header CRC32 mismatch (stored {stored:#010x}, computed {actual:#010x})"
        ));
    }
    let h = GptHeader {
        my_lba: le64(buf, 24).ok_or("short header")?,
        alt_lba: le64(buf, 32).ok_or("short header")?,
        first_usable: le64(buf, 40).ok_or("short header")?,
        last_usable: le64(buf, 48).ok_or("short header")?,
        disk_guid: guid_mixed(buf, 56).ok_or("short header")?,
        entries_lba: le64(buf, 72).ok_or("short header")?,
        num_entries: le32(buf, 80).ok_or("short header")?,
        entry_size: le32(buf, 84).ok_or("short header")?,
        entries_crc: le32(buf, 88).ok_or("short header")?,
    };
    if h.my_lba != at {
        return Err(format!(
            "header says it is at LBA {} but was read at LBA {at}",
            h.my_lba
        ));
    }
    if h.entry_size < 128 || h.entry_size % 8 != 0 {
        return Err(format!("entry size {} invalid", h.entry_size));
    }
    if u64::from(h.num_entries).saturating_mul(u64::from(h.entry_size)) > MAX_GPT_ARRAY_BYTES {
        return Err(format!(
            "partition array of {} entries too large",
            h.num_entries
        ));
    }
    if h.first_usable > h.last_usable {
        return Err("first usable LBA after last usable LBA".into());
    }
    Ok(h)
}

fn read_gpt(disk: &Region<'_>, mbr: &[u8]) -> Result<PartitionTable, TableError> {
    let ss = u64::from(disk.logical_sector());
    let last_lba = disk.len().checked_div(ss).unwrap_or(0).saturating_sub(1);
    let primary = read(disk, ss, ss)?;
    let mut warnings = Vec::new();
    let try_header = |buf: &[u8], lba: u64| -> Result<(GptHeader, Vec<u8>), String> {
        let h = parse_gpt_header(buf, lba)?;
        // Bounded by MAX_GPT_ARRAY_BYTES in parse_gpt_header.
        let array_len = u64::from(h.num_entries).saturating_mul(u64::from(h.entry_size));
        let array_end = h
            .entries_lba
            .checked_mul(ss)
            .and_then(|o| o.checked_add(array_len))
            .ok_or("partition array offset overflows")?;
        if array_end > disk.len() {
            return Err(format!(
                "partition array at LBA {} is beyond the disk",
                h.entries_lba
            ));
        }
        let array = disk
            .read_vec(
                h.entries_lba.saturating_mul(ss),
                usize::try_from(array_len).unwrap_or(usize::MAX),
            )
            .map_err(|e| format!("reading the partition array: {e}"))?;
        let crc = crc32fast::hash(&array);
        if crc != h.entries_crc {
            return Err(format!(
                "partition array CRC32 mismatch (stored {:#010x}, computed {crc:#010x})",
                h.entries_crc
            ));
        }
        Ok((h, array))
    };
    let (header, array, used) = match try_header(&primary, 1) {
        Ok((h, a)) => {
            // Check the backup too, to warn early.
            let alt = h.alt_lba.min(last_lba);
            let backup_ok = read(disk, alt.saturating_mul(ss), ss)
                .ok()
                .map(|b| try_header(&b, alt).is_ok())
                .unwrap_or(false);
            if !backup_ok {
                warnings.push(format!(
                    "the backup GPT header (LBA {}) is missing or damaged; the primary was used",
                    h.alt_lba
                ));
            } else if h.alt_lba != last_lba {
                warnings.push(format!(
                    "the backup GPT header is at LBA {} but the disk ends at LBA {last_lba}",
                    h.alt_lba
                ));
            }
            (h, a, "primary")
        }
        Err(primary_err) => {
            let backup = read(disk, last_lba.saturating_mul(ss), ss)?;
            match try_header(&backup, last_lba) {
                Ok((h, a)) => {
                    warnings.push(format!(
                        "the primary GPT header (LBA 1) is damaged ({primary_err}); \
                         the backup header at LBA {last_lba} was used"
                    ));
                    (h, a, "backup")
                }
                Err(backup_err) => {
                    return Err(TableError::Corrupt {
                        what: "GPT",
                        offset: ss,
                        detail: format!(
                            "primary header: {primary_err}; backup header at LBA {last_lba}: {backup_err}"
                        ),
                    })
                }
            }
        }
    };
    let entries = mbr_entries(mbr);
    if entries.iter().any(|e| e.ptype != 0 && e.ptype != 0xEE) {
        warnings.push("hybrid MBR: the protective MBR also lists partitions".into());
    }
    let mut parts = Vec::new();
    let entry_size = usize::try_from(header.entry_size).unwrap_or(usize::MAX);
    for (i, e) in array.chunks_exact(entry_size).enumerate() {
        let type_guid = guid_mixed(e, 0).unwrap_or_default();
        if e.get(0..16).is_some_and(|t| t.iter().all(|&b| b == 0)) {
            continue;
        }
        let first = le64(e, 32).unwrap_or(0);
        let last = le64(e, 40).unwrap_or(0);
        let number = u32::try_from(i).unwrap_or(u32::MAX).saturating_add(1);
        if last < first {
            return Err(TableError::BadPartition {
                number,
                detail: format!("ends (LBA {last}) before it starts (LBA {first})"),
            });
        }
        let attrs = le64(e, 48).unwrap_or(0);
        let start = first.checked_mul(ss).ok_or(TableError::BadPartition {
            number,
            detail: "start overflows".into(),
        })?;
        let size = last
            .saturating_sub(first)
            .saturating_add(1)
            .checked_mul(ss)
            .ok_or(TableError::BadPartition {
                number,
                detail: "size overflows".into(),
            })?;
        parts.push(Partition {
            number,
            start,
            size,
            type_id: type_guid,
            name: utf16_field(e, 56, 72),
            guid: guid_mixed(e, 16),
            bootable: attrs & 4 != 0,
        });
    }
    let array_bytes = u64::from(header.num_entries).saturating_mul(u64::from(header.entry_size));
    let array_sectors = array_bytes.div_ceil(ss);
    // Both headers and arrays, wherever the one read says they are.
    let (primary_entries, backup_lba) = if used == "primary" {
        (header.entries_lba, header.alt_lba.min(last_lba))
    } else {
        (2, header.my_lba)
    };
    let backup_entries = backup_lba.saturating_sub(array_sectors);
    // All inside the disk (checked when the headers were read), so nothing saturates.
    let mut areas = vec![
        (0, ss.saturating_mul(2)),
        (
            primary_entries.saturating_mul(ss),
            array_sectors.saturating_mul(ss),
        ),
        (
            backup_entries.saturating_mul(ss),
            backup_lba
                .saturating_sub(backup_entries)
                .saturating_add(1)
                .saturating_mul(ss),
        ),
    ];
    areas.sort_unstable();
    let mut table = PartitionTable {
        kind: TableKind::Gpt,
        sector_size: u32::try_from(ss).unwrap_or(0),
        disk_id: Some(header.disk_guid.clone()),
        partitions: parts,
        extended: None,
        table_areas: areas,
        gpt: Some(GptLayout {
            primary_lba: 1,
            backup_lba,
            first_usable: header.first_usable,
            last_usable: header.last_usable,
            primary_entries_lba: primary_entries,
            num_entries: header.num_entries,
            entry_size: header.entry_size,
            used_header: used,
        }),
        warnings,
    };
    let usable = (
        header.first_usable.saturating_mul(ss),
        header.last_usable.saturating_add(1).saturating_mul(ss),
    );
    check_partitions(&mut table, disk.len(), Some(usable))?;
    Ok(table)
}

/// Refuses partitions that leave the disk (or the GPT usable area) or overlap each other.
fn check_partitions(
    table: &mut PartitionTable,
    disk_len: u64,
    usable: Option<(u64, u64)>,
) -> Result<(), TableError> {
    for p in &table.partitions {
        if p.size == 0 {
            return Err(TableError::BadPartition {
                number: p.number,
                detail: "has zero size".into(),
            });
        }
        if p.start.checked_add(p.size).is_none_or(|end| end > disk_len) {
            return Err(TableError::BadPartition {
                number: p.number,
                detail: format!(
                    "ends at byte {:#x}, beyond the end of the disk ({disk_len:#x} bytes)",
                    p.start.saturating_add(p.size)
                ),
            });
        }
        if let Some((lo, hi)) = usable {
            if p.start < lo || p.end() > hi {
                return Err(TableError::BadPartition {
                    number: p.number,
                    detail: "lies outside the GPT usable area".into(),
                });
            }
        }
    }
    let mut sorted: Vec<&Partition> = table.partitions.iter().collect();
    sorted.sort_by_key(|p| p.start);
    for w in sorted.windows(2) {
        if let [a, b] = w {
            if a.end() > b.start {
                return Err(TableError::BadPartition {
                    number: b.number,
                    detail: format!("overlaps partition {}", a.number),
                });
            }
        }
    }
    Ok(())
}

impl PartitionTable {
    /// The boot area: everything before the first partition (MBR boot code, the post-MBR gap
    /// where GRUB lives, the primary GPT), or the first sector alone when no partition exists.
    pub fn boot_area(&self) -> (u64, u64) {
        match self.kind {
            TableKind::None => (0, 0),
            _ => {
                let first = self
                    .partitions
                    .iter()
                    .map(|p| p.start)
                    .chain(self.extended.map(|e| e.0))
                    .min()
                    .unwrap_or(u64::from(self.sector_size));
                (0, first)
            }
        }
    }

    /// A partition by number.
    pub fn partition(&self, number: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.number == number)
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used
)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;

    const SS: usize = 512;

    fn put_mbr_entry(sector: &mut [u8], i: usize, status: u8, t: u8, lba: u32, n: u32) {
        let b = 446 + i * 16;
        sector[b] = status;
        sector[b + 4] = t;
        sector[b + 8..b + 12].copy_from_slice(&lba.to_le_bytes());
        sector[b + 12..b + 16].copy_from_slice(&n.to_le_bytes());
        sector[510] = 0x55;
        sector[511] = 0xAA;
    }

    fn mbr_disk() -> Vec<u8> {
        let mut d = vec![0u8; 4096 * SS];
        d[440..444].copy_from_slice(&0x1234abcdu32.to_le_bytes());
        put_mbr_entry(&mut d[..SS], 0, 0x80, 0x83, 2048, 1000);
        put_mbr_entry(&mut d[..SS], 1, 0, 0x05, 3048, 1048);
        // EBR 1 at 3048: logical at +2 for 500, next at ext+600.
        let e1 = 3048 * SS;
        put_mbr_entry(&mut d[e1..e1 + SS], 0, 0, 0x83, 2, 500);
        put_mbr_entry(&mut d[e1..e1 + SS], 1, 0, 0x05, 600, 400);
        let e2 = (3048 + 600) * SS;
        put_mbr_entry(&mut d[e2..e2 + SS], 0, 0, 0x82, 2, 300);
        d
    }

    fn parse(d: Vec<u8>, ss: u32) -> Result<PartitionTable, TableError> {
        let disk = MemDisk::from_vec(d, ss);
        read_table(&Region::whole(&disk))
    }

    #[test]
    fn mbr_with_logicals() {
        let t = parse(mbr_disk(), 512).unwrap();
        assert_eq!(t.kind, TableKind::Mbr);
        assert_eq!(t.disk_id.as_deref(), Some("0x1234abcd"));
        let nums: Vec<u32> = t.partitions.iter().map(|p| p.number).collect();
        assert_eq!(nums, vec![1, 5, 6]);
        assert_eq!(t.partition(5).unwrap().start, 3050 * 512);
        assert_eq!(t.partition(6).unwrap().type_id, "0x82");
        assert!(t.partition(1).unwrap().bootable);
        assert_eq!(t.table_areas.len(), 3);
        assert_eq!(t.boot_area(), (0, 2048 * 512));
    }

    #[test]
    fn ebr_loop_is_an_error() {
        let mut d = mbr_disk();
        let e2 = (3048 + 600) * SS;
        put_mbr_entry(&mut d[e2..e2 + SS], 1, 0, 0x05, 0, 400);
        // next = ext + 0 would end the chain (lba 0); point it back at EBR 1 by a nonzero trick:
        let e1 = 3048 * SS;
        put_mbr_entry(&mut d[e1..e1 + SS], 1, 0, 0x05, 600, 400);
        put_mbr_entry(&mut d[e2..e2 + SS], 1, 0, 0x05, 600, 400);
        let err = parse(d, 512).unwrap_err();
        assert!(err.to_string().contains("loops"), "{err}");
    }

    #[test]
    fn ebr_outside_extended_is_an_error() {
        let mut d = mbr_disk();
        let e1 = 3048 * SS;
        put_mbr_entry(&mut d[e1..e1 + SS], 1, 0, 0x05, 5000, 400);
        assert!(parse(d, 512).is_err());
    }

    #[test]
    fn overlapping_and_beyond_end() {
        let mut d = vec![0u8; 4096 * SS];
        put_mbr_entry(&mut d[..SS], 0, 0, 0x83, 2048, 1000);
        put_mbr_entry(&mut d[..SS], 1, 0, 0x83, 2500, 100);
        let e = parse(d, 512).unwrap_err();
        assert!(e.to_string().contains("overlaps"), "{e}");
        let mut d = vec![0u8; 4096 * SS];
        put_mbr_entry(&mut d[..SS], 0, 0, 0x83, 2048, 3000);
        let e = parse(d, 512).unwrap_err();
        assert!(e.to_string().contains("beyond the end"), "{e}");
    }

    #[test]
    fn fat_boot_sector_is_no_table() {
        let mut d = vec![0u8; 64 * SS];
        d[0] = 0xEB;
        d[0x52..0x57].copy_from_slice(b"FAT32");
        d[510] = 0x55;
        d[511] = 0xAA;
        let t = parse(d, 512).unwrap();
        assert_eq!(t.kind, TableKind::None);
        assert_eq!(t.partitions.len(), 1);
        assert_eq!(t.boot_area(), (0, 0));
    }

    /// Builds a GPT disk of `sectors` sectors with one partition.
    fn gpt_disk(ss: usize, sectors: u64) -> Vec<u8> {
        let mut d = vec![0u8; sectors as usize * ss];
        put_mbr_entry(&mut d[..ss], 0, 0, 0xEE, 1, (sectors - 1) as u32);
        if ss > 512 {
            d[ss - 2] = 0x55;
            d[ss - 1] = 0xAA;
        }
        let entries_sectors = 16384 / ss as u64;
        let mut array = vec![0u8; 16384];
        array[0] = 0xAF; // some type GUID
        array[16] = 0x11;
        let first = 2 + entries_sectors;
        array[32..40].copy_from_slice(&first.to_le_bytes());
        array[40..48].copy_from_slice(&(first + 9).to_le_bytes());
        array[56] = b'x';
        let acrc = crc32fast::hash(&array);
        let last = sectors - 1;
        let header = |my: u64, alt: u64, entries: u64| {
            let mut h = vec![0u8; ss];
            h[0..8].copy_from_slice(b"EFI PART");
            h[8..12].copy_from_slice(&0x10000u32.to_le_bytes());
            h[12..16].copy_from_slice(&92u32.to_le_bytes());
            h[24..32].copy_from_slice(&my.to_le_bytes());
            h[32..40].copy_from_slice(&alt.to_le_bytes());
            h[40..48].copy_from_slice(&first.to_le_bytes());
            h[48..56].copy_from_slice(&(last - 1 - entries_sectors).to_le_bytes());
            h[56] = 0x42;
            h[72..80].copy_from_slice(&entries.to_le_bytes());
            h[80..84].copy_from_slice(&128u32.to_le_bytes());
            h[84..88].copy_from_slice(&128u32.to_le_bytes());
            h[88..92].copy_from_slice(&acrc.to_le_bytes());
            let c = crc32fast::hash(&h[..92]);
            h[16..20].copy_from_slice(&c.to_le_bytes());
            h
        };
        d[ss..2 * ss].copy_from_slice(&header(1, last, 2));
        d[2 * ss..2 * ss + 16384].copy_from_slice(&array);
        let be = (last - entries_sectors) as usize * ss;
        d[be..be + 16384].copy_from_slice(&array);
        d[last as usize * ss..].copy_from_slice(&header(last, 1, last - entries_sectors));
        d
    }

    #[test]
    fn gpt_512_and_4096() {
        for ss in [512usize, 4096] {
            let t = parse(gpt_disk(ss, 200), ss as u32).unwrap();
            assert_eq!(t.kind, TableKind::Gpt);
            assert!(t.warnings.is_empty(), "{:?}", t.warnings);
            let p = t.partition(1).unwrap();
            let first = 2 + 16384 / ss as u64;
            assert_eq!(p.start, first * ss as u64);
            assert_eq!(p.size, 10 * ss as u64);
            assert_eq!(p.name, "x");
            assert_eq!(t.gpt.as_ref().unwrap().used_header, "primary");
        }
    }

    #[test]
    fn gpt_damaged_primary_uses_backup() {
        let mut d = gpt_disk(512, 200);
        d[512 + 40] ^= 1; // breaks the header CRC
        let t = parse(d, 512).unwrap();
        assert_eq!(t.gpt.as_ref().unwrap().used_header, "backup");
        assert!(
            t.warnings[0].contains("primary GPT header"),
            "{:?}",
            t.warnings
        );
        assert_eq!(t.partitions.len(), 1);
    }

    #[test]
    fn gpt_damaged_array_crc() {
        let mut d = gpt_disk(512, 200);
        d[1024 + 60] ^= 1; // primary array
        let t = parse(d.clone(), 512).unwrap();
        assert_eq!(t.gpt.as_ref().unwrap().used_header, "backup");
        let be = (199 - 32) * 512;
        d[be + 60] ^= 1; // backup array too
        let e = parse(d, 512).unwrap_err();
        assert!(e.to_string().contains("CRC32"), "{e}");
    }

    #[test]
    fn gpt_huge_entry_count_is_refused() {
        let mut d = gpt_disk(512, 200);
        d[512 + 80..512 + 84].copy_from_slice(&u32::MAX.to_le_bytes());
        let c = {
            let mut h = d[512..512 + 92].to_vec();
            h[16..20].fill(0);
            crc32fast::hash(&h)
        };
        d[512 + 16..512 + 20].copy_from_slice(&c.to_le_bytes());
        // Backup still fine: falls back to it with a warning.
        let t = parse(d, 512).unwrap();
        assert_eq!(t.gpt.unwrap().used_header, "backup");
    }

    #[test]
    fn every_truncation_of_a_gpt_disk_is_handled() {
        let d = gpt_disk(512, 200);
        for cut in [0usize, 100, 512, 1000, 1536, 20000, 90000] {
            let _ = parse(d[..cut].to_vec(), 512);
        }
    }
}
