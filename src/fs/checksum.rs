//! Checksums the filesystems use for their own metadata: CRC-32C (ext4 metadata_csum, XFS v5,
//! btrfs) and CRC-16 (ext4 GDT_CSUM group descriptors).

/// CRC-32C (Castagnoli) lookup table, reflected polynomial 0x82F63B78.
const CRC32C_TABLE: [u32; 256] = crc32c_table();

#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]
// OK: const evaluation over i < 256; any mistake fails the build, not a run.
const fn crc32c_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

/// Continues a CRC-32C over `data` (pass `!0` to start, complement the result to finish).
pub(crate) fn crc32c_update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        let idx = usize::from(crc.to_le_bytes()[0] ^ b);
        crc = CRC32C_TABLE.get(idx).copied().unwrap_or(0) ^ (crc >> 8);
    }
    crc
}

/// CRC-32C of `data`.
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    !crc32c_update(!0, data)
}

/// True when the little-endian CRC-32C stored at `crc_off` in `buf` matches the CRC of `buf`
/// with that field taken as zero (the XFS convention).
pub(crate) fn crc32c_ok(buf: &[u8], crc_off: usize) -> bool {
    let Some(end) = crc_off.checked_add(4) else {
        return false;
    };
    let (Some(head), Some(field), Some(tail)) =
        (buf.get(..crc_off), buf.get(crc_off..end), buf.get(end..))
    else {
        return false;
    };
    let mut c = crc32c_update(!0, head);
    c = crc32c_update(c, &[0; 4]);
    c = crc32c_update(c, tail);
    field == (!c).to_le_bytes()
}

/// CRC-16 (ANSI, reflected 0xA001), raw, as e2fsprogs' `ext2fs_crc16`.
pub(crate) fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // The raw (uncomplemented) update as ext4 uses it continues across calls.
        assert_eq!(
            crc32c_update(crc32c_update(!0, b"1234"), b"56789"),
            !0xE306_9283
        );
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
    }
}
