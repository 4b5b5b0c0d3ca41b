//! Block payload decoding (LZ4 with safe decode, stored, CRC check).
#![no_main]
use ferroclone::image::format::{Encoding, IndexEntry};
use ferroclone::image::manifest::{FileRef, StreamInfo};
use ferroclone::image::reader::{decode_block, RawBlock};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, payload)) = data.split_first() else { return };
    let encoding = match sel % 3 {
        0 => Encoding::Lz4,
        1 => Encoding::Stored,
        _ => Encoding::Zero,
    };
    let len = 1 + u32::from(sel) * 4099 % (1 << 20);
    let empty = FileRef { file: String::new(), size: 0, crc32: 0, sha256: String::new() };
    let stream = StreamInfo {
        name: "p1".into(),
        base: 0,
        length: 1 << 20,
        block_size: 1 << 20,
        stored_bytes: 0,
        image_bytes: 0,
        blocks: 1,
        map: empty.clone(),
        index: empty,
        volumes: Vec::new(),
    };
    let raw = RawBlock {
        block: 0,
        entry: IndexEntry {
            encoding,
            len,
            stored_len: payload.len() as u32,
            crc: 0,
            volume: 0,
            offset: 0,
        },
        payload: payload.to_vec(),
        file: Default::default(),
    };
    let mut out = Vec::new();
    let _ = decode_block(&stream, &raw, &mut out);
});
