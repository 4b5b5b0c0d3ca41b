//! Linux swap: only the header page is stored (reference: ../shared/reference/filesystems.md,
//! section 9). Restoring it onto a partition of the same size gives back a valid swap area with
//! the same UUID and label; the pages after it hold nothing worth keeping.

#![deny(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use crate::bytes::le32;
use crate::disk::Region;
use crate::fs::{read_at, Extents, FsError, FsInfo};

/// Where the swap header's fields start (after the 1 KiB boot block).
const HEADER: u64 = 0x400;

/// Fills `info.used` with the header page: `info.block_size` is the page size at whose end
/// `detect` found `SWAPSPACE2`.
pub fn fill(part: &Region<'_>, info: &mut FsInfo) -> Result<(), FsError> {
    let page = u64::from(info.block_size);
    if page < 4096 || !page.is_power_of_two() || page > part.len() {
        // Not a page size detect would set: keep the raw copy.
        return Ok(());
    }
    let head = read_at(part, info.kind, HEADER, 16)?;
    let version = le32(&head, 0).unwrap_or(0);
    let version_swapped = le32(&head, 0).map(u32::swap_bytes).unwrap_or(0);
    if version != 1 && version_swapped != 1 {
        info.warnings.push(format!(
            "swap header version {version} at partition byte {HEADER:#x} is not 1: imaged raw"
        ));
        return Ok(());
    }
    info.used = Some(Extents::single(0, page));
    info.min_size = Some(page);
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::indexing_slicing,
    clippy::unwrap_used
)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;
    use crate::fs::probe;

    fn swap_image(len: usize, page: usize) -> Vec<u8> {
        let mut d = vec![0xEEu8; len];
        d[0x400..0x404].copy_from_slice(&1u32.to_le_bytes());
        d[0x404..0x408].copy_from_slice(&((len / page - 1) as u32).to_le_bytes());
        d[page - 10..page].copy_from_slice(b"SWAPSPACE2");
        d
    }

    #[test]
    fn header_page_only() {
        for page in [4096usize, 65536] {
            let disk = MemDisk::from_vec(swap_image(1 << 20, page), 512);
            let info = probe(&Region::whole(&disk)).unwrap();
            assert_eq!(info.kind, crate::fs::FsKind::Swap);
            assert_eq!(info.used.unwrap().runs(), &[(0, page as u64)]);
        }
    }

    #[test]
    fn bad_version_is_raw() {
        let mut img = swap_image(1 << 20, 4096);
        img[0x400] = 7;
        let disk = MemDisk::from_vec(img, 512);
        let info = probe(&Region::whole(&disk)).unwrap();
        assert!(info.used.is_none());
        assert_eq!(info.warnings.len(), 1);
    }
}
