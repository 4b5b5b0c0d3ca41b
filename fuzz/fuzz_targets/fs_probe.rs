//! Filesystem detection and every used-block map builder. The first byte picks a filesystem
//! signature to plant, so each parser is reached, not only "unknown".
#![no_main]
use ferroclone::disk::{MemDisk, Region};
use ferroclone::fs::probe;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let mut disk = vec![0u8; 256 * 1024];
    let n = rest.len().min(disk.len());
    disk[..n].copy_from_slice(&rest[..n]);
    match sel % 8 {
        0 => disk[3..11].copy_from_slice(b"NTFS    "),
        1 => disk[3..11].copy_from_slice(b"EXFAT   "),
        2 => disk[0x10040..0x10048].copy_from_slice(b"_BHRfS_M"),
        3 => disk[0..4].copy_from_slice(b"XFSB"),
        4 => disk[0x438..0x43A].copy_from_slice(&[0x53, 0xEF]),
        5 => disk[4086..4096].copy_from_slice(b"SWAPSPACE2"),
        6 => {
            disk[0] = 0xEB;
            disk[0x1FE] = 0x55;
            disk[0x1FF] = 0xAA;
        }
        _ => {}
    }
    let d = MemDisk::from_vec(disk, 512);
    let _ = probe(&Region::whole(&d));
});
