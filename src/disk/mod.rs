//! Disks: positional I/O over files, block devices and memory, partition tables, discovery.
//!
//! Everything reads a partition by offset from the whole disk: partition device nodes are never
//! used (they do not exist without udev, and a whole-disk view is what a restore writes anyway).

pub(crate) mod ioctl;
pub mod sysfs;
pub mod table;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Positional, thread-safe I/O on a disk, in bytes.
///
/// `&self` everywhere: `pread`/`pwrite` need no cursor, so reader and writer threads share one
/// device without locking.
pub trait BlockDev: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset`; a read past the end is an error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Size in bytes.
    fn len(&self) -> u64;
    /// Logical sector size in bytes (512 or 4096).
    fn logical_sector(&self) -> u32;
    /// Physical sector size in bytes.
    fn physical_sector(&self) -> u32;
    /// Flushes written data to stable storage.
    fn sync(&self) -> io::Result<()>;
    /// True when the device has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Starts writing dirty data back without waiting (advice; default: nothing).
    fn start_writeback(&self) {}
}

/// A disk backed by a regular file or a block device.
#[derive(Debug)]
pub struct FileDisk {
    file: File,
    path: PathBuf,
    len: u64,
    logical: u32,
    physical: u32,
    is_block: bool,
}

impl FileDisk {
    /// Opens a disk read-only.
    pub fn open(path: &Path) -> io::Result<FileDisk> {
        let file = File::open(path)?;
        Self::from_file(file, path)
    }

    /// Opens a disk for writing. Block devices are opened with `O_EXCL`, so the kernel refuses
    /// a device that is mounted or otherwise claimed, and a second job on the same target.
    pub fn open_rw(path: &Path) -> io::Result<FileDisk> {
        let meta = std::fs::metadata(path)?;
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        if meta.file_type().is_block_device() {
            opts.custom_flags(libc::O_EXCL);
        }
        let file = opts.open(path)?;
        if !meta.file_type().is_block_device() {
            lock_exclusive(&file)?;
        }
        Self::from_file(file, path)
    }

    /// Creates a new regular file of `len` bytes (sparse) and opens it for writing.
    pub fn create(path: &Path, len: u64, logical: u32) -> io::Result<FileDisk> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        lock_exclusive(&file)?;
        file.set_len(len)?;
        let mut disk = Self::from_file(file, path)?;
        disk.logical = logical;
        disk.physical = logical;
        Ok(disk)
    }

    fn from_file(file: File, path: &Path) -> io::Result<FileDisk> {
        let meta = file.metadata()?;
        let is_block = meta.file_type().is_block_device();
        let (len, logical, physical) = if is_block {
            let len = ioctl::size_bytes(&file)?;
            let logical = ioctl::logical_sector_size(&file)?;
            let physical = ioctl::physical_sector_size(&file)?;
            (len, logical, physical)
        } else if meta.file_type().is_file() {
            let logical = sniff_sector_size(&file, meta.len());
            (meta.len(), logical, logical)
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file or block device",
            ));
        };
        Ok(FileDisk {
            file,
            path: path.to_path_buf(),
            len,
            logical,
            physical,
            is_block,
        })
    }

    /// The path this disk was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True for a block device, false for a regular file.
    pub fn is_block_device(&self) -> bool {
        self.is_block
    }

    /// Drops `[start, start + len)`: BLKDISCARD on a block device (a TRIM on SSDs), a punched
    /// hole in a regular file. The range is narrowed to whole logical sectors. What a discarded
    /// range reads back as is up to the device, so only ranges that hold nothing are discarded.
    pub fn discard(&self, start: u64, len: u64) -> io::Result<()> {
        let ss = u64::from(self.logical);
        let from = start.div_ceil(ss) * ss;
        let to = start.saturating_add(len).min(self.len) / ss * ss;
        if from >= to {
            return Ok(());
        }
        if self.is_block {
            ioctl::discard(&self.file, from, to - from)
        } else {
            use std::os::fd::AsRawFd;
            let (off, n) = (
                i64::try_from(from).map_err(io::Error::other)?,
                i64::try_from(to - from).map_err(io::Error::other)?,
            );
            nix::fcntl::fallocate(
                self.file.as_raw_fd(),
                nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                    | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                off,
                n,
            )
            .map_err(io::Error::from)
        }
    }

    /// Tells the kernel the whole disk will be read sequentially.
    pub fn advise_sequential(&self) {
        // Advice only: failure changes nothing but speed.
        use std::os::fd::AsRawFd;
        let _ = nix::fcntl::posix_fadvise(
            self.file.as_raw_fd(),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
        );
    }
}

fn lock_exclusive(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::WouldBlock {
            Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "another job holds this file (flock)",
            ))
        } else {
            Err(err)
        }
    }
}

/// A raw disk in a regular file carries no sector size; a GPT header at byte 4096 and none at
/// 512 says it was made with 4096-byte sectors.
fn sniff_sector_size(file: &File, len: u64) -> u32 {
    let mut sig = [0u8; 8];
    let at = |off: u64, sig: &mut [u8; 8]| off + 8 <= len && file.read_exact_at(sig, off).is_ok();
    if at(512, &mut sig) && &sig == b"EFI PART" {
        return 512;
    }
    if at(4096, &mut sig) && &sig == b"EFI PART" {
        return 4096;
    }
    512
}

impl BlockDev for FileDisk {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len(), self.len)?;
        self.file.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len(), self.len)?;
        self.file.write_all_at(buf, offset)
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn logical_sector(&self) -> u32 {
        self.logical
    }

    fn physical_sector(&self) -> u32 {
        self.physical
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn start_writeback(&self) {
        ioctl::start_writeback(&self.file, 0, 0);
    }
}

fn check_range(offset: u64, len: usize, size: u64) -> io::Result<()> {
    let end = u64::try_from(len).ok().and_then(|l| offset.checked_add(l));
    match end {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("range {offset:#x}+{len:#x} is beyond the end of the disk ({size:#x} bytes)"),
        )),
    }
}

/// An in-memory disk, for unit tests of parsers and the engine.
#[derive(Debug)]
pub struct MemDisk {
    data: Mutex<Vec<u8>>,
    logical: u32,
}

impl MemDisk {
    /// A zero-filled disk of `len` bytes.
    pub fn new(len: usize, logical: u32) -> MemDisk {
        MemDisk {
            data: Mutex::new(vec![0; len]),
            logical,
        }
    }

    /// A disk holding `data`.
    pub fn from_vec(data: Vec<u8>, logical: u32) -> MemDisk {
        MemDisk {
            data: Mutex::new(data),
            logical,
        }
    }

    /// A copy of the contents.
    pub fn to_vec(&self) -> Vec<u8> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // A poisoned lock only means another test thread panicked; the bytes are still there.
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl BlockDev for MemDisk {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let data = self.lock();
        check_range(offset, buf.len(), data.len() as u64)?;
        let start = offset as usize;
        buf.copy_from_slice(&data[start..start + buf.len()]);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut data = self.lock();
        check_range(offset, buf.len(), data.len() as u64)?;
        let start = offset as usize;
        data[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.lock().len() as u64
    }

    fn logical_sector(&self) -> u32 {
        self.logical
    }

    fn physical_sector(&self) -> u32 {
        self.logical
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

/// A window of a disk: a partition, addressed from its own byte 0, bounds-checked.
#[derive(Clone, Copy)]
pub struct Region<'a> {
    dev: &'a dyn BlockDev,
    start: u64,
    len: u64,
}

impl<'a> Region<'a> {
    /// The window `[start, start + len)` of `dev`.
    pub fn new(dev: &'a dyn BlockDev, start: u64, len: u64) -> Region<'a> {
        Region { dev, start, len }
    }

    /// The whole device.
    pub fn whole(dev: &'a dyn BlockDev) -> Region<'a> {
        Region {
            dev,
            start: 0,
            len: dev.len(),
        }
    }

    /// Length of the window in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty window.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the window starts on the disk.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The device's logical sector size.
    pub fn logical_sector(&self) -> u32 {
        self.dev.logical_sector()
    }

    /// Reads exactly `buf.len()` bytes at `offset` inside the window.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len(), self.len)?;
        self.dev.read_exact_at(buf, self.start + offset)
    }

    /// Reads `len` bytes at `offset` into a new vector; `len` is capped by the window.
    pub fn read_vec(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        check_range(offset, len, self.len)?;
        let mut buf = vec![0u8; len];
        self.dev.read_exact_at(&mut buf, self.start + offset)?;
        Ok(buf)
    }
}

/// Is this path a block device?
pub fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memdisk_bounds() {
        let d = MemDisk::new(1024, 512);
        let mut buf = [0u8; 16];
        assert!(d.read_exact_at(&mut buf, 1008).is_ok());
        assert!(d.read_exact_at(&mut buf, 1009).is_err());
        assert!(d.read_exact_at(&mut buf, u64::MAX).is_err());
        d.write_all_at(&[7; 4], 100).unwrap();
        let r = Region::new(&d, 100, 8);
        assert_eq!(r.read_vec(0, 4).unwrap(), vec![7; 4]);
        assert!(r.read_vec(6, 4).is_err());
    }
}
