//! Block-device ioctls: the crate's only `unsafe` besides `flock`.
//! Numbers from `include/uapi/linux/fs.h`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
nix::ioctl_read_bad!(blksszget, 0x1268, libc::c_int);
nix::ioctl_read_bad!(blkpbszget, 0x127b, libc::c_uint);
nix::ioctl_write_ptr_bad!(blkdiscard, nix::request_code_none!(0x12, 119), [u64; 2]);

/// Size of a block device in bytes (BLKGETSIZE64).
pub fn size_bytes(file: &File) -> io::Result<u64> {
    let mut v: u64 = 0;
    // SAFETY: the fd is open for the lifetime of `file`; the kernel writes one u64 into `v`.
    unsafe { blkgetsize64(file.as_raw_fd(), &mut v) }.map_err(io::Error::from)?;
    Ok(v)
}

/// Logical sector size (BLKSSZGET).
pub fn logical_sector_size(file: &File) -> io::Result<u32> {
    let mut v: libc::c_int = 0;
    // SAFETY: as above; the kernel writes one int.
    unsafe { blksszget(file.as_raw_fd(), &mut v) }.map_err(io::Error::from)?;
    u32::try_from(v).map_err(|_| io::Error::other("negative sector size"))
}

/// Physical sector size (BLKPBSZGET).
pub fn physical_sector_size(file: &File) -> io::Result<u32> {
    let mut v: libc::c_uint = 0;
    // SAFETY: as above; the kernel writes one unsigned int.
    unsafe { blkpbszget(file.as_raw_fd(), &mut v) }.map_err(io::Error::from)?;
    Ok(v)
}

/// Starts writeback of the dirty pages of `file` in `[offset, offset + len)` (`len` 0 = to the
/// end) without waiting (sync_file_range with SYNC_FILE_RANGE_WRITE), so that a later fsync
/// has little left to do. Advice only: errors are ignored.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: plain syscall on an open descriptor; no memory is passed.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Tells the device that `[start, start + len)` holds nothing (BLKDISCARD, a TRIM on SSDs).
pub fn discard(file: &File, start: u64, len: u64) -> io::Result<()> {
    let range = [start, len];
    // SAFETY: the fd is open for the lifetime of `file`; the kernel reads two u64 from `range`.
    unsafe { blkdiscard(file.as_raw_fd(), &range) }.map_err(io::Error::from)?;
    Ok(())
}
