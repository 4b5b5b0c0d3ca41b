//! The repository of an unattended run (`ferroclone.repo=`): find the device by path, label or
//! UUID among the block devices the kernel sees, and mount it (the rescue environment has no
//! udev, so there is no /dev/disk/by-label; labels are read with [`crate::fs::detect`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cmdline::RepoSpec;
use crate::disk::{FileDisk, Region};
use crate::fs::{self, FsKind};

/// A block device that may hold the repository, with what its first sectors say.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// `/dev/NAME`.
    pub dev: PathBuf,
    /// The filesystem found on it.
    pub kind: FsKind,
    /// Its label.
    pub label: String,
    /// Its UUID or serial.
    pub uuid: String,
}

/// Reads the filesystem signature of one device (`None` when it cannot be opened).
pub fn probe(dev: &Path) -> Option<Candidate> {
    let disk = FileDisk::open(dev).ok()?;
    let info = fs::detect(&Region::whole(&disk)).ok()?;
    Some(Candidate {
        dev: dev.to_path_buf(),
        kind: info.kind,
        label: info.label,
        uuid: info.uuid,
    })
}

/// Every block device under `sys_block` (normally /sys/class/block) with a non-zero size,
/// RAM disks excluded, probed through `dev_dir` (normally /dev); sorted by name.
pub fn candidates(sys_block: &Path, dev_dir: &Path) -> Vec<Candidate> {
    let mut names: Vec<String> = std::fs::read_dir(sys_block)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .filter(|n| !n.starts_with("ram") && !n.starts_with("zram"))
        .filter(|n| {
            std::fs::read_to_string(sys_block.join(n).join("size"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .is_some_and(|s| s > 0)
        })
        .filter_map(|n| probe(&dev_dir.join(n)))
        .collect()
}

/// True when a candidate is the one the spec names.
pub fn matches(spec: &RepoSpec, c: &Candidate) -> bool {
    match spec {
        RepoSpec::Device(p) => c.dev == *p,
        RepoSpec::Label(l) => !c.label.is_empty() && c.label == *l,
        RepoSpec::Uuid(u) => {
            let norm = |s: &str| s.replace('-', "").to_ascii_lowercase();
            !c.uuid.is_empty() && norm(&c.uuid) == norm(u)
        }
        RepoSpec::Nfs { .. } | RepoSpec::Smb { .. } => false,
    }
}

/// Finds the one device the spec names; an error when two match (never guess which disk).
pub fn find(
    spec: &RepoSpec,
    sys_block: &Path,
    dev_dir: &Path,
) -> Result<Option<Candidate>, String> {
    if let RepoSpec::Device(p) = spec {
        if !p.exists() {
            return Ok(None);
        }
        return Ok(Some(probe(p).unwrap_or(Candidate {
            dev: p.clone(),
            kind: FsKind::Unknown,
            label: String::new(),
            uuid: String::new(),
        })));
    }
    let found: Vec<Candidate> = candidates(sys_block, dev_dir)
        .into_iter()
        .filter(|c| matches(spec, c))
        .collect();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.into_iter().next()),
        _ => Err(format!(
            "{spec} is ambiguous: {}",
            found
                .iter()
                .map(|c| c.dev.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Polls for the device until `timeout` (USB sticks appear late).
pub fn wait_for(spec: &RepoSpec, timeout: Duration) -> Result<Candidate, String> {
    let t0 = Instant::now();
    loop {
        if let Some(c) = find(spec, Path::new("/sys/class/block"), Path::new("/dev"))? {
            return Ok(c);
        }
        if t0.elapsed() >= timeout {
            return Err(format!(
                "repository {spec} not found after {} s",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The kernel filesystem types to try for a detected filesystem.
pub fn fstypes(kind: FsKind) -> &'static [&'static str] {
    match kind {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => &["ext4"],
        FsKind::Vfat => &["vfat"],
        FsKind::Exfat => &["exfat"],
        FsKind::Ntfs => &["ntfs3"],
        FsKind::Xfs => &["xfs"],
        FsKind::Btrfs => &["btrfs"],
        _ => &["ext4", "vfat", "exfat", "ntfs3", "xfs", "btrfs"],
    }
}

/// Mounts the repository read-write at `dir` (created if missing).
pub fn mount(c: &Candidate, dir: &Path) -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    if matches!(c.kind, FsKind::Swap | FsKind::Bitlocker | FsKind::Luks) {
        return Err(format!(
            "repository {} holds {}, not a filesystem ferroclone can write to",
            c.dev.display(),
            c.kind
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut last = String::new();
    for t in fstypes(c.kind) {
        match mount(
            Some(c.dev.as_path()),
            dir,
            Some(*t),
            MsFlags::MS_NOATIME,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            Err(e) => last = format!("mount -t {t} {} {}: {e}", c.dev.display(), dir.display()),
        }
    }
    Err(last)
}

/// Resolves a host name (or address) to an IPv4 address, through /etc/resolv.conf.
fn resolve(host: &str) -> Result<std::net::Ipv4Addr, String> {
    use std::net::{SocketAddr, ToSocketAddrs};
    if let Ok(ip) = host.parse() {
        return Ok(ip);
    }
    (host, 0)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .find_map(|a| match a {
            SocketAddr::V4(v4) => Some(*v4.ip()),
            SocketAddr::V6(_) => None,
        })
        .ok_or_else(|| format!("{host} has no IPv4 address"))
}

/// The `(fstype, source, options)` mount(2) attempts for a network repository, in order. The
/// kernel does the mount protocol itself, so no mount.nfs or mount.cifs helper is needed;
/// `soft` mounts make a vanished server an error instead of a hang.
pub fn network_mounts(
    spec: &RepoSpec,
    ip: std::net::Ipv4Addr,
) -> Vec<(&'static str, String, String)> {
    match spec {
        RepoSpec::Nfs { host, port, path } => {
            let src = format!("{host}:{path}");
            let port = port.map(|p| format!(",port={p}")).unwrap_or_default();
            let common = format!("addr={ip}{port},soft,timeo=100,retrans=3");
            // 4.1 before 4.2: over 4.2, reading back a freshly written image from nfs-ganesha
            // 4.3 failed with EIO (probably its READ_PLUS, which only 4.2 clients use); 4.1
            // worked.
            vec![
                ("nfs4", src.clone(), format!("vers=4.1,{common}")),
                ("nfs4", src.clone(), format!("vers=4.2,{common}")),
                (
                    "nfs",
                    src,
                    format!("vers=3,proto=tcp,mountproto=tcp,nolock,{common}"),
                ),
            ]
        }
        RepoSpec::Smb {
            user,
            password,
            host,
            share,
        } => {
            // In cifs options a comma inside a value is written twice.
            let esc = |s: &str| s.replace(',', ",,");
            let auth = if user.is_empty() {
                "guest".to_string()
            } else {
                format!("username={},password={}", esc(user), esc(password))
            };
            vec![(
                "cifs",
                format!("//{host}/{share}"),
                format!("ip={ip},unc=\\\\{host}\\{share},{auth},soft,echo_interval=10"),
            )]
        }
        _ => Vec::new(),
    }
}

/// Mounts an NFS or SMB repository at `dir`, retrying until `timeout` (DHCP and the server
/// may take a moment).
pub fn mount_network(spec: &RepoSpec, dir: &Path, timeout: Duration) -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    let (RepoSpec::Nfs { host, .. } | RepoSpec::Smb { host, .. }) = spec else {
        return Err(format!("{spec} is not a network repository"));
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let t0 = Instant::now();
    loop {
        let mut last = String::new();
        match resolve(host) {
            Err(e) => last = e,
            Ok(ip) => {
                for (fstype, src, opts) in network_mounts(spec, ip) {
                    match mount(
                        Some(src.as_str()),
                        dir,
                        Some(fstype),
                        MsFlags::MS_NOATIME,
                        Some(opts.as_str()),
                    ) {
                        Ok(()) => return Ok(()),
                        Err(e) => last = format!("mount -t {fstype} {spec}: {e}"),
                    }
                }
            }
        }
        if t0.elapsed() >= timeout {
            return Err(last);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Flushes and unmounts `dir` (lazily when it is busy).
pub fn unmount(dir: &Path) -> Result<(), String> {
    use nix::mount::{umount2, MntFlags};
    nix::unistd::sync();
    match umount2(dir, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = umount2(dir, MntFlags::MNT_DETACH);
            Err(format!("unmounting {}: {e}", dir.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(dev: &str, kind: FsKind, label: &str, uuid: &str) -> Candidate {
        Candidate {
            dev: dev.into(),
            kind,
            label: label.into(),
            uuid: uuid.into(),
        }
    }

    #[test]
    fn network_mount_options() {
        let ip = "10.0.2.2".parse().unwrap();
        let nfs = RepoSpec::parse("nfs://server/srv/img").unwrap();
        let m = network_mounts(&nfs, ip);
        assert_eq!(m[0].0, "nfs4");
        assert_eq!(m[0].1, "server:/srv/img");
        assert!(m[0].2.starts_with("vers=4.1,addr=10.0.2.2,"), "{}", m[0].2);
        assert_eq!(m.last().unwrap().0, "nfs");
        let m = network_mounts(&RepoSpec::parse("nfs://s:20490/e").unwrap(), ip);
        assert!(m[0].2.contains(",port=20490,"), "{}", m[0].2);
        assert!(m.last().unwrap().2.contains("nolock"));
        let smb = RepoSpec::parse("smb://bob:a%2Cb@nas/backups").unwrap();
        let m = network_mounts(&smb, ip);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].1, "//nas/backups");
        assert!(
            m[0].2
                .starts_with(r"ip=10.0.2.2,unc=\\nas\backups,username=bob,password=a,,b,"),
            "{}",
            m[0].2
        );
        let guest = RepoSpec::parse("smb://nas/pub").unwrap();
        assert!(network_mounts(&guest, ip)[0].2.contains(",guest,"));
        assert!(!matches(&nfs, &cand("/dev/sda", FsKind::Ext4, "", "")));
    }

    #[test]
    fn matching() {
        let c = cand(
            "/dev/sda",
            FsKind::Ext4,
            "REPO",
            "0a1b2c3d-0000-4000-8000-00000000abcd",
        );
        assert!(matches(&RepoSpec::Label("REPO".into()), &c));
        assert!(!matches(&RepoSpec::Label("repo".into()), &c));
        assert!(matches(
            &RepoSpec::Uuid("0A1B2C3D-0000-4000-8000-00000000ABCD".into()),
            &c
        ));
        assert!(matches(&RepoSpec::Device("/dev/sda".into()), &c));
        assert!(!matches(&RepoSpec::Device("/dev/sdb".into()), &c));
        let fat = cand("/dev/sdb1", FsKind::Vfat, "", "1234-ABCD");
        assert!(matches(&RepoSpec::Uuid("1234-abcd".into()), &fat));
        assert!(!matches(&RepoSpec::Label(String::new()), &fat));
    }

    /// A fake /sys/class/block and /dev: two ext4 "disks" in files, one with the label.
    #[test]
    fn find_by_label_among_files() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path().join("sys");
        let dev = tmp.path().join("dev");
        std::fs::create_dir_all(&dev).unwrap();
        let mk = |name: &str, label: &[u8], size: &str| {
            std::fs::create_dir_all(sys.join(name)).unwrap();
            std::fs::write(sys.join(name).join("size"), size).unwrap();
            // A minimal ext4 superblock at 1024: magic 0xEF53 at 0x38, label at 0x78,
            // UUID at 0x68, feature_incompat extents (0x40) at 0x60.
            let mut d = vec![0u8; 8192];
            let sb = 1024;
            d[sb + 0x38..sb + 0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
            d[sb + 0x18..sb + 0x1C].copy_from_slice(&2u32.to_le_bytes());
            d[sb + 0x04..sb + 0x08].copy_from_slice(&8u32.to_le_bytes());
            d[sb + 0x60..sb + 0x64].copy_from_slice(&0x40u32.to_le_bytes());
            d[sb + 0x68] = 0xAB;
            d[sb + 0x78..sb + 0x78 + label.len()].copy_from_slice(label);
            std::fs::write(dev.join(name), d).unwrap();
        };
        mk("vda", b"", "16");
        mk("vdb", b"REPO", "16");
        mk("vdc", b"REPO", "0"); // size 0: skipped
        mk("ram0", b"REPO", "16"); // RAM disk: skipped
        let found = find(&RepoSpec::Label("REPO".into()), &sys, &dev)
            .unwrap()
            .expect("found");
        assert_eq!(found.dev, dev.join("vdb"));
        assert!(
            matches!(found.kind, FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4),
            "{:?}",
            found.kind
        );
        assert!(find(&RepoSpec::Label("NOPE".into()), &sys, &dev)
            .unwrap()
            .is_none());
        mk("vdd", b"REPO", "16");
        let err = find(&RepoSpec::Label("REPO".into()), &sys, &dev).unwrap_err();
        assert!(err.contains("ambiguous") && err.contains("vdd"), "{err}");
    }
}
