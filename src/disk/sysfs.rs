//! Disk discovery from /sys/block, and the "is it in use?" questions asked before writing.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One partition as the kernel sees it.
#[derive(Debug, Clone, Serialize)]
pub struct SysPartition {
    /// Kernel name, e.g. `sda1`.
    pub name: String,
    /// Partition number.
    pub number: u32,
    /// Start in bytes.
    pub start_bytes: u64,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Where it is mounted, if anywhere.
    pub mountpoint: Option<String>,
}

/// One disk as the kernel sees it.
#[derive(Debug, Clone, Serialize)]
pub struct SysDisk {
    /// `/dev/sda`.
    pub path: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Model string (sanitised).
    pub model: String,
    /// Serial number (sanitised).
    pub serial: String,
    /// `usb`, `nvme`, `sata`, `virtio`, `loop`, …
    pub transport: String,
    /// Removable media flag.
    pub removable: bool,
    /// Read-only flag.
    pub read_only: bool,
    /// The disk itself is mounted (a filesystem without a table).
    pub mountpoint: Option<String>,
    /// Its partitions.
    pub partitions: Vec<SysPartition>,
}

fn read_trim(p: &Path) -> String {
    fs::read_to_string(p)
        .map(|s| sanitize(s.trim()))
        .unwrap_or_default()
}

fn read_u64(p: &Path) -> u64 {
    read_trim(p).parse().unwrap_or(0)
}

/// Replaces control characters so a hostile model or label cannot drive the terminal.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Mounted block devices by `major:minor`, with their mount points.
pub fn mounts() -> Vec<(String, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let _id = f.next()?;
            let _parent = f.next()?;
            let devno = f.next()?;
            let _root = f.next()?;
            let mp = f.next()?;
            Some((devno.to_string(), mp.replace("\\040", " ")))
        })
        .collect()
}

fn mountpoint_of(devno: &str, mounts: &[(String, String)]) -> Option<String> {
    mounts
        .iter()
        .find(|(d, _)| d == devno)
        .map(|(_, m)| m.clone())
}

fn transport_of(sys: &Path, name: &str) -> String {
    if name.starts_with("loop") {
        return "loop".into();
    }
    if name.starts_with("nvme") {
        return "nvme".into();
    }
    if name.starts_with("mmcblk") {
        return "mmc".into();
    }
    let real = fs::canonicalize(sys).unwrap_or_default();
    let s = real.to_string_lossy();
    if s.contains("/usb") {
        "usb".into()
    } else if s.contains("/ata") {
        "sata".into()
    } else if s.contains("virtio") {
        "virtio".into()
    } else if s.contains("/host") {
        "scsi".into()
    } else {
        String::new()
    }
}

/// Every disk in /sys/block with a non-zero size (ram and zram devices left out).
pub fn list_disks() -> Vec<SysDisk> {
    let mounts = mounts();
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/sys/block") else {
        return out;
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        if name.starts_with("ram") || name.starts_with("zram") {
            continue;
        }
        let sys = PathBuf::from("/sys/block").join(&name);
        let size = read_u64(&sys.join("size")) * 512;
        if size == 0 {
            continue;
        }
        let mut model = read_trim(&sys.join("device/model"));
        if model.is_empty() && name.starts_with("loop") {
            model = read_trim(&sys.join("loop/backing_file"));
        }
        let mut serial = read_trim(&sys.join("device/serial"));
        if serial.is_empty() {
            serial = read_trim(&sys.join("serial"));
        }
        let mut partitions = Vec::new();
        if let Ok(entries) = fs::read_dir(&sys) {
            for e in entries.filter_map(|e| e.ok()) {
                let p = e.path();
                if !p.join("partition").exists() {
                    continue;
                }
                let pname = e.file_name().to_string_lossy().into_owned();
                partitions.push(SysPartition {
                    number: read_u64(&p.join("partition")) as u32,
                    start_bytes: read_u64(&p.join("start")) * 512,
                    size_bytes: read_u64(&p.join("size")) * 512,
                    mountpoint: mountpoint_of(&read_trim(&p.join("dev")), &mounts),
                    name: pname,
                });
            }
        }
        partitions.sort_by_key(|p| p.number);
        out.push(SysDisk {
            path: format!("/dev/{name}"),
            size_bytes: size,
            model,
            serial,
            transport: transport_of(&sys, &name),
            removable: read_u64(&sys.join("removable")) == 1,
            read_only: read_u64(&sys.join("ro")) == 1,
            mountpoint: mountpoint_of(&read_trim(&sys.join("dev")), &mounts),
            partitions,
        });
    }
    out
}

fn devno(rdev: u64) -> String {
    format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    )
}

/// The /sys/block directory of the whole disk that holds `devno` (`8:1` → /sys/block/sda).
fn whole_disk_sys(devno: &str) -> Option<PathBuf> {
    let real = fs::canonicalize(format!("/sys/dev/block/{devno}")).ok()?;
    if real.join("partition").exists() {
        real.parent().map(Path::to_path_buf)
    } else {
        Some(real)
    }
}

/// Why writing to `target` must be refused, if it must: it (or one of its partitions) is
/// mounted, it is a loop device over a file that is, or it holds `image_dir`.
pub fn target_in_use(target: &Path, image_dir: Option<&Path>) -> Option<String> {
    let meta = fs::metadata(target).ok()?;
    let mounts = mounts();
    let mounted: HashSet<&str> = mounts.iter().map(|(d, _)| d.as_str()).collect();
    if meta.file_type().is_block_device() {
        let dn = devno(meta.rdev());
        let sys = whole_disk_sys(&dn)?;
        let mut nodes = vec![read_trim(&sys.join("dev"))];
        if let Ok(entries) = fs::read_dir(&sys) {
            for e in entries.filter_map(|e| e.ok()) {
                if e.path().join("partition").exists() {
                    nodes.push(read_trim(&e.path().join("dev")));
                }
            }
        }
        for n in &nodes {
            if mounted.contains(n.as_str()) {
                let mp = mountpoint_of(n, &mounts).unwrap_or_default();
                return Some(format!(
                    "{} holds a mounted filesystem ({n} on {mp}); unmount it first",
                    target.display()
                ));
            }
        }
        if let Some(dir) = image_dir {
            if let Some(holder) = dir_disk(dir) {
                if fs::canonicalize(&holder).ok() == fs::canonicalize(&sys).ok() {
                    return Some(format!(
                        "{} holds the image directory {}",
                        target.display(),
                        dir.display()
                    ));
                }
            }
        }
    } else {
        // A regular file: is it the backing file of a loop device that is mounted?
        let canon = fs::canonicalize(target).ok()?;
        for d in list_disks().iter().filter(|d| d.transport == "loop") {
            let name = d.path.trim_start_matches("/dev/");
            let backing = read_trim(
                &PathBuf::from("/sys/block")
                    .join(name)
                    .join("loop/backing_file"),
            );
            if Path::new(&backing) == canon
                && (d.mountpoint.is_some() || d.partitions.iter().any(|p| p.mountpoint.is_some()))
            {
                return Some(format!(
                    "{} is the backing file of {}, which is mounted",
                    target.display(),
                    d.path
                ));
            }
        }
    }
    None
}

/// Facts about a source disk that a save must check: the mounted partitions (a warning: the
/// image of a filesystem in use may be inconsistent) and whether it holds `image_dir` (refused:
/// the image would be written into what is being read).
pub fn source_conflicts(source: &Path, image_dir: &Path) -> (Vec<String>, Option<String>) {
    let Ok(meta) = fs::metadata(source) else {
        return (Vec::new(), None);
    };
    if !meta.file_type().is_block_device() {
        return (Vec::new(), None);
    }
    let mounts = mounts();
    let Some(sys) = whole_disk_sys(&devno(meta.rdev())) else {
        return (Vec::new(), None);
    };
    let mut nodes = vec![(sys.clone(), read_trim(&sys.join("dev")))];
    if let Ok(entries) = fs::read_dir(&sys) {
        for e in entries.filter_map(|e| e.ok()) {
            if e.path().join("partition").exists() {
                nodes.push((e.path(), read_trim(&e.path().join("dev"))));
            }
        }
    }
    let warnings = nodes
        .iter()
        .filter_map(|(p, n)| {
            mountpoint_of(n, &mounts).map(|mp| {
                format!(
                    "{} is mounted on {mp}: its image may be inconsistent if it changes during the save",
                    p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
                )
            })
        })
        .collect();
    let holder = dir_disk(image_dir);
    let conflict = holder
        .filter(|h| fs::canonicalize(h).ok() == fs::canonicalize(&sys).ok())
        .map(|_| {
            format!(
                "the image directory {} is on the source disk {}; save to another disk",
                image_dir.display(),
                source.display()
            )
        });
    (warnings, conflict)
}

/// True when `dir` (or the nearest existing parent) lives on the disk `dev`, a block device
/// (or on one of its partitions).
pub fn dir_on_disk(dir: &Path, dev: &Path) -> bool {
    let Ok(meta) = fs::metadata(dev) else {
        return false;
    };
    if !meta.file_type().is_block_device() {
        return false;
    }
    match (dir_disk(dir), whole_disk_sys(&devno(meta.rdev()))) {
        (Some(a), Some(b)) => fs::canonicalize(a).ok() == fs::canonicalize(b).ok(),
        _ => false,
    }
}

/// How `a` and `b` share storage, if they do: the same file or device (canonical path, inode,
/// or device number), partitions of one disk, or a loop device over the other file.
pub fn same_storage(a: &Path, b: &Path) -> Option<String> {
    let (ca, cb) = (fs::canonicalize(a).ok()?, fs::canonicalize(b).ok()?);
    if ca == cb {
        return Some(format!("{} and {} are the same", a.display(), b.display()));
    }
    let (ma, mb) = (fs::metadata(&ca).ok()?, fs::metadata(&cb).ok()?);
    let (ba, bb) = (
        ma.file_type().is_block_device(),
        mb.file_type().is_block_device(),
    );
    if ba && bb {
        if ma.rdev() == mb.rdev() {
            return Some(format!(
                "{} and {} are the same device ({})",
                a.display(),
                b.display(),
                devno(ma.rdev())
            ));
        }
        let (wa, wb) = (
            whole_disk_sys(&devno(ma.rdev())),
            whole_disk_sys(&devno(mb.rdev())),
        );
        if wa.is_some() && wa == wb {
            return Some(format!(
                "{} and {} are on the same disk",
                a.display(),
                b.display()
            ));
        }
        return None;
    }
    if !ba && !bb {
        if ma.dev() == mb.dev() && ma.ino() == mb.ino() {
            return Some(format!(
                "{} and {} are the same file",
                a.display(),
                b.display()
            ));
        }
        return None;
    }
    // A loop device over the other one, a regular file.
    let (dev, file, meta) = if ba { (a, &cb, &ma) } else { (b, &ca, &mb) };
    let sys = whole_disk_sys(&devno(meta.rdev()))?;
    let backing = read_trim(&sys.join("loop/backing_file"));
    (Path::new(&backing) == file.as_path())
        .then(|| format!("{} is a loop device over {}", dev.display(), file.display()))
}

/// The /sys/block directory of the disk holding `dir`.
fn dir_disk(dir: &Path) -> Option<PathBuf> {
    let mut probe = dir.to_path_buf();
    while !probe.exists() {
        probe = match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
    }
    let meta = fs::metadata(probe).ok()?;
    whole_disk_sys(&devno(meta.dev()))
}

/// Model and serial of a block device, for the image manifest.
pub fn model_serial(path: &Path) -> (String, String) {
    let Ok(meta) = fs::metadata(path) else {
        return Default::default();
    };
    if !meta.file_type().is_block_device() {
        return Default::default();
    }
    let Some(sys) = whole_disk_sys(&devno(meta.rdev())) else {
        return Default::default();
    };
    let mut serial = read_trim(&sys.join("device/serial"));
    if serial.is_empty() {
        serial = read_trim(&sys.join("serial"));
    }
    (read_trim(&sys.join("device/model")), serial)
}
