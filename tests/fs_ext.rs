//! Integration tests: ext2/3/4 and swap.
//!
//! Each filesystem is made by the real mkfs in a regular file, filled through a loop mount
//! (text, seeded-random binaries, ~2000 small files, big random files) and given stale data in
//! its free space (a big random file written, synced and deleted). The used count is checked
//! against dumpe2fs and partclone; the save is restored onto a 0xA5-filled target, which must
//! pass `e2fsck -fn`, carry every backup superblock (and its GDT) byte for byte, and hold every
//! file unchanged.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{fc_ok, pattern_file, sh, tempdir};

/// A mount of a file through a loop device, unmounted (and the loop device freed) on drop.
struct Mounted {
    dir: PathBuf,
}

impl Mounted {
    fn new(file: &Path, dir: &Path, opts: &str) -> Mounted {
        std::fs::create_dir_all(dir).expect("mount point");
        sh(&format!(
            "mount -o loop,{opts} '{}' '{}'",
            file.display(),
            dir.display()
        ));
        Mounted {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        for _ in 0..50 {
            let ok = Command::new("umount")
                .arg(&self.dir)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("could not unmount {}", self.dir.display());
    }
}

/// xorshift64*: reproducible "random" bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Writes the test content into `dir`: 20 text files, `small` small random files, 5 binaries
/// and 2 big random files; about 30 MB.
fn populate(dir: &Path, seed: u64, small: usize) {
    let mut rng = Rng(seed | 1);
    let text = dir.join("docs");
    std::fs::create_dir_all(&text).unwrap();
    for n in 0..20 {
        let body: String = (0..200 + n * 37)
            .map(|i| format!("line {i} of file {n}: the quick brown fox jumps over the lazy dog\n"))
            .collect();
        std::fs::write(text.join(format!("notes-{n}.txt")), body).unwrap();
    }
    for d in 0..small.div_ceil(100) {
        let sub = dir.join(format!("small/d{d:02}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..small.saturating_sub(d * 100).min(100) {
            let len = (rng.next() % 6000) as usize;
            std::fs::write(sub.join(format!("f{f:03}.bin")), rng.bytes(len)).unwrap();
        }
    }
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for n in 0..5 {
        let len = 200_000 + (rng.next() % 600_000) as usize;
        std::fs::write(bin.join(format!("tool{n}")), rng.bytes(len)).unwrap();
    }
    for n in 0..2 {
        std::fs::write(dir.join(format!("big{n}.dat")), rng.bytes(10 << 20)).unwrap();
    }
}

/// sha256 of every regular file under `dir` (lost+found aside), sorted by path.
fn tree_hashes(dir: &Path) -> String {
    sh(&format!(
        "cd '{}' && find . -path ./lost+found -prune -o -type f -print0 | sort -z | \
         xargs -0 -r sha256sum",
        dir.display()
    ))
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("bad JSON ({e}): {s}"))
}

/// A `dumpe2fs -h` field as a number.
fn dumpe2fs_field(head: &str, name: &str) -> u64 {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("dumpe2fs has no {name:?}"))
        .trim()
        .parse()
        .unwrap()
}

/// partclone.extfs's "Space in use: … = N Blocks".
fn partclone_used_blocks(src: &Path, tmp: &Path) -> u64 {
    let out = Command::new("partclone.extfs")
        .args(["-c", "-s"])
        .arg(src)
        .args(["-O", "/dev/null", "-L"])
        .arg(tmp.join("partclone.log"))
        .output()
        .expect("partclone.extfs");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "partclone failed:\n{text}");
    let line = text
        .lines()
        .find(|l| l.contains("Space in use"))
        .unwrap_or_else(|| panic!("no 'Space in use' in:\n{text}"));
    line.split('=')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"))
}

/// Each backup superblock with the last block of its GDT + reserved GDT, from `dumpe2fs`:
/// "Backup superblock at N, Group descriptors at A-B" and "Reserved GDT blocks at C-D".
fn backups(dump: &str) -> Vec<(u64, u64)> {
    let lines: Vec<&str> = dump.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(rest) = l.trim().strip_prefix("Backup superblock at ") else {
            continue;
        };
        let n: u64 = rest
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let range_end = |s: &str| -> Option<u64> { s.rsplit('-').next()?.trim().parse().ok() };
        let mut end = n;
        if let Some((_, gdt)) = rest.split_once("Group descriptors at ") {
            end = end.max(range_end(gdt).unwrap());
        }
        if let Some(r) = lines
            .get(i + 1)
            .and_then(|l| l.trim().strip_prefix("Reserved GDT blocks at "))
        {
            end = end.max(range_end(r).unwrap());
        }
        out.push((n, end));
    }
    out
}

/// Groups that are BLOCK_UNINIT and hold a backup superblock.
fn uninit_backups(dump: &str) -> usize {
    let lines: Vec<&str> = dump.lines().collect();
    lines
        .windows(2)
        .filter(|w| {
            w[0].starts_with("Group ")
                && w[0].contains("BLOCK_UNINIT")
                && w[1].trim().starts_with("Backup superblock")
        })
        .count()
}

fn read_range(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, off)
        .unwrap();
    buf
}

struct Spec {
    /// mkfs command and options (the file, -U and -L are added).
    mkfs: &'static [&'static str],
    size: u64,
    fs: &'static str,
    uuid: &'static str,
    label: &'static str,
    /// The test premise: at least this many BLOCK_UNINIT groups with a backup superblock.
    min_uninit_backups: usize,
    /// partclone.extfs supports it (not bigalloc).
    partclone: bool,
    /// How many small files (each takes a whole cluster with bigalloc).
    small_files: usize,
    seed: u64,
}

fn roundtrip(spec: &Spec) {
    let tmp = tempdir();
    let t = tmp.path();
    let src = t.join("src.img");
    File::create(&src).unwrap().set_len(spec.size).unwrap();
    let mut mkfs = Command::new(spec.mkfs[0]);
    mkfs.args(&spec.mkfs[1..])
        .args(["-q", "-F", "-U", spec.uuid, "-L", spec.label])
        .arg(&src);
    crate::common::ok(&mut mkfs);

    // Fill, then leave stale data in the free space.
    let stale_len = 24usize << 20;
    {
        let stage = t.join("stage");
        populate(&stage, spec.seed, spec.small_files);
        let m = Mounted::new(&src, &t.join("mnt"), "rw");
        sh(&format!(
            "cp -a '{}/.' '{}/'",
            stage.display(),
            m.dir.display()
        ));
        std::fs::write(
            m.dir.join("stale.tmp"),
            Rng(spec.seed ^ 0x5A5A).bytes(stale_len),
        )
        .unwrap();
        sh(&format!("sync -f '{}'", m.dir.display()));
        std::fs::remove_file(m.dir.join("stale.tmp")).unwrap();
        sh(&format!("sync -f '{}'", m.dir.display()));
    }
    let stage_hashes = tree_hashes(&t.join("stage"));
    assert_eq!(stage_hashes.lines().count(), 27 + spec.small_files);

    // The used count: ours, dumpe2fs's, partclone's.
    let ins = json(&fc_ok(&["inspect", src.to_str().unwrap(), "--json"]));
    let part = &ins["partitions"][0];
    assert_eq!(part["fs"], spec.fs, "{ins}");
    assert_eq!(part["uuid"], spec.uuid);
    assert_eq!(part["label"], spec.label);
    let used = part["used_bytes"].as_u64().unwrap();
    let head = sh(&format!("dumpe2fs -h '{}' 2>/dev/null", src.display()));
    let bs = dumpe2fs_field(&head, "Block size");
    let blocks = dumpe2fs_field(&head, "Block count");
    let free = dumpe2fs_field(&head, "Free blocks");
    let dump = sh(&format!("dumpe2fs '{}' 2>/dev/null", src.display()));
    let pc = if spec.partclone {
        Some(partclone_used_blocks(&src, t))
    } else {
        None
    };
    eprintln!(
        "{} {}: ours {} blocks, dumpe2fs {} blocks, partclone {:?} blocks (block size {bs})",
        spec.fs,
        spec.label,
        used / bs,
        blocks - free,
        pc
    );
    assert_eq!(
        used,
        (blocks - free) * bs,
        "our count vs dumpe2fs blocks − free"
    );
    if let Some(pc) = pc {
        assert_eq!(used, pc * bs, "our count vs partclone");
    }
    assert!(
        uninit_backups(&dump) >= spec.min_uninit_backups,
        "test premise: BLOCK_UNINIT groups with backups:\n{dump}"
    );
    let backups = backups(&dump);
    assert!(!backups.is_empty() || spec.mkfs.contains(&"sparse_super2"));

    // Save: only the used blocks are stored, not the stale file.
    let image = t.join("image");
    fc_ok(&["-q", "save", src.to_str().unwrap(), image.to_str().unwrap()]);
    let info = json(&fc_ok(&["info", image.to_str().unwrap(), "--json"]));
    let p = &info["partitions"][0];
    assert_eq!(p["mode"], "used", "{info}");
    assert_eq!(p["stored_bytes"].as_u64(), Some(used), "{info}");
    assert_eq!(p["warnings"].as_array().map(Vec::len), Some(0), "{info}");
    assert!(used + (stale_len as u64) / 2 < spec.size);

    // Restore onto a 0xA5 target of the same size.
    let tgt = t.join("tgt.img");
    pattern_file(&tgt, spec.size, 0xA5);
    fc_ok(&[
        "-q",
        "restore",
        image.to_str().unwrap(),
        tgt.to_str().unwrap(),
        "--yes",
    ]);
    sh(&format!("e2fsck -fn '{}' >/dev/null 2>&1", tgt.display()));

    // Every backup superblock readable and identical, with its GDT and reserved GDT blocks.
    for &(n, end) in &backups {
        let cmd = |f: &Path| {
            format!(
                "dumpe2fs -h -o superblock={n} -o blocksize={bs} '{}' 2>/dev/null",
                f.display()
            )
        };
        assert_eq!(
            sh(&cmd(&tgt)),
            sh(&cmd(&src)),
            "backup superblock at block {n}"
        );
        let len = usize::try_from((end + 1 - n) * bs).unwrap();
        assert!(
            read_range(&src, n * bs, len) == read_range(&tgt, n * bs, len),
            "backup superblock + GDT at blocks {n}..={end} differ"
        );
    }
    // Block 0 (boot block) too.
    assert_eq!(read_range(&src, 0, 1024), read_range(&tgt, 0, 1024));

    // Every file.
    let m = Mounted::new(&tgt, &t.join("tmnt"), "ro");
    assert_eq!(tree_hashes(&m.dir), stage_hashes);
}

#[test]
fn ext4_default_with_uninit_groups() {
    roundtrip(&Spec {
        mkfs: &["mkfs.ext4"],
        size: 1 << 30,
        fs: "ext4",
        uuid: "0b7d3c2e-1f4a-4e5b-9c6d-7e8f9a0b1c2d",
        label: "fc-ext4",
        // 8 groups: 1, 3 and 5 hold backups and stay BLOCK_UNINIT with this little data.
        min_uninit_backups: 2,
        partclone: true,
        small_files: 2000,
        seed: 1,
    });
}

#[test]
fn ext3_1k_blocks() {
    roundtrip(&Spec {
        mkfs: &["mkfs.ext3", "-b", "1024"],
        size: 256 << 20,
        fs: "ext3",
        uuid: "1c8e4d3f-2a5b-4f6c-8d7e-8f9a0b1c2d3e",
        label: "fc-ext3",
        min_uninit_backups: 0,
        partclone: true,
        small_files: 2000,
        seed: 2,
    });
}

#[test]
fn ext2_plain() {
    roundtrip(&Spec {
        mkfs: &["mkfs.ext2", "-b", "4096"],
        size: 256 << 20,
        fs: "ext2",
        uuid: "2d9f5e40-3b6c-4a7d-9e8f-9a0b1c2d3e4f",
        label: "fc-ext2",
        min_uninit_backups: 0,
        partclone: true,
        small_files: 2000,
        seed: 3,
    });
}

#[test]
fn ext4_meta_bg_1k() {
    // 1 KiB blocks and 64-byte descriptors: 16 per block, so 32 groups make two meta-groups.
    roundtrip(&Spec {
        mkfs: &["mkfs.ext4", "-b", "1024", "-O", "meta_bg,^resize_inode"],
        size: 256 << 20,
        fs: "ext4",
        uuid: "3e0a6f51-4c7d-4b8e-8f90-0b1c2d3e4f50",
        label: "fc-metabg",
        min_uninit_backups: 3,
        partclone: true,
        small_files: 2000,
        seed: 4,
    });
}

#[test]
fn ext4_bigalloc_sparse_super2() {
    // partclone 0.3.23 does not handle bigalloc; dumpe2fs is the reference here.
    roundtrip(&Spec {
        mkfs: &[
            "mkfs.ext4",
            "-b",
            "4096",
            "-O",
            "bigalloc,sparse_super2",
            "-C",
            "65536",
            "-g",
            "2048",
        ],
        size: 512 << 20,
        fs: "ext4",
        uuid: "4f1b7062-5d8e-4c9f-9011-1c2d3e4f5061",
        label: "fc-bigalloc",
        min_uninit_backups: 0,
        partclone: false,
        small_files: 300,
        seed: 5,
    });
}

#[test]
fn swap_header_page_only() {
    let tmp = tempdir();
    let t = tmp.path();
    let src = t.join("swap.img");
    let uuid = "5a2c8173-6e9f-4da0-8122-2d3e4f506172";
    pattern_file(&src, 64 << 20, 0x3C);
    sh(&format!(
        "mkswap -U {uuid} -L swap '{}' >/dev/null",
        src.display()
    ));
    let ins = json(&fc_ok(&["inspect", src.to_str().unwrap(), "--json"]));
    let part = &ins["partitions"][0];
    assert_eq!(part["fs"], "swap", "{ins}");
    assert_eq!(part["uuid"], uuid);
    assert_eq!(part["used_bytes"], 4096);

    let image = t.join("image");
    fc_ok(&["-q", "save", src.to_str().unwrap(), image.to_str().unwrap()]);
    let info = json(&fc_ok(&["info", image.to_str().unwrap(), "--json"]));
    assert_eq!(info["partitions"][0]["stored_bytes"], 4096, "{info}");

    let tgt = t.join("tgt.img");
    pattern_file(&tgt, 64 << 20, 0xA5);
    fc_ok(&[
        "-q",
        "restore",
        image.to_str().unwrap(),
        tgt.to_str().unwrap(),
        "--yes",
    ]);
    let probe = sh(&format!("blkid -p -o export '{}'", tgt.display()));
    for want in [
        format!("UUID={uuid}"),
        "LABEL=swap".to_string(),
        "TYPE=swap".to_string(),
    ] {
        assert!(
            probe.lines().any(|l| l == want),
            "{want} missing in:\n{probe}"
        );
    }
    assert_eq!(read_range(&src, 0, 4096), read_range(&tgt, 0, 4096));
}
