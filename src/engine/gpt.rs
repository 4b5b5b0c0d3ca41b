//! Rewriting GPT structures on a target: moving the backup header and array to the end of a
//! disk of another size, with the primary header's fields and every CRC updated.

use anyhow::{bail, Context, Result};

use crate::bytes::{le32, le64};
use crate::disk::BlockDev;

/// Reads the primary GPT of `dev`, and writes a backup header and array at the end of `dev`;
/// updates the primary's backup LBA and last usable LBA and the protective MBR's size.
pub fn relocate_backup(dev: &dyn BlockDev) -> Result<()> {
    let ss = u64::from(dev.logical_sector());
    let total = dev.len() / ss;
    let mut hdr = vec![0u8; ss as usize];
    dev.read_exact_at(&mut hdr, ss)
        .context("reading the primary GPT header")?;
    if hdr.get(0..8) != Some(b"EFI PART") {
        bail!("no primary GPT header at LBA 1");
    }
    let hsize = le32(&hdr, 12).unwrap_or(92) as usize;
    if !(92..=ss as usize).contains(&hsize) {
        bail!("primary GPT header size {hsize} invalid");
    }
    let entries_lba = le64(&hdr, 72).unwrap_or(2);
    let n = u64::from(le32(&hdr, 80).unwrap_or(0));
    let esz = u64::from(le32(&hdr, 84).unwrap_or(128));
    let array_len = n * esz;
    if array_len == 0 || array_len > 4 << 20 {
        bail!("primary GPT array of {n} x {esz} bytes invalid");
    }
    let array_sectors = array_len.div_ceil(ss);
    let mut array = vec![0u8; (array_sectors * ss) as usize];
    dev.read_exact_at(&mut array, entries_lba * ss)
        .context("reading the primary GPT array")?;
    let new_last = total - 1;
    let backup_entries = new_last - array_sectors;
    let last_usable = backup_entries - 1;
    // Partitions must still fit below the new last usable LBA.
    for e in array[..array_len as usize].chunks_exact(esz as usize) {
        if e[..16].iter().any(|&b| b != 0) {
            let last = le64(e, 40).unwrap_or(0);
            if last > last_usable {
                bail!("a partition ends at LBA {last}, beyond the target's last usable LBA {last_usable}");
            }
        }
    }
    let put64 =
        |h: &mut [u8], off: usize, v: u64| h[off..off + 8].copy_from_slice(&v.to_le_bytes());
    let seal = |h: &mut [u8]| {
        h[16..20].fill(0);
        let c = crc32fast::hash(&h[..hsize]);
        h[16..20].copy_from_slice(&c.to_le_bytes());
    };
    put64(&mut hdr, 32, new_last);
    put64(&mut hdr, 48, last_usable);
    seal(&mut hdr);
    let mut backup = hdr.clone();
    put64(&mut backup, 24, new_last);
    put64(&mut backup, 32, 1);
    put64(&mut backup, 72, backup_entries);
    seal(&mut backup);
    dev.write_all_at(&array, backup_entries * ss)
        .context("writing the backup GPT array")?;
    dev.write_all_at(&backup, new_last * ss)
        .context("writing the backup GPT header")?;
    dev.write_all_at(&hdr, ss)
        .context("writing the primary GPT header")?;
    // Protective MBR: the 0xEE entry covers the disk (capped at 2^32-1 sectors).
    let mut mbr = vec![0u8; 512];
    dev.read_exact_at(&mut mbr, 0)
        .context("reading the protective MBR")?;
    for i in 0..4 {
        let b = 446 + i * 16;
        if mbr[b + 4] == 0xEE {
            let size = (total - 1).min(u64::from(u32::MAX)) as u32;
            mbr[b + 12..b + 16].copy_from_slice(&size.to_le_bytes());
        }
    }
    dev.write_all_at(&mbr, 0)
        .context("writing the protective MBR")?;
    Ok(())
}
