//! ntfsclone's "special image" format (`ntfsclone --save-image`, Clonezilla's `*.ntfs-img`),
//! as written by ntfs-3g 2022.10.3 and checked on its output: a header
//!
//! | off | size | field |
//! |---|---|---|
//! | 0 | 16 | magic `\0ntfsclone-image` |
//! | 16 | 1 | major version (10) |
//! | 17 | 1 | minor version (0 or 1) |
//! | 18 | 4 | cluster size |
//! | 22 | 8 | device size in bytes |
//! | 30 | 8 | clusters in the volume |
//! | 38 | 8 | clusters in use |
//! | 46 | 4 | offset of the data (10.1; 10.0 images start the data at 50) |
//!
//! then commands: `0x00` + a little-endian u64 count skips that many clusters (a gap), `0x01`
//! + one cluster of data writes the next cluster.
//!
//! Versions before 10 were not endian-safe and are refused. There is no checksum: damage inside a cluster is not detectable.

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::as_conversions
)]

use crate::bytes::{le32, le64};

/// The magic.
pub const MAGIC: &[u8; 16] = b"\0ntfsclone-image";
/// Bytes of the header that are always read.
pub const HEADER_LEN: usize = 50;

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Major version.
    pub major: u8,
    /// Minor version.
    pub minor: u8,
    /// Bytes per cluster.
    pub cluster_size: u32,
    /// Bytes of the source device.
    pub device_size: u64,
    /// Clusters in the volume.
    pub clusters: u64,
    /// Clusters stored.
    pub in_use: u64,
    /// Where the commands start.
    pub data_offset: u64,
}

/// Parses and checks the first [`HEADER_LEN`] bytes; `limit` is the size of the partition.
pub fn parse_header(buf: &[u8], limit: u64) -> Result<Header, String> {
    if buf.get(0..16) != Some(&MAGIC[..]) {
        return Err("not an ntfsclone image (no \"\\0ntfsclone-image\" magic)".into());
    }
    let short = || {
        format!(
            "the header is {} bytes, shorter than {HEADER_LEN}",
            buf.len()
        )
    };
    let major = *buf.get(16).ok_or_else(short)?;
    let minor = *buf.get(17).ok_or_else(short)?;
    if major != 10 {
        return Err(format!(
            "ntfsclone image version {major}.{minor}; only version 10 images are read"
        ));
    }
    let h = Header {
        major,
        minor,
        cluster_size: le32(buf, 18).ok_or_else(short)?,
        device_size: le64(buf, 22).ok_or_else(short)?,
        clusters: le64(buf, 30).ok_or_else(short)?,
        in_use: le64(buf, 38).ok_or_else(short)?,
        data_offset: if minor == 0 {
            50
        } else {
            u64::from(le32(buf, 46).ok_or_else(short)?)
        },
    };
    if !(512..=(2 << 20)).contains(&h.cluster_size) || !h.cluster_size.is_power_of_two() {
        return Err(format!("cluster size {} at byte 0x12", h.cluster_size));
    }
    if h.device_size > limit {
        return Err(format!(
            "the image is of a {}-byte volume, larger than the {limit}-byte partition it is for",
            h.device_size
        ));
    }
    let span = h.clusters.checked_mul(u64::from(h.cluster_size));
    if span.is_none_or(|s| s > h.device_size) {
        return Err(format!(
            "{} clusters of {} bytes are more than the device's {} bytes",
            h.clusters, h.cluster_size, h.device_size
        ));
    }
    if h.in_use > h.clusters {
        return Err(format!("{} clusters in use of {}", h.in_use, h.clusters));
    }
    if h.data_offset < 50 || h.data_offset > 4096 {
        return Err(format!("data offset {} at byte 0x2e", h.data_offset));
    }
    Ok(h)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        let mut h = MAGIC.to_vec();
        h.extend_from_slice(&[10, 1]);
        h.extend_from_slice(&4096u32.to_le_bytes());
        h.extend_from_slice(&(1u64 << 20).to_le_bytes());
        h.extend_from_slice(&255u64.to_le_bytes());
        h.extend_from_slice(&10u64.to_le_bytes());
        h.extend_from_slice(&56u32.to_le_bytes());
        h
    }

    #[test]
    fn parses_and_refuses() {
        let h = parse_header(&header(), 1 << 20).unwrap();
        assert_eq!(h.cluster_size, 4096);
        assert_eq!(h.data_offset, 56);
        assert!(parse_header(&header(), 1 << 19).is_err());
        for cut in 0..HEADER_LEN {
            assert!(parse_header(&header()[..cut], 1 << 20).is_err());
        }
        let mut b = header();
        b[16] = 9;
        assert!(parse_header(&b, 1 << 20).is_err());
        let mut b = header();
        b[18] = 3;
        assert!(parse_header(&b, 1 << 20).is_err());
        let mut b = header();
        b[45] = 1;
        assert!(parse_header(&b, 1 << 20).is_err());
    }
}
