//! Resizing filesystems with the real tools from the field: ntfsresize (NTFS), e2fsck +
//! resize2fs (ext2/3/4), xfs_growfs on a temporary mount (XFS), `btrfs filesystem resize` on a
//! temporary mount (btrfs). A filesystem inside a disk is reached through an offset loop device
//! that we attach and detach ourselves; nothing else on the machine is touched.
//!
//! Also measures, read-only, the smallest size a filesystem can be shrunk to
//! (`ntfsresize --info`, `resize2fs -P`), for the image manifest and for clone.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};

use crate::disk::{BlockDev, FileDisk};
use crate::engine::save::human_bytes;
use crate::fs::FsKind;

/// Where a tool is looked for besides `$PATH` (root's tools live in sbin).
const TOOL_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The path of tool `name`, or an error naming the package that has it.
fn tool(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(TOOL_DIRS.iter().map(PathBuf::from));
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    let package = match name {
        "ntfsresize" => "ntfs-3g",
        "resize2fs" | "e2fsck" => "e2fsprogs",
        "xfs_growfs" => "xfsprogs",
        "btrfs" => "btrfs-progs",
        "losetup" | "mount" | "umount" => "util-linux / mount",
        _ => "?",
    };
    bail!("{name} is needed for this and was not found (package {package})")
}

/// Output of a finished command.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(name: &str, args: &[&OsStr]) -> Result<Ran> {
    let exe = tool(name)?;
    let out = Command::new(&exe)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    Ok(Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(6)..].join("\n    ")
}

/// Runs a tool that must exit with one of `ok` codes.
fn must(name: &str, args: &[&OsStr], ok: &[i32]) -> Result<String> {
    let r = run(name, args)?;
    if r.code.is_some_and(|c| ok.contains(&c)) {
        return Ok(r.stdout);
    }
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    bail!(
        "{name} {} failed ({}):\n    {}",
        shown.join(" "),
        r.code
            .map(|c| format!("exit {c}"))
            .unwrap_or_else(|| "killed".into()),
        tail(&format!("{}\n{}", r.stdout, r.stderr))
    )
}

/// A loop device over a byte range of a file or block device; detached on drop.
#[derive(Debug)]
pub struct LoopDev {
    path: PathBuf,
}

impl LoopDev {
    /// Attaches `[offset, offset + len)` of `file` (`read_only` when only reading).
    pub fn attach(
        file: &Path,
        offset: u64,
        len: u64,
        read_only: bool,
        sector_size: u32,
    ) -> Result<LoopDev> {
        let mut args: Vec<OsString> = vec![
            "--find".into(),
            "--show".into(),
            "--offset".into(),
            offset.to_string().into(),
            "--sizelimit".into(),
            len.to_string().into(),
        ];
        if read_only {
            args.push("--read-only".into());
        }
        if sector_size != 512 {
            args.push("--sector-size".into());
            args.push(sector_size.to_string().into());
        }
        args.push(file.as_os_str().to_owned());
        let refs: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
        let out = must("losetup", &refs, &[0])
            .with_context(|| format!("attaching a loop device to {}", file.display()))?;
        let dev = LoopDev {
            path: PathBuf::from(out.trim()),
        };
        let got = FileDisk::open(&dev.path)
            .map(|d| d.len())
            .with_context(|| format!("opening {}", dev.path.display()))?;
        if got != len {
            bail!(
                "{} has {got} bytes, expected {len} (byte {offset:#x} of {})",
                dev.path.display(),
                file.display()
            );
        }
        Ok(dev)
    }

    /// `/dev/loopN`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        // The kernel detaches a busy device (udev probing it) when its last user closes it.
        let _ = run("losetup", &[OsStr::new("-d"), self.path.as_os_str()]);
    }
}

/// A filesystem mounted on a fresh directory; unmounted and the directory removed on drop.
struct TempMount {
    dir: PathBuf,
}

impl TempMount {
    fn new(dev: &Path, fstype: &str, options: &str) -> Result<TempMount> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ferroclone-mnt-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let r = must(
            "mount",
            &[
                OsStr::new("-t"),
                OsStr::new(fstype),
                OsStr::new("-o"),
                OsStr::new(options),
                dev.as_os_str(),
                dir.as_os_str(),
            ],
            &[0],
        );
        if let Err(e) = r {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        Ok(TempMount { dir })
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        let _ = run("umount", &[self.dir.as_os_str()]);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Grows the filesystem of kind `fs` in `[start, start + len)` of `disk` to fill that range.
/// Returns a note for the log.
pub fn grow(disk: &Path, start: u64, len: u64, fs: FsKind, sector_size: u32) -> Result<String> {
    let lo = LoopDev::attach(disk, start, len, false, sector_size)?;
    let dev = lo.path().as_os_str();
    let how = match fs {
        FsKind::Ntfs => {
            must(
                "ntfsresize",
                &[OsStr::new("--force"), OsStr::new("--no-progress-bar"), dev],
                &[0],
            )?;
            "ntfsresize (Windows runs chkdsk once at its next boot, as ntfsresize asks)"
        }
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => {
            must(
                "e2fsck",
                &[OsStr::new("-f"), OsStr::new("-p"), dev],
                &[0, 1],
            )?;
            must("resize2fs", &[dev], &[0])?;
            "resize2fs"
        }
        FsKind::Xfs => {
            // nouuid: the source, with the same UUID, may be mounted.
            let m = TempMount::new(lo.path(), "xfs", "nouuid")?;
            must("xfs_growfs", &[m.dir.as_os_str()], &[0])?;
            "xfs_growfs"
        }
        FsKind::Btrfs => {
            // The kernel finds a btrfs by its fsid: with the source (same fsid) mounted, a
            // mount of the copy could reach the source. Refuse, and check what was mounted.
            let fsid = btrfs_fsid(lo.path())?;
            if Path::new("/sys/fs/btrfs").join(&fsid).exists() {
                bail!(
                    "a btrfs with the same fsid ({fsid}) is mounted on this machine; growing \
                     the copy would risk reaching it; unmount it and grow the copy with \
                     `btrfs filesystem resize max`"
                );
            }
            let m = TempMount::new(lo.path(), "btrfs", "rw")?;
            let show = must(
                "btrfs",
                &[
                    OsStr::new("filesystem"),
                    OsStr::new("show"),
                    m.dir.as_os_str(),
                ],
                &[0],
            )?;
            if !show.contains(&*lo.path().to_string_lossy()) {
                bail!(
                    "the mounted btrfs is not on {}: {show}",
                    lo.path().display()
                );
            }
            must(
                "btrfs",
                &[
                    OsStr::new("filesystem"),
                    OsStr::new("resize"),
                    OsStr::new("max"),
                    m.dir.as_os_str(),
                ],
                &[0],
            )?;
            "btrfs filesystem resize max"
        }
        other => bail!("ferroclone cannot grow {other}"),
    };
    Ok(format!("{fs} grown to {} with {how}", human_bytes(len)))
}

/// The fsid of the btrfs on `dev`, as text.
fn btrfs_fsid(dev: &Path) -> Result<String> {
    let d = FileDisk::open(dev).with_context(|| format!("opening {}", dev.display()))?;
    let mut sb = [0u8; 0x48];
    d.read_exact_at(&mut sb, 0x10000)
        .with_context(|| format!("reading the btrfs superblock of {}", dev.display()))?;
    if &sb[0x40..0x48] != b"_BHRfS_M" {
        bail!("no btrfs superblock on {}", dev.display());
    }
    crate::bytes::uuid_be(&sb, 0x20).context("btrfs fsid")
}

/// Shrinks the filesystem of kind `fs` that fills the regular file `file` so that it fits in
/// its first `new_size` bytes.
pub fn shrink(file: &Path, new_size: u64, fs: FsKind) -> Result<()> {
    let f = file.as_os_str();
    match fs {
        FsKind::Ntfs => {
            let size = new_size.to_string();
            must(
                "ntfsresize",
                &[
                    OsStr::new("--force"),
                    OsStr::new("--no-progress-bar"),
                    OsStr::new("--size"),
                    OsStr::new(&size),
                    f,
                ],
                &[0],
            )?;
        }
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => {
            must("e2fsck", &[OsStr::new("-f"), OsStr::new("-p"), f], &[0, 1])?;
            let size = format!("{}K", new_size / 1024);
            must("resize2fs", &[f, OsStr::new(&size)], &[0])?;
        }
        other => bail!("ferroclone cannot shrink {other}"),
    }
    Ok(())
}

/// The smallest size, in bytes, the filesystem in `[start, start + len)` of `disk` can be shrunk
/// to, as its own resize tool computes it; read-only. `None` when the tool is missing or says
/// nothing usable.
pub fn measure_min(
    disk: &Path,
    start: u64,
    len: u64,
    fs: FsKind,
    block_size: u32,
    sector_size: u32,
) -> Option<u64> {
    let probe = match fs {
        FsKind::Ntfs => "ntfsresize",
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => "resize2fs",
        _ => return None,
    };
    tool(probe).ok()?;
    let lo = LoopDev::attach(disk, start, len, true, sector_size).ok()?;
    let dev = lo.path().as_os_str();
    match fs {
        FsKind::Ntfs => {
            let r = run(
                "ntfsresize",
                &[
                    OsStr::new("--info"),
                    OsStr::new("--force"),
                    OsStr::new("--no-progress-bar"),
                    dev,
                ],
            )
            .ok()?;
            parse_after(&r.stdout, "You might resize at ")
        }
        _ => {
            let r = run("resize2fs", &[OsStr::new("-P"), dev]).ok()?;
            let blocks = parse_after(&r.stdout, "Estimated minimum size of the filesystem: ")?;
            blocks.checked_mul(u64::from(block_size).max(1024))
        }
    }
}

/// The number right after `prefix` in `text`.
fn parse_after(text: &str, prefix: &str) -> Option<u64> {
    let at = text.find(prefix)? + prefix.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Bytes free (for root) in the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir)
        .with_context(|| format!("checking the free space in {}", dir.display()))?;
    Ok(st.blocks_free().saturating_mul(st.fragment_size()))
}

/// A file in a scratch directory, removed on drop.
#[derive(Debug)]
pub struct ScratchFile {
    path: PathBuf,
}

impl ScratchFile {
    /// A new name for `what` in `dir` (the file is not created).
    pub fn name(dir: &Path, what: &str) -> ScratchFile {
        static N: AtomicU64 = AtomicU64::new(0);
        ScratchFile {
            path: dir.join(format!(
                "ferroclone-{what}-{}-{}.img",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            )),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The volume size an NTFS boot sector states, in bytes (for checks).
pub fn ntfs_volume_bytes(dev: &dyn BlockDev, start: u64) -> Option<u64> {
    let mut bs = [0u8; 512];
    dev.read_exact_at(&mut bs, start).ok()?;
    if &bs[3..11] != b"NTFS    " {
        return None;
    }
    let bps = u64::from(crate::bytes::le16(&bs, 0x0B)?);
    crate::bytes::le64(&bs, 0x28)?.checked_mul(bps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tool_output() {
        let t = "Collecting resizing constraints ...\nYou might resize at 77303808 bytes or 78 MB (freeing 99 MB).\n";
        assert_eq!(parse_after(t, "You might resize at "), Some(77303808));
        let t = "Estimated minimum size of the filesystem: 26016\n";
        assert_eq!(
            parse_after(t, "Estimated minimum size of the filesystem: "),
            Some(26016)
        );
        assert_eq!(parse_after("nothing", "You might"), None);
    }
}
