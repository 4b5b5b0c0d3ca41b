//! Partition-table parsing on arbitrary disks: GPT (512/4096), MBR, EBR chains.
#![no_main]
use ferroclone::disk::table::read_table;
use ferroclone::disk::{MemDisk, Region};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let ss = if sel & 1 == 0 { 512 } else { 4096 };
    // Spread the input over a sparse disk so GPT backups and EBRs far away can be reached.
    let mut disk = vec![0u8; 64 * ss as usize];
    for (i, chunk) in rest.chunks(ss as usize).enumerate() {
        let at = if i % 2 == 0 { i / 2 } else { 63 - i / 2 } * ss as usize;
        if at + chunk.len() <= disk.len() {
            disk[at..at + chunk.len()].copy_from_slice(chunk);
        }
    }
    let d = MemDisk::from_vec(disk, ss);
    let _ = read_table(&Region::whole(&d));
});
