//! Manifest parsing and its field checks.
#![no_main]
use ferroclone::image::reader::Image;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Image::parse(std::path::Path::new("/nonexistent"), data);
});
