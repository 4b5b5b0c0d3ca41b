//! What the wizard shows, as plain data, and the functions that gather it: disks (from
//! /sys/block and `--disk` files), the repository (free space, images). The gathering runs on a
//! worker thread; the state machine and the screens only ever see these structs.

use std::path::{Path, PathBuf};

use crate::disk::sysfs;
use crate::engine::inspect::Inspected;
use crate::image::manifest::MANIFEST_FILE;
use crate::image::reader::Image;

/// One partition of a disk in the picker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// Partition number.
    pub number: u32,
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// Filesystem (`ntfs`, `vfat`, … `unknown`).
    pub fs: String,
    /// Filesystem label, or the GPT name when there is none.
    pub label: String,
    /// Bytes a save would read.
    pub used: u64,
    /// Where it is mounted.
    pub mountpoint: Option<String>,
}

/// One disk (block device or file) in the picker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    /// `/dev/sdb` or the file's path.
    pub path: PathBuf,
    /// What the user types to confirm overwriting it: `sdb`, or the file name.
    pub name: String,
    /// A regular file given with `--disk`.
    pub is_file: bool,
    /// False for a `--disk` file that does not exist yet (a restore creates it).
    pub exists: bool,
    /// Size in bytes.
    pub size: u64,
    /// Model.
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// `usb`, `sata`, `nvme`, `file`, …
    pub transport: String,
    /// Removable media.
    pub removable: bool,
    /// Read-only.
    pub read_only: bool,
    /// `gpt`, `mbr`, `none`, or empty when unreadable.
    pub table: String,
    /// Partitions, in table order.
    pub partitions: Vec<PartInfo>,
    /// Why it cannot be written: it or a partition is mounted.
    pub in_use: Option<String>,
    /// It holds the image repository.
    pub holds_repo: bool,
    /// Why its table could not be read, if it could not.
    pub error: Option<String>,
}

impl DiskInfo {
    /// Bytes a save of the whole disk reads (partitions' used bytes; the boot area is small).
    pub fn used(&self) -> u64 {
        if self.partitions.is_empty() {
            self.size
        } else {
            self.partitions.iter().map(|p| p.used).sum()
        }
    }

    /// Why this disk cannot be saved, if it cannot.
    pub fn not_a_source(&self) -> Option<String> {
        if !self.exists {
            return Some(format!("{} does not exist yet", self.path.display()));
        }
        if self.holds_repo {
            return Some(format!(
                "{} holds the image repository; save it to a repository on another disk",
                self.path.display()
            ));
        }
        self.error
            .as_ref()
            .map(|e| format!("{} cannot be read: {e}", self.path.display()))
    }

    /// Why this disk cannot be written, if it cannot.
    pub fn not_a_target(&self) -> Option<String> {
        if self.holds_repo {
            return Some(format!(
                "{} holds the image repository; it cannot be a target",
                self.path.display()
            ));
        }
        if let Some(r) = &self.in_use {
            return Some(r.clone());
        }
        if self.read_only {
            return Some(format!("{} is read-only", self.path.display()));
        }
        None
    }
}

/// One partition stored in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePart {
    /// Partition number.
    pub number: u32,
    /// Filesystem.
    pub fs: String,
    /// Label.
    pub label: String,
    /// Partition size on the source.
    pub size: u64,
    /// Bytes stored.
    pub stored: u64,
}

/// One image directory in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// Directory name.
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// A manifest was read: the image can be restored.
    pub complete: bool,
    /// For an incomplete image, why.
    pub problem: Option<String>,
    /// When it was made (RFC 3339), empty if unknown.
    pub created: String,
    /// Source disk path.
    pub source: String,
    /// Source disk size.
    pub source_size: u64,
    /// `gpt`, `mbr`, `none`.
    pub table: String,
    /// Bytes in the image's files.
    pub size: u64,
    /// The partitions stored.
    pub partitions: Vec<ImagePart>,
}

/// A scanned repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfo {
    /// The directory.
    pub path: PathBuf,
    /// Free bytes (statvfs, for an unprivileged writer).
    pub free: u64,
    /// Size of its filesystem.
    pub total: u64,
    /// Images found, complete ones newest first, then incomplete ones.
    pub images: Vec<ImageEntry>,
    /// Why a save of the chosen source cannot go there (the repository is on that disk).
    pub conflict: Option<String>,
}

/// The whole disk name a user types: `/dev/sdb` → `sdb`, `/x/disk.img` → `disk.img`.
pub fn confirm_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn inspect_into(d: &mut DiskInfo) {
    match Inspected::open(&d.path) {
        Ok(ins) => {
            let s = ins.summary();
            d.table = s.table.clone();
            if d.size == 0 {
                d.size = s.size_bytes;
            }
            let sys_mounts: Vec<(u32, Option<String>)> = d
                .partitions
                .iter()
                .map(|p| (p.number, p.mountpoint.clone()))
                .collect();
            d.partitions = s
                .partitions
                .iter()
                .map(|p| PartInfo {
                    number: p.number,
                    start: p.start_bytes,
                    size: p.size_bytes,
                    fs: p.fs.to_string(),
                    label: if p.label.is_empty() {
                        p.name.clone()
                    } else {
                        p.label.clone()
                    },
                    used: p.used_bytes,
                    mountpoint: sys_mounts
                        .iter()
                        .find(|(n, _)| *n == p.number)
                        .and_then(|(_, m)| m.clone()),
                })
                .collect();
        }
        Err(e) => d.error = Some(format!("{e:#}")),
    }
}

/// Every disk: the `extra` files first (in the order given), then the machine's disks. Each is
/// inspected (table, filesystems, used bytes) and marked when it is in use or holds `repo`.
pub fn scan_disks(extra: &[PathBuf], repo: Option<&Path>) -> Vec<DiskInfo> {
    let mut out = Vec::new();
    for path in extra {
        let meta = std::fs::metadata(path).ok();
        let mut d = DiskInfo {
            path: path.clone(),
            name: confirm_name(path),
            is_file: meta.as_ref().is_none_or(|m| m.is_file()),
            exists: meta.is_some(),
            size: meta.as_ref().map(|m| m.len()).unwrap_or(0),
            model: String::new(),
            serial: String::new(),
            transport: "file".into(),
            removable: false,
            read_only: false,
            table: String::new(),
            partitions: Vec::new(),
            in_use: None,
            holds_repo: false,
            error: None,
        };
        if d.exists {
            if d.size > 0 {
                inspect_into(&mut d);
            }
            d.in_use = sysfs::target_in_use(path, repo);
        }
        out.push(d);
    }
    for s in sysfs::list_disks() {
        let path = PathBuf::from(&s.path);
        if out.iter().any(|d| d.path == path) {
            continue;
        }
        let mut d = DiskInfo {
            name: confirm_name(&path),
            path: path.clone(),
            is_file: false,
            exists: true,
            size: s.size_bytes,
            model: s.model.clone(),
            serial: s.serial.clone(),
            transport: s.transport.clone(),
            removable: s.removable,
            read_only: s.read_only,
            table: String::new(),
            partitions: s
                .partitions
                .iter()
                .map(|p| PartInfo {
                    number: p.number,
                    start: p.start_bytes,
                    size: p.size_bytes,
                    fs: String::new(),
                    label: String::new(),
                    used: p.size_bytes,
                    mountpoint: p.mountpoint.clone(),
                })
                .collect(),
            in_use: None,
            holds_repo: false,
            error: None,
        };
        // Loop devices are left unopened: they belong to whoever set them up (and in the
        // rescue system the root filesystem is one); a disk file is given with --disk instead.
        if s.transport != "loop" {
            inspect_into(&mut d);
        }
        // Asked without the repository so that "mounted" and "holds the repository" stay apart.
        d.in_use = sysfs::target_in_use(&path, None).or_else(|| {
            s.mountpoint
                .as_ref()
                .map(|m| format!("{} is mounted on {m}; unmount it first", s.path))
        });
        if let Some(r) = repo {
            d.holds_repo = sysfs::source_conflicts(&path, r).1.is_some();
        }
        out.push(d);
    }
    out
}

/// Free and total bytes of the filesystem holding `dir`.
pub fn free_space(dir: &Path) -> std::io::Result<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let frag = st.fragment_size();
    Ok((
        st.blocks_available().saturating_mul(frag),
        st.blocks().saturating_mul(frag),
    ))
}

/// Reads one image directory; `None` when it is not an image at all.
pub fn read_image(path: &Path) -> Option<ImageEntry> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let files: Vec<String> = std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let size = std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    let looks_like_image = files
        .iter()
        .any(|f| f == MANIFEST_FILE || f == "disk.map" || f == "disk.000" || f.ends_with(".idx"));
    if !looks_like_image && !name.ends_with(".partial") {
        return None;
    }
    let mut e = ImageEntry {
        name,
        path: path.to_path_buf(),
        complete: false,
        problem: None,
        created: String::new(),
        source: String::new(),
        source_size: 0,
        table: String::new(),
        size,
        partitions: Vec::new(),
    };
    if e.name.ends_with(".partial") {
        e.problem = Some("incomplete: its save did not finish".into());
        return Some(e);
    }
    match Image::open(path) {
        Ok(img) => {
            let m = &img.manifest;
            e.complete = true;
            e.created = m.created.clone();
            e.source = sysfs::sanitize(&m.source.path);
            e.source_size = m.source.size_bytes;
            e.table = m.table.kind.clone();
            e.partitions = m
                .partitions
                .iter()
                .map(|p| {
                    let src = m.source_partition(p.number);
                    ImagePart {
                        number: p.number,
                        fs: p.fs.to_string(),
                        label: src.map(|s| sysfs::sanitize(&s.label)).unwrap_or_default(),
                        size: src.map(|s| s.size_bytes).unwrap_or(0),
                        stored: p.stored_bytes,
                    }
                })
                .collect();
        }
        Err(err) => {
            e.problem = Some(if files.iter().any(|f| f == MANIFEST_FILE) {
                format!("unreadable: {err}")
            } else {
                "incomplete: no manifest (its save did not finish)".into()
            });
        }
    }
    Some(e)
}

/// Scans a repository directory: free space and the images in it. `source` is the disk about
/// to be saved, if any: a repository on it is refused.
pub fn scan_repo(dir: &Path, source: Option<&Path>) -> Result<RepoInfo, String> {
    if dir.as_os_str().is_empty() {
        return Err("type the path of a mounted directory".into());
    }
    if !dir.is_dir() {
        return Err(format!(
            "{} is not a directory (mount the repository first, e.g. from the shell)",
            dir.display()
        ));
    }
    let (free, total) = free_space(dir)
        .map_err(|e| format!("cannot read the free space of {}: {e}", dir.display()))?;
    let mut images: Vec<ImageEntry> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| read_image(&e.path()))
        .collect();
    images.sort_by(|a, b| {
        b.complete
            .cmp(&a.complete)
            .then_with(|| b.created.cmp(&a.created))
            .then_with(|| a.name.cmp(&b.name))
    });
    let conflict = source.and_then(|s| sysfs::source_conflicts(s, dir).1);
    Ok(RepoInfo {
        path: dir.to_path_buf(),
        free,
        total,
        images,
        conflict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_to_type() {
        assert_eq!(confirm_name(Path::new("/dev/sdb")), "sdb");
        assert_eq!(confirm_name(Path::new("/var/tmp/x/disk.img")), "disk.img");
    }

    #[test]
    fn repo_scan_lists_complete_incomplete_and_skips_others() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("photos")).unwrap();
        std::fs::create_dir(t.path().join("old.partial")).unwrap();
        std::fs::create_dir(t.path().join("broken")).unwrap();
        std::fs::write(t.path().join("broken/disk.000"), b"x").unwrap();
        std::fs::write(t.path().join("notes.txt"), b"x").unwrap();
        let r = scan_repo(t.path(), None).unwrap();
        let names: Vec<&str> = r.images.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["broken", "old.partial"]);
        assert!(r.images.iter().all(|i| !i.complete && i.problem.is_some()));
        assert!(r.total > 0);
        assert!(scan_repo(&t.path().join("nope"), None).is_err());
        assert!(scan_repo(Path::new(""), None).is_err());
    }

    #[test]
    fn missing_extra_disk_is_a_new_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("new.img");
        let d = scan_disks(std::slice::from_ref(&p), None);
        assert_eq!(d[0].path, p);
        assert!(!d[0].exists);
        assert!(d[0].not_a_source().is_some());
        assert!(d[0].not_a_target().is_none());
    }
}
