//! NTFS: volumes made by `mkntfs` in regular files and filled through `ntfs-3g` (FUSE), with
//! stale data left in free space. The used map is checked against partclone.ntfs's count (plus
//! the partition tail partclone leaves out); then save → restore onto a target pre-filled with
//! 0xA5 → `ntfsfix -n` (alternate boot sector OK) and every file's SHA-256 through a read-only
//! ntfs-3g mount.
//!
//! A missing tool (mkntfs, ntfs-3g, ntfsfix, partclone.ntfs, fusermount) or /dev/fuse fails the
//! tests: CI installs them (scripts/setup.sh).

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{fc_ok, ok, pattern_file, sh, tempdir};

const MIB: u64 = 1 << 20;

fn have_tools() -> bool {
    let missing: Vec<&str> = [
        "mkntfs",
        "ntfs-3g",
        "ntfsfix",
        "partclone.ntfs",
        "fusermount",
    ]
    .into_iter()
    .filter(|t| {
        !Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
    .collect();
    // CI installs every tool (scripts/setup.sh): a missing one is a failure, not a skip.
    assert!(
        missing.is_empty() && Path::new("/dev/fuse").exists(),
        "the NTFS tests need {missing:?} and /dev/fuse; run scripts/setup.sh"
    );
    true
}

/// An ntfs-3g mount, run in the foreground (`no_detach`) so that unmounting can wait for the
/// daemon to exit, i.e. for every write to reach the image file. Unmounted on drop.
struct Mount {
    dir: PathBuf,
    child: Option<Child>,
}

impl Mount {
    fn new(image: &Path, dir: &Path, read_only: bool) -> Mount {
        std::fs::create_dir_all(dir).expect("mount point");
        let opts = if read_only {
            "ro,no_detach"
        } else {
            "no_detach"
        };
        let child = Command::new("ntfs-3g")
            .args(["-o", opts])
            .arg(image)
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ntfs-3g");
        let mut m = Mount {
            dir: dir.to_path_buf(),
            child: Some(child),
        };
        let start = Instant::now();
        loop {
            let mounted = Command::new("mountpoint")
                .arg("-q")
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success());
            if mounted {
                return m;
            }
            if let Some(Ok(Some(status))) = m.child.as_mut().map(Child::try_wait) {
                m.child = None;
                panic!("ntfs-3g {} exited: {status}", image.display());
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "ntfs-3g did not mount {}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn unmount(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("sync").status();
        let ok = Command::new("fusermount")
            .arg("-u")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Only the ntfs-3g process this test started.
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Seeded xorshift bytes.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// What goes into a volume.
struct Content {
    small_dirs: usize,
    small_per_dir: usize,
    root_files: usize,
    binaries: usize,
    big_mib: &'static [u64],
    stale_mib: u64,
    hiberfil: bool,
}

/// Fills a mounted volume; returns the bytes of file data written (stale data excluded).
fn populate(root: &Path, c: &Content) -> u64 {
    let mut total = 0u64;
    let mut write = |p: PathBuf, data: &[u8]| {
        std::fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        total += data.len() as u64;
    };
    std::fs::create_dir_all(root.join("docs")).unwrap();
    for i in 0..20 {
        let text: String = (0..200 + i * 37)
            .map(|l| {
                format!(
                    "{i}:{l} The quick brown fox jumps over the lazy dog, ferroclone NTFS test.\n"
                )
            })
            .collect();
        write(
            root.join("docs").join(format!("notes-{i:02}.txt")),
            text.as_bytes(),
        );
    }
    for d in 0..c.small_dirs {
        let dir = root.join("many").join(format!("d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..c.small_per_dir {
            let n = (d * 7919 + f * 104_729) % 3000;
            let data = random_bytes((d * 100_000 + f) as u64, n);
            write(dir.join(format!("f{f:04}.dat")), &data);
        }
    }
    for f in 0..c.root_files {
        write(
            root.join(format!("root-{f:04}.txt")),
            format!("root file {f}\n").repeat(f % 50).as_bytes(),
        );
    }
    std::fs::create_dir_all(root.join("bin")).unwrap();
    for b in 0..c.binaries {
        let n = 1024 + (b * 52_361) % (512 << 10);
        write(
            root.join("bin").join(format!("blob-{b:02}.bin")),
            &random_bytes(1_000 + b as u64, n),
        );
    }
    for (i, &mib) in c.big_mib.iter().enumerate() {
        let data = random_bytes(7_000 + i as u64, (mib * MIB) as usize);
        write(root.join(format!("big-{i}.bin")), &data);
    }
    if c.hiberfil {
        let mut data = b"hibr".to_vec();
        data.extend_from_slice(&random_bytes(99, 64 << 10));
        write(root.join("hiberfil.sys"), &data);
    }
    // Stale data: written, flushed to the image, deleted. Its clusters are free but not zero.
    let stale = root.join("stale.tmp");
    sh(&format!(
        "head -c {} /dev/urandom > '{}' && sync",
        c.stale_mib * MIB,
        stale.display()
    ));
    std::fs::remove_file(&stale).unwrap();
    total
}

/// `partclone.ntfs -c` to /dev/null: (used blocks, total blocks, block size) from its log.
fn partclone_count(image: &Path, dir: &Path) -> (u64, u64, u64) {
    let log = dir.join("partclone.log");
    ok(Command::new("partclone.ntfs")
        .args(["-c", "-s"])
        .arg(image)
        .args(["-O", "/dev/null", "-L"])
        .arg(&log));
    let text = std::fs::read_to_string(&log).expect("partclone log");
    // "Space in use:   2.1 MB = 510 Blocks", "Device size:  314.6 MB = 76799 Blocks",
    // "Block size:   4096 Byte".
    let blocks = |key: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key:?} in:\n{text}"));
        let after = line.rsplit('=').next().unwrap_or("");
        after
            .split_whitespace()
            .next()
            .unwrap_or("")
            .parse()
            .unwrap_or_else(|_| panic!("bad line {line:?}"))
    };
    let bs_line = text
        .lines()
        .find(|l| l.starts_with("Block size:"))
        .expect("block size line");
    let bs: u64 = bs_line.split_whitespace().nth(2).unwrap().parse().unwrap();
    (blocks("Space in use:"), blocks("Device size:"), bs)
}

/// `path sha256` for every file under a mount point, sorted.
fn hashes(dir: &Path) -> String {
    sh(&format!(
        "cd '{}' && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum",
        dir.display()
    ))
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{s}"))
}

fn read_range(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, off).unwrap();
    buf
}

/// The whole round trip on one volume of `size` bytes. Returns (our used bytes, partclone's
/// used blocks, block size, tail bytes) for the caller to report.
fn round_trip(size: u64, content: &Content, expect_warning: Option<&str>) -> (u64, u64, u64, u64) {
    let t = tempdir();
    let src = t.path().join("src.img");
    std::fs::File::create(&src).unwrap().set_len(size).unwrap();
    ok(Command::new("mkntfs")
        .args(["-F", "-Q", "-q", "-L", "Data"])
        .arg(&src));

    let m = Mount::new(&src, &t.path().join("mnt-src"), false);
    let written = populate(&m.dir, content);
    m.unmount();

    // inspect: fs, label, used bytes.
    let ins = json(&fc_ok(&["inspect", src.to_str().unwrap(), "--json"]));
    let p = &ins["partitions"][0];
    assert_eq!(p["fs"], "ntfs", "{ins}");
    assert_eq!(p["label"], "Data", "{ins}");
    let used = p["used_bytes"].as_u64().expect("used_bytes");

    // partclone's count + the tail it leaves out.
    let (pc_used, pc_total, bs) = partclone_count(&src, t.path());
    let tail = size - pc_total * bs;
    assert!(tail > 0 && tail <= bs + 512, "tail {tail}");
    assert_eq!(
        used,
        pc_used * bs + tail,
        "ours {used} bytes vs partclone {pc_used} × {bs} + tail {tail}"
    );
    // Stale data is free space: not counted.
    assert!(
        used < written + 16 * MIB && used < size / 2,
        "used {used} for {written} bytes of files"
    );

    // Warnings (plain text output).
    let text = fc_ok(&["inspect", src.to_str().unwrap()]);
    match expect_warning {
        Some(w) => assert!(text.contains(w), "expected a warning {w:?}:\n{text}"),
        None => assert!(!text.contains("warning"), "unexpected warning:\n{text}"),
    }

    // save → info.
    let img = t.path().join("image");
    fc_ok(&["-q", "save", src.to_str().unwrap(), img.to_str().unwrap()]);
    let info = json(&fc_ok(&["info", img.to_str().unwrap(), "--json"]));
    let ip = &info["partitions"][0];
    assert_eq!(ip["fs"], "ntfs", "{info}");
    assert_eq!(ip["mode"], "used", "{info}");
    assert_eq!(ip["stored_bytes"].as_u64(), Some(used), "{info}");

    // restore onto a 0xA5-filled target of the same size.
    let dst = t.path().join("dst.img");
    pattern_file(&dst, size, 0xA5);
    fc_ok(&[
        "-q",
        "restore",
        img.to_str().unwrap(),
        dst.to_str().unwrap(),
        "--yes",
    ]);

    // The tail (backup boot sector) came back, byte for byte.
    let tail_off = pc_total * bs;
    assert_eq!(
        read_range(&src, tail_off, tail as usize),
        read_range(&dst, tail_off, tail as usize),
        "partition tail differs"
    );

    let out = Command::new("ntfsfix")
        .arg("-n")
        .arg(&dst)
        .output()
        .unwrap();
    let fix = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ntfsfix -n failed:\n{fix}");
    assert!(
        fix.contains("Checking the alternate boot sector... OK"),
        "ntfsfix -n:\n{fix}"
    );

    let ms = Mount::new(&src, &t.path().join("ro-src"), true);
    let md = Mount::new(&dst, &t.path().join("ro-dst"), true);
    let (hs, hd) = (hashes(&ms.dir), hashes(&md.dir));
    md.unmount();
    ms.unmount();
    let files = hs.lines().count();
    let expected = 20
        + content.small_dirs * content.small_per_dir
        + content.root_files
        + content.binaries
        + content.big_mib.len()
        + usize::from(content.hiberfil);
    assert_eq!(files, expected, "files seen in the source mount");
    assert!(
        hs == hd,
        "file hashes differ between source and restored target"
    );

    // The source was never written by the save.
    let mut head = [0u8; 11];
    std::fs::File::open(&src)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    assert_eq!(&head[3..11], b"NTFS    ");

    eprintln!(
        "NTFS {size} bytes: ours {used} bytes = {} clusters + {tail}-byte tail; partclone {pc_used} of {pc_total} × {bs}; files {written} bytes",
        (used - tail) / bs
    );
    (used, pc_used, bs, tail)
}

#[test]
fn ntfs_300m_mixed_content_round_trip() {
    if !have_tools() {
        return;
    }
    let content = Content {
        small_dirs: 20,
        small_per_dir: 100,
        root_files: 150,
        binaries: 30,
        big_mib: &[6, 9, 12],
        stale_mib: 64,
        hiberfil: true,
    };
    let (used, pc, bs, tail) = round_trip(300 * MIB, &content, Some("Windows is hibernated"));
    assert_eq!(used, pc * bs + tail);
    assert_eq!(tail, 4096);
}

#[test]
fn ntfs_partial_cluster_tail_round_trip() {
    if !have_tools() {
        return;
    }
    let content = Content {
        small_dirs: 2,
        small_per_dir: 100,
        root_files: 10,
        binaries: 5,
        big_mib: &[8],
        stale_mib: 32,
        hiberfil: false,
    };
    let (_, _, _, tail) = round_trip(300 * MIB + 2048, &content, None);
    assert_eq!(tail, 2048);
}
