//! partclone images from arbitrary bytes: header (0001 and 0002), bitmap (bit and byte maps,
//! CRC), and the data stream with every checksum mode; plus the ntfsclone header and the
//! sfdisk dump parser of Clonezilla directories. The limit is a small partition, so a header
//! that asks for a huge bitmap must be refused rather than allocated.
#![no_main]
use ferroclone::import::clonezilla::parse_sfdisk;
use ferroclone::import::ntfsclone;
use ferroclone::import::partclone::{read_head, DataReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limit = 64 << 20;
    let mut r = data;
    if let Ok((h, bitmap, pos)) = read_head(&mut r, limit) {
        let mut dr = DataReader::new(r, h, bitmap, pos, true);
        let mut buf = Vec::new();
        for _ in 0..4096 {
            match dr.next_run(64, &mut buf) {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }
    let _ = ntfsclone::parse_header(data, limit);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_sfdisk(text);
    }
});
