//! Little- and big-endian field readers that never panic: a field outside the buffer is `None`.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

/// `N` bytes at `off`, or `None` when the buffer is too short.
pub fn arr<const N: usize>(buf: &[u8], off: usize) -> Option<[u8; N]> {
    let end = off.checked_add(N)?;
    buf.get(off..end)?.try_into().ok()
}

/// Little-endian u16 at `off`.
pub fn le16(buf: &[u8], off: usize) -> Option<u16> {
    arr(buf, off).map(u16::from_le_bytes)
}

/// Little-endian u32 at `off`.
pub fn le32(buf: &[u8], off: usize) -> Option<u32> {
    arr(buf, off).map(u32::from_le_bytes)
}

/// Little-endian u64 at `off`.
pub fn le64(buf: &[u8], off: usize) -> Option<u64> {
    arr(buf, off).map(u64::from_le_bytes)
}

/// Big-endian u16 at `off`.
pub fn be16(buf: &[u8], off: usize) -> Option<u16> {
    arr(buf, off).map(u16::from_be_bytes)
}

/// Big-endian u32 at `off`.
pub fn be32(buf: &[u8], off: usize) -> Option<u32> {
    arr(buf, off).map(u32::from_be_bytes)
}

/// Big-endian u64 at `off`.
pub fn be64(buf: &[u8], off: usize) -> Option<u64> {
    arr(buf, off).map(u64::from_be_bytes)
}

/// A GUID stored in the mixed-endian Microsoft layout, as upper-case text.
pub fn guid_mixed(buf: &[u8], off: usize) -> Option<String> {
    let b: [u8; 16] = arr(buf, off)?;
    Some(format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    ))
}

/// A UUID stored big-endian (ext, XFS, btrfs), as lower-case text.
pub fn uuid_be(buf: &[u8], off: usize) -> Option<String> {
    let b: [u8; 16] = arr(buf, off)?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15]
    ))
}

/// Text from a fixed-size field: stops at the first NUL, trims spaces, replaces invalid UTF-8.
pub fn ascii_field(buf: &[u8], off: usize, len: usize) -> String {
    let end = off.saturating_add(len).min(buf.len());
    let field = buf.get(off..end).unwrap_or(&[]);
    let field = field.split(|&b| b == 0).next().unwrap_or(&[]);
    String::from_utf8_lossy(field).trim().to_string()
}

/// UTF-16LE text from a fixed-size field, stopping at the first NUL.
pub fn utf16_field(buf: &[u8], off: usize, len: usize) -> String {
    let end = off.saturating_add(len).min(buf.len());
    let field = buf.get(off..end).unwrap_or(&[]);
    let units: Vec<u16> = field
        .chunks_exact(2)
        .filter_map(|c| le16(c, 0))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}
