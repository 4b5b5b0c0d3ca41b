//! The binary structures of an image: record headers, index files, map files.
#![no_main]
use ferroclone::image::format::{decode_index, decode_map, RecordHeader, RECORD_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(h) = data.get(..RECORD_HEADER_LEN) {
        let mut b = [0u8; RECORD_HEADER_LEN];
        b.copy_from_slice(h);
        let _ = RecordHeader::decode(&b, 0);
    }
    let _ = decode_index(data);
    let _ = decode_map(data, u64::MAX);
    let _ = decode_map(data, 1 << 30);
});
