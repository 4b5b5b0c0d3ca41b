//! Writing partition tables for a fitted layout: GPT (entries, both headers and arrays, every
//! CRC, the protective MBR), MBR (entries and the EBR chain of the logical partitions), new
//! disk and partition IDs; and the boot-sector fields that name a partition's place (the
//! hidden-sectors field of NTFS and FAT, the NTFS backup boot sector at the partition's end).
//!
//! Every table is built from the source's own structures (read from the source disk, or from
//! the `disk` stream of an image), so fields we do not interpret (attributes, names, type
//! GUIDs, boot code, reserved bytes) are kept byte for byte.

use anyhow::{bail, ensure, Context, Result};

use crate::bytes::{le16, le32, le64};
use crate::disk::table::{PartitionTable, TableKind};
use crate::disk::BlockDev;
use crate::engine::layout::{Layout, Placed};
use crate::fs::FsKind;

/// Bytes to write at a byte offset of the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// Where.
    pub offset: u64,
    /// What.
    pub data: Vec<u8>,
}

fn read(dev: &dyn BlockDev, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; usize::try_from(len).context("length too large")?];
    dev.read_exact_at(&mut buf, offset)
        .with_context(|| format!("reading the source's table at byte {offset:#x}"))?;
    Ok(buf)
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// `N` random bytes from the kernel.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    use std::io::Read;
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom for new IDs")?;
    Ok(b)
}

/// A random (version 4) GUID in the on-disk mixed-endian layout.
pub fn random_guid() -> Result<[u8; 16]> {
    let mut g = random_bytes::<16>()?;
    // The third group is a little-endian u16 whose top nibble is the version.
    g[7] = (g[7] & 0x0F) | 0x40;
    g[8] = (g[8] & 0x3F) | 0x80;
    Ok(g)
}

fn to_u32(v: u64, what: &str) -> Result<u32> {
    u32::try_from(v).with_context(|| {
        format!("{what} ({v}) does not fit in an MBR entry: MBR addresses only the first 2 TiB")
    })
}

/// Builds the target's tables for `layout` from the source's `table`, whose structures are
/// read from `src` at the source's offsets. `new_ids` makes a new disk GUID and new partition
/// GUIDs (GPT) or a new disk signature (MBR).
pub fn build(
    src: &dyn BlockDev,
    table: &PartitionTable,
    layout: &Layout,
    new_ids: bool,
) -> Result<Vec<Write>> {
    match table.kind {
        TableKind::Gpt => build_gpt(src, table, layout, new_ids),
        TableKind::Mbr => build_mbr(src, table, layout, new_ids),
        TableKind::None => Ok(Vec::new()),
    }
}

fn seal(h: &mut [u8], hsize: usize) {
    h[16..20].fill(0);
    let c = crc32fast::hash(&h[..hsize]);
    h[16..20].copy_from_slice(&c.to_le_bytes());
}

fn build_gpt(
    src: &dyn BlockDev,
    table: &PartitionTable,
    layout: &Layout,
    new_ids: bool,
) -> Result<Vec<Write>> {
    let ss = u64::from(table.sector_size);
    let g = table.gpt.as_ref().context("the GPT details are missing")?;
    let hdr_lba = if g.used_header == "backup" {
        g.backup_lba
    } else {
        1
    };
    let hdr = read(src, hdr_lba * ss, ss)?;
    ensure!(
        hdr.get(0..8) == Some(b"EFI PART"),
        "the source's GPT header at LBA {hdr_lba} is gone"
    );
    let hsize = le32(&hdr, 12).unwrap_or(0) as usize;
    ensure!(
        (92..=ss as usize).contains(&hsize),
        "GPT header size {hsize} invalid"
    );
    let entries_lba = le64(&hdr, 72).unwrap_or(0);
    let first_usable = le64(&hdr, 40).unwrap_or(0);
    let esz = u64::from(g.entry_size);
    let array_len = u64::from(g.num_entries) * esz;
    let array_sectors = array_len.div_ceil(ss);
    let mut array = read(src, entries_lba * ss, array_sectors * ss)?;
    let crc = crc32fast::hash(&array[..array_len as usize]);
    ensure!(
        Some(crc) == le32(&hdr, 88),
        "the source's GPT partition array at LBA {entries_lba} does not match its CRC32"
    );
    let total = layout.target_len / ss;
    ensure!(
        total > 2 * array_sectors + 3,
        "the target is too small for a GPT"
    );
    let last = total - 1;
    let backup_entries = last - array_sectors;
    let last_usable = backup_entries - 1;
    let primary_entries = if g.used_header == "backup" {
        2
    } else {
        entries_lba
    };
    ensure!(
        primary_entries + array_sectors <= first_usable,
        "the primary GPT array would overlap the first usable LBA {first_usable}"
    );
    for p in &layout.parts {
        let slot = (p.number as usize)
            .checked_sub(1)
            .context("partition number 0")?;
        let at = slot * esz as usize;
        let e = array
            .get_mut(at..at + esz as usize)
            .with_context(|| format!("partition {} is not in the GPT array", p.number))?;
        ensure!(
            e[..16].iter().any(|&b| b != 0),
            "GPT slot {} is empty",
            p.number
        );
        let first = p.start / ss;
        let end = p.end() / ss;
        ensure!(
            first >= first_usable && end.saturating_sub(1) <= last_usable && end > first,
            "partition {} (LBA {first}..{}) leaves the usable area {first_usable}..={last_usable}",
            p.number,
            end.saturating_sub(1)
        );
        put64(e, 32, first);
        put64(e, 40, end - 1);
    }
    if new_ids {
        for e in array[..array_len as usize].chunks_exact_mut(esz as usize) {
            if e[..16].iter().any(|&b| b != 0) {
                e[16..32].copy_from_slice(&random_guid()?);
            }
        }
    }
    let crc = crc32fast::hash(&array[..array_len as usize]);
    let mut primary = hdr.clone();
    put64(&mut primary, 24, 1);
    put64(&mut primary, 32, last);
    put64(&mut primary, 48, last_usable);
    put64(&mut primary, 72, primary_entries);
    put32(&mut primary, 88, crc);
    if new_ids {
        primary[56..72].copy_from_slice(&random_guid()?);
    }
    seal(&mut primary, hsize);
    let mut backup = primary.clone();
    put64(&mut backup, 24, last);
    put64(&mut backup, 32, 1);
    put64(&mut backup, 72, backup_entries);
    seal(&mut backup, hsize);
    let mut mbr = read(src, 0, ss)?;
    for i in 0..4 {
        let b = 446 + i * 16;
        if mbr[b + 4] == 0xEE {
            let size = (total - 1).min(u64::from(u32::MAX)) as u32;
            put32(&mut mbr, b + 12, size);
        }
    }
    Ok(vec![
        Write {
            offset: primary_entries * ss,
            data: array.clone(),
        },
        Write {
            offset: ss,
            data: primary,
        },
        Write {
            offset: backup_entries * ss,
            data: array,
        },
        Write {
            offset: last * ss,
            data: backup,
        },
        Write {
            offset: 0,
            data: mbr,
        },
    ])
}

/// A CHS address as an MBR entry holds it (255 heads, 63 sectors; beyond 1023 cylinders the
/// conventional FE FF FF).
fn chs(lba: u64) -> [u8; 3] {
    let c = lba / (255 * 63);
    if c > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let h = (lba / 63) % 255;
    let s = lba % 63 + 1;
    [
        h as u8,
        (s as u8) | (((c >> 2) & 0xC0) as u8),
        (c & 0xFF) as u8,
    ]
}

/// Sets an MBR/EBR entry's LBA, length and CHS fields.
fn set_entry(sector: &mut [u8], base: usize, lba: u64, sectors: u64) -> Result<()> {
    put32(sector, base + 8, to_u32(lba, "a partition start")?);
    put32(sector, base + 12, to_u32(sectors, "a partition length")?);
    sector[base + 1..base + 4].copy_from_slice(&chs(lba));
    sector[base + 5..base + 8].copy_from_slice(&chs(lba + sectors.max(1) - 1));
    Ok(())
}

fn entry_lba(sector: &[u8], base: usize) -> (u64, u64) {
    (
        u64::from(le32(sector, base + 8).unwrap_or(0)),
        u64::from(le32(sector, base + 12).unwrap_or(0)),
    )
}

fn build_mbr(
    src: &dyn BlockDev,
    table: &PartitionTable,
    layout: &Layout,
    new_ids: bool,
) -> Result<Vec<Write>> {
    let ss = u64::from(table.sector_size);
    let mut mbr = read(src, 0, ss)?;
    for i in 0..4usize {
        let base = 446 + i * 16;
        let t = mbr[base + 4];
        if t == 0 {
            continue;
        }
        let want = if matches!(t, 0x05 | 0x0F | 0x85) {
            layout.extended
        } else {
            layout.part(i as u32 + 1).map(|p| (p.start, p.size))
        };
        if let Some((s, l)) = want {
            if entry_lba(&mbr, base) != (s / ss, l / ss) {
                set_entry(&mut mbr, base, s / ss, l / ss)?;
            }
        }
    }
    if new_ids {
        let mut sig = 0u32;
        while sig == 0 {
            sig = u32::from_le_bytes(random_bytes::<4>()?);
        }
        put32(&mut mbr, 440, sig);
    }
    let mut out = Vec::new();
    if let (Some((old_ext, _)), Some((new_ext, _))) = (table.extended, layout.extended) {
        let mut logicals: Vec<_> = table.partitions.iter().filter(|p| p.number >= 5).collect();
        logicals.sort_by_key(|p| p.number);
        // Each logical partition's EBR: the last table sector before it in the container.
        let mut chain = Vec::new();
        for l in &logicals {
            let ebr = table
                .table_areas
                .iter()
                .map(|a| a.0)
                .filter(|&a| a >= old_ext && a < l.start)
                .max()
                .with_context(|| format!("no EBR found for logical partition {}", l.number))?;
            let placed = layout
                .part(l.number)
                .with_context(|| format!("logical partition {} not placed", l.number))?;
            let new_ebr = placed
                .start
                .checked_sub(l.start - ebr)
                .context("an EBR would land before the disk")?;
            chain.push((ebr, new_ebr, placed));
        }
        if let Some(first) = chain.first() {
            if first.0 != old_ext || first.1 != new_ext {
                bail!(
                    "the EBR chain does not start at the extended partition's first sector; \
                     --fit cannot move this layout"
                );
            }
        }
        if chain.windows(2).any(|w| w[0].0 == w[1].0) {
            bail!("two logical partitions share one EBR; --fit cannot move this layout");
        }
        for (k, (old_ebr, new_ebr, p)) in chain.iter().enumerate() {
            let mut sector = read(src, *old_ebr, ss)?;
            ensure!(
                le16(&sector, 510) == Some(0xAA55),
                "the EBR at byte {old_ebr:#x} has no 55AA signature"
            );
            let lrel = (p.start - new_ebr) / ss;
            if entry_lba(&sector, 446) != (lrel, p.size / ss) {
                set_entry(&mut sector, 446, lrel, p.size / ss)?;
                // CHS of a logical partition is absolute.
                sector[447..450].copy_from_slice(&chs(p.start / ss));
                sector[451..454].copy_from_slice(&chs(p.end() / ss - 1));
            }
            match chain.get(k + 1) {
                Some((_, next_ebr, next)) => {
                    let rel = (next_ebr - new_ext) / ss;
                    let len = (next.end() - next_ebr) / ss;
                    if sector[462 + 4] == 0 {
                        sector[462 + 4] = 0x05;
                    }
                    if entry_lba(&sector, 462) != (rel, len) {
                        set_entry(&mut sector, 462, rel, len)?;
                        sector[463..466].copy_from_slice(&chs(next_ebr / ss));
                        sector[467..470].copy_from_slice(&chs(next.end() / ss - 1));
                    }
                }
                None => sector[462..478].fill(0),
            }
            out.push(Write {
                offset: *new_ebr,
                data: sector,
            });
        }
    }
    out.push(Write {
        offset: 0,
        data: mbr,
    });
    Ok(out)
}

/// Fixes the fields of a filesystem's boot sector that name where its partition is, after the
/// partition moved or changed size. Returns a note for the log, if anything was changed.
pub fn fix_boot_sectors(dev: &dyn BlockDev, p: &Placed) -> Result<Option<String>> {
    match p.fs {
        FsKind::Ntfs => fix_ntfs(dev, p),
        FsKind::Vfat => fix_fat(dev, p),
        _ => Ok(None),
    }
}

fn hidden_sectors(p: &Placed, bps: u64) -> Option<u32> {
    u32::try_from(p.start / bps).ok()
}

fn fix_ntfs(dev: &dyn BlockDev, p: &Placed) -> Result<Option<String>> {
    let mut bs = read(dev, p.start, 512)?;
    if bs.get(3..11) != Some(b"NTFS    ") {
        return Ok(None);
    }
    let bps = u64::from(le16(&bs, 0x0B).unwrap_or(0));
    ensure!(
        matches!(bps, 512 | 1024 | 2048 | 4096),
        "partition {}: NTFS bytes per sector {bps} invalid",
        p.number
    );
    if bps != 512 {
        bs = read(dev, p.start, bps)?;
    }
    let Some(hidden) = hidden_sectors(p, bps) else {
        return Ok(Some(format!(
            "partition {}: starts beyond what the NTFS hidden-sectors field holds; left as it was",
            p.number
        )));
    };
    put32(&mut bs, 0x1C, hidden);
    dev.write_all_at(&bs, p.start)
        .with_context(|| format!("writing partition {}'s NTFS boot sector", p.number))?;
    // The backup: right after the volume (where NTFS puts it) and in the partition's last
    // sector (where ntfs-3g and Windows look when the partition is larger than the volume).
    let total = le64(&bs, 0x28).unwrap_or(0);
    let after_volume = total.saturating_mul(bps);
    let last = p.size - bps;
    for at in [after_volume, last] {
        if at + bps <= p.size && at > 0 {
            dev.write_all_at(&bs, p.start + at).with_context(|| {
                format!("writing partition {}'s NTFS backup boot sector", p.number)
            })?;
        }
        if after_volume == last {
            break;
        }
    }
    Ok(Some(format!(
        "partition {}: NTFS boot sectors now say the volume starts at sector {hidden}",
        p.number
    )))
}

fn fix_fat(dev: &dyn BlockDev, p: &Placed) -> Result<Option<String>> {
    let mut bs = read(dev, p.start, 512)?;
    if le16(&bs, 510) != Some(0xAA55) {
        return Ok(None);
    }
    let bps = u64::from(le16(&bs, 0x0B).unwrap_or(0));
    if !matches!(bps, 512 | 1024 | 2048 | 4096) || !p.moved() {
        return Ok(None);
    }
    if bps != 512 {
        bs = read(dev, p.start, bps)?;
    }
    let Some(hidden) = hidden_sectors(p, bps) else {
        return Ok(None);
    };
    put32(&mut bs, 0x1C, hidden);
    dev.write_all_at(&bs, p.start)
        .with_context(|| format!("writing partition {}'s FAT boot sector", p.number))?;
    let fat32 = le16(&bs, 0x16) == Some(0);
    let backup = u64::from(le16(&bs, 0x32).unwrap_or(0));
    let reserved = u64::from(le16(&bs, 0x0E).unwrap_or(0));
    if fat32 && backup > 0 && backup < reserved {
        let at = p.start + backup * bps;
        let mut b = read(dev, at, bps)?;
        if le16(&b, 510) == Some(0xAA55) {
            put32(&mut b, 0x1C, hidden);
            dev.write_all_at(&b, at).with_context(|| {
                format!("writing partition {}'s FAT backup boot sector", p.number)
            })?;
        }
    }
    Ok(Some(format!(
        "partition {}: FAT boot sector now says the volume starts at sector {hidden}",
        p.number
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::table::read_table;
    use crate::disk::{MemDisk, Region};
    use crate::engine::layout::{plan, Fit, SrcLayout, SrcPart};

    const MIB: u64 = 1 << 20;

    #[test]
    fn chs_encoding() {
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(2048), [32, 33, 0]);
        assert_eq!(chs(1 << 30), [0xFE, 0xFF, 0xFF]);
    }

    fn put_entry(s: &mut [u8], i: usize, t: u8, lba: u32, n: u32) {
        let b = 446 + i * 16;
        s[b + 4] = t;
        s[b + 8..b + 12].copy_from_slice(&lba.to_le_bytes());
        s[b + 12..b + 16].copy_from_slice(&n.to_le_bytes());
        s[510] = 0x55;
        s[511] = 0xAA;
    }

    /// 64 MiB MBR disk: p1 1+20 MiB, extended 21..64 with p5 22+20, p6 43+10.
    fn mbr_disk() -> MemDisk {
        let mut d = vec![0u8; 64 << 20];
        let s = |m: u64| (m * 2048) as u32;
        d[440..444].copy_from_slice(&0xdeadbeefu32.to_le_bytes());
        put_entry(&mut d[..512], 0, 0x83, s(1), s(20));
        put_entry(&mut d[..512], 1, 0x05, s(21), s(43));
        let e1 = (21 * MIB) as usize;
        put_entry(&mut d[e1..e1 + 512], 0, 0x83, s(1), s(20));
        put_entry(&mut d[e1..e1 + 512], 1, 0x05, s(21), s(11));
        let e2 = (42 * MIB) as usize;
        put_entry(&mut d[e2..e2 + 512], 0, 0x82, s(1), s(10));
        MemDisk::from_vec(d, 512)
    }

    fn src_layout(t: &PartitionTable, len: u64) -> SrcLayout {
        SrcLayout {
            table: t.kind,
            sector_size: 512,
            disk_size: len,
            parts: t
                .partitions
                .iter()
                .map(|p| SrcPart {
                    number: p.number,
                    start: p.start,
                    size: p.size,
                    fs: if p.number == 6 {
                        FsKind::Swap
                    } else {
                        FsKind::Ext4
                    },
                    min_size: None,
                    logical: p.number >= 5,
                })
                .collect(),
            extended: t.extended,
            gpt_array_bytes: t
                .gpt
                .as_ref()
                .map(|g| u64::from(g.num_entries) * u64::from(g.entry_size))
                .unwrap_or(0),
            boot_area_end: t.boot_area().1,
        }
    }

    /// Applies the writes to a new disk of `len` bytes and parses it back.
    fn apply(ws: &[Write], len: u64) -> (MemDisk, PartitionTable) {
        let d = MemDisk::new(len as usize, 512);
        for w in ws {
            d.write_all_at(&w.data, w.offset).unwrap();
        }
        let t = read_table(&Region::whole(&d)).unwrap();
        (d, t)
    }

    #[test]
    fn mbr_chain_is_moved_with_its_partitions() {
        let src = mbr_disk();
        let t = read_table(&Region::whole(&src)).unwrap();
        let layout = plan(&src_layout(&t, 64 * MIB), 128 * MIB, Fit::Auto).unwrap();
        let ws = build(&src, &t, &layout, false).unwrap();
        let (d, nt) = apply(&ws, 128 * MIB);
        assert!(nt.warnings.is_empty(), "{:?}", nt.warnings);
        let got: Vec<(u32, u64, u64)> = nt
            .partitions
            .iter()
            .map(|p| (p.number, p.start, p.size))
            .collect();
        let want: Vec<(u32, u64, u64)> = layout
            .parts
            .iter()
            .map(|p| (p.number, p.start, p.size))
            .collect();
        assert_eq!(got, want);
        assert_eq!(nt.extended, layout.extended);
        assert_eq!(nt.partition(6).unwrap().end(), 128 * MIB);
        assert_eq!(nt.disk_id.as_deref(), Some("0xdeadbeef"));
        assert_eq!(nt.partition(6).unwrap().type_id, "0x82");
        let _ = d;
        // New IDs: another signature, same layout.
        let ws = build(&src, &t, &layout, true).unwrap();
        let (_, nt2) = apply(&ws, 128 * MIB);
        assert_ne!(nt2.disk_id, nt.disk_id);
        assert_eq!(nt2.partitions, nt.partitions);
    }

    #[test]
    fn unchanged_mbr_is_byte_identical() {
        let src = mbr_disk();
        let t = read_table(&Region::whole(&src)).unwrap();
        let layout = plan(&src_layout(&t, 64 * MIB), 64 * MIB, Fit::None).unwrap();
        for w in build(&src, &t, &layout, false).unwrap() {
            let mut orig = vec![0u8; w.data.len()];
            src.read_exact_at(&mut orig, w.offset).unwrap();
            assert_eq!(orig, w.data, "at {:#x}", w.offset);
        }
    }

    /// A GPT disk made by hand: 2 partitions, 512-byte sectors.
    fn gpt_disk(len: u64) -> MemDisk {
        let ss = 512usize;
        let sectors = len / 512;
        let mut d = vec![0u8; len as usize];
        put_entry(&mut d[..ss], 0, 0xEE, 1, (sectors - 1) as u32);
        let mut array = vec![0u8; 16384];
        for (i, (first, last)) in [(2048u64, 4095u64), (4096, 8191)].iter().enumerate() {
            let e = &mut array[i * 128..(i + 1) * 128];
            e[0] = 0xA2;
            e[16] = 0x10 + i as u8;
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
            e[48] = 1;
        }
        let acrc = crc32fast::hash(&array);
        let last = sectors - 1;
        let header = |my: u64, alt: u64, entries: u64| {
            let mut h = vec![0u8; ss];
            h[0..8].copy_from_slice(b"EFI PART");
            h[8..12].copy_from_slice(&0x10000u32.to_le_bytes());
            h[12..16].copy_from_slice(&92u32.to_le_bytes());
            h[24..32].copy_from_slice(&my.to_le_bytes());
            h[32..40].copy_from_slice(&alt.to_le_bytes());
            h[40..48].copy_from_slice(&34u64.to_le_bytes());
            h[48..56].copy_from_slice(&(last - 33).to_le_bytes());
            h[56] = 0x42;
            h[72..80].copy_from_slice(&entries.to_le_bytes());
            h[80..84].copy_from_slice(&128u32.to_le_bytes());
            h[84..88].copy_from_slice(&128u32.to_le_bytes());
            h[88..92].copy_from_slice(&acrc.to_le_bytes());
            seal(&mut h, 92);
            h
        };
        d[ss..2 * ss].copy_from_slice(&header(1, last, 2));
        d[2 * ss..2 * ss + 16384].copy_from_slice(&array);
        let be = (last - 32) as usize * ss;
        d[be..be + 16384].copy_from_slice(&array);
        d[last as usize * ss..].copy_from_slice(&header(last, 1, last - 32));
        MemDisk::from_vec(d, 512)
    }

    #[test]
    fn gpt_grown_and_moved_with_new_ids() {
        let src = gpt_disk(8 * MIB);
        let t = read_table(&Region::whole(&src)).unwrap();
        let mut sl = src_layout(&t, 8 * MIB);
        sl.parts[0].fs = FsKind::Ntfs;
        sl.parts[1].fs = FsKind::Ntfs;
        let layout = plan(&sl, 16 * MIB, Fit::Part(1)).unwrap();
        let ws = build(&src, &t, &layout, false).unwrap();
        let (_, nt) = apply(&ws, 16 * MIB);
        assert!(nt.warnings.is_empty(), "{:?}", nt.warnings);
        assert_eq!(nt.partition(2).unwrap().end(), 16 * MIB - 33 * 512);
        assert_eq!(nt.partition(1).unwrap().start, MIB);
        assert_eq!(nt.disk_id, t.disk_id);
        assert_eq!(nt.partition(1).unwrap().guid, t.partition(1).unwrap().guid);
        assert_eq!(nt.gpt.as_ref().unwrap().last_usable, 16 * 2048 - 34);
        let ws = build(&src, &t, &layout, true).unwrap();
        let (_, n2) = apply(&ws, 16 * MIB);
        assert!(n2.warnings.is_empty(), "{:?}", n2.warnings);
        assert_ne!(n2.disk_id, t.disk_id);
        assert_ne!(n2.partition(1).unwrap().guid, t.partition(1).unwrap().guid);
        assert_ne!(n2.partition(1).unwrap().guid, n2.partition(2).unwrap().guid);
        assert_eq!(
            n2.partition(1).unwrap().type_id,
            t.partition(1).unwrap().type_id
        );
        let g = n2.partition(2).unwrap().guid.clone().unwrap();
        assert_eq!(&g[14..15], "4", "version 4 GUID: {g}");
    }

    #[test]
    fn ntfs_hidden_sectors_and_backup_follow_the_partition() {
        let d = MemDisk::new(4 * MIB as usize, 512);
        let mut bs = vec![0u8; 512];
        bs[3..11].copy_from_slice(b"NTFS    ");
        bs[0x0B..0x0D].copy_from_slice(&512u16.to_le_bytes());
        bs[0x1C..0x20].copy_from_slice(&2048u32.to_le_bytes());
        bs[0x28..0x30].copy_from_slice(&2047u64.to_le_bytes()); // 1 MiB partition - 1 sector
        bs[510] = 0x55;
        bs[511] = 0xAA;
        d.write_all_at(&bs, 2 * MIB).unwrap();
        let p = Placed {
            number: 4,
            src_start: MIB,
            src_size: MIB,
            start: 2 * MIB,
            size: MIB + 4096,
            fs: FsKind::Ntfs,
            logical: false,
        };
        fix_boot_sectors(&d, &p).unwrap().unwrap();
        let all = d.to_vec();
        let hidden = |off: u64| le32(&all, off as usize + 0x1C).unwrap();
        assert_eq!(hidden(2 * MIB), 4096);
        assert_eq!(
            hidden(2 * MIB + 2047 * 512),
            4096,
            "backup after the volume"
        );
        assert_eq!(
            hidden(3 * MIB + 4096 - 512),
            4096,
            "copy at the partition's end"
        );
    }
}
