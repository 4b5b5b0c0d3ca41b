//! Integration tests: fs_exfat.
//!
//! The kernel here has no exFAT driver, and exfat-fuse always mounts with `blkdev` (a fuseblk
//! mount needs a block device), so each volume file is attached to a loop device of its own
//! (`losetup -f --show`, detached by a guard; never `losetup -D`) and mounted with
//! `mount.exfat-fuse`. Volumes are made by `mkfs.exfat`, filled with a realistic tree plus a big
//! file that is deleted again (stale data in free clusters), then inspected, compared with
//! partclone.exfat, saved, restored with `--yes` onto a 0xA5-filled file of the same size,
//! checked with `fsck.exfat -n`, and every file's SHA-256 compared through a read-only mount.
//! A second test fills a volume completely: partclone's bundled libexfat leaves the last
//! cluster out of its map there; ours must keep it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{sh, tempdir};
use crate::fs_fat::{
    assert_same_files, check_stale, difference, hash_tree, inspect_part, lib_used, make_tree,
    minus, partclone, same_bytes, save_restore, stale_file, Rng, TreeSpec,
};

/// A loop device this test attached; detached on drop.
struct Loop {
    dev: String,
}

impl Loop {
    fn attach(file: &Path, read_only: bool) -> Loop {
        let out = sh(&format!(
            "losetup -f --show {} '{}'",
            if read_only { "-r" } else { "" },
            file.display()
        ));
        let dev = out.trim().to_string();
        assert!(dev.starts_with("/dev/loop"), "losetup returned {dev:?}");
        Loop { dev }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("blockdev")
            .args(["--flushbufs", &self.dev])
            .status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// An exfat-fuse mount this test made; unmounted on drop (a fuseblk unmount waits for the
/// daemon to flush).
struct Mount {
    dir: PathBuf,
    mounted: bool,
}

impl Mount {
    fn new(lo: &Loop, dir: &Path, read_only: bool) -> Mount {
        std::fs::create_dir_all(dir).expect("mountpoint");
        sh(&format!(
            "mount.exfat-fuse {} '{}' '{}'",
            if read_only { "-o ro" } else { "" },
            lo.dev,
            dir.display()
        ));
        Mount {
            dir: dir.to_path_buf(),
            mounted: true,
        }
    }

    /// Unmounts now and fails the test when that does not work.
    fn unmount(mut self) {
        sh(&format!("umount '{}'", self.dir.display()));
        self.mounted = false;
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            let d = self.dir.display().to_string();
            let ok = Command::new("umount")
                .arg(&d)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("fusermount").args(["-u", &d]).status();
            }
        }
    }
}

fn fsck_exfat_clean(img: &Path) -> String {
    let out = Command::new("fsck.exfat")
        .arg("-n")
        .arg(img)
        .output()
        .expect("run fsck.exfat");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("clean"),
        "fsck.exfat -n {}:\n{text}",
        img.display()
    );
    text
}

/// Hashes every file of an exFAT volume file through a read-only mount.
fn hash_volume(img: &Path, mnt: &Path) -> std::collections::BTreeMap<String, String> {
    let lo = Loop::attach(img, true);
    let m = Mount::new(&lo, mnt, true);
    let h = hash_tree(mnt);
    m.unmount();
    drop(lo);
    h
}

/// Partition byte offset and size of the heap's last cluster, from the boot sector.
fn last_cluster(img: &Path) -> (u64, u64) {
    let b = std::fs::read(img)
        .map(|v| v[..512].to_vec())
        .expect("boot sector");
    let u32at = |o: usize| u64::from(u32::from_le_bytes(b[o..o + 4].try_into().unwrap()));
    let (heap, count) = (u32at(0x58), u32at(0x5C));
    let sector = 1u64 << b[0x6C];
    let cluster = sector << b[0x6D];
    (heap * sector + (count - 1) * cluster, cluster)
}

#[test]
fn exfat_save_restore() {
    let work = tempdir();
    let w = work.path();
    let src = w.join("exfat.img");
    let tree = w.join("tree");
    std::fs::create_dir(&tree).unwrap();
    let want = make_tree(
        &tree,
        &TreeSpec {
            seed: 0xE1FA7,
            small: 1500,
            big: &[16_000_000, 2_000_000, 4097],
        },
    );
    stale_file(&w.join("stale.bin"), 16 << 20);
    sh(&format!(
        "truncate -s 200M '{s}' && mkfs.exfat -L ExVol '{s}' >/dev/null",
        s = src.display()
    ));
    {
        let lo = Loop::attach(&src, false);
        let m = Mount::new(&lo, &w.join("mnt"), false);
        let mnt = w.join("mnt");
        // The stale file first (it lands among the others), the tree, then delete it.
        sh(&format!(
            "cp '{w}/stale.bin' '{m}/' && cp -r '{t}'/. '{m}/' && mkdir '{m}/emptydir' && rm '{m}/stale.bin'",
            w = w.display(),
            t = tree.display(),
            m = mnt.display()
        ));
        m.unmount();
    }
    fsck_exfat_clean(&src);

    let part = inspect_part(&src);
    assert_eq!(part["fs"], "exfat");
    assert_eq!(part["label"], "ExVol");
    let used = part["used_bytes"].as_u64().unwrap();
    let ours = lib_used(&src);
    assert_eq!(ours.iter().map(|r| r.1).sum::<u64>(), used);

    // Oracle: dump.exfat's free cluster count.
    let dump = sh(&format!("dump.exfat '{}' 2>&1", src.display()));
    let num = |key: &str| -> u64 {
        let l = dump
            .lines()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("{key} in {dump}"));
        l.split_whitespace().last().unwrap().parse().unwrap()
    };
    let (heap_sec, total, free) = (
        num("Cluster Heap Offset"),
        num("Total Clusters"),
        num("Free Clusters"),
    );
    let cluster = num("Cluster size");
    let expect = heap_sec * 512 + (total - free) * cluster;
    assert_eq!(used, expect, "used bytes vs dump.exfat ({dump})");

    // partclone.exfat (run while we save and restore): its header over-counts (libexfat's
    // off-by-two); its map must be ours.
    let (pc, (target, info)) = std::thread::scope(|s| {
        let pc = s.spawn(|| partclone("partclone.exfat", &src, w));
        let saved = save_restore(&src, w);
        (pc.join().expect("partclone thread"), saved)
    });
    eprintln!(
        "exfat: ours {used} B = {} sectors ({} clusters of {cluster} B + {heap_sec} sectors before the heap); partclone.exfat header {} B = {} sectors; its map misses {} B, adds {} B",
        used / 512,
        total - free,
        pc.space_in_use,
        pc.space_in_use / 512,
        minus(&ours, &pc.domain),
        minus(&pc.domain, &ours)
    );
    assert_eq!(pc.domain, ours, "partclone.exfat's map");

    assert_eq!(info["fs"], "exfat");
    assert_eq!(info["mode"], "used");
    assert_eq!(info["stored_bytes"].as_u64().unwrap(), used);
    assert_eq!(info["warnings"], serde_json::json!([]));
    fsck_exfat_clean(&target);
    same_bytes(&src, &target, &ours);
    check_stale(&src, &target, &ours, 16 << 20);
    let got = hash_volume(&target, &w.join("mnt-target"));
    assert_same_files(&got, &want, "exfat");
}

#[test]
fn exfat_full_volume_keeps_the_last_cluster() {
    let work = tempdir();
    let w = work.path();
    let src = w.join("full.img");
    sh(&format!(
        "truncate -s 24M '{s}' && mkfs.exfat -c 32K -L Full '{s}' >/dev/null",
        s = src.display()
    ));
    let data = w.join("random.bin");
    std::fs::write(&data, Rng(99).bytes(30 << 20)).unwrap();
    {
        let lo = Loop::attach(&src, false);
        let mnt = w.join("mnt");
        let m = Mount::new(&lo, &mnt, false);
        // Fill until ENOSPC: one big file, then small ones for the last clusters.
        let mnt_s = mnt.display().to_string();
        let _ = Command::new("cp")
            .arg(&data)
            .arg(format!("{mnt_s}/big.bin"))
            .output();
        let mut rng = Rng(5);
        for i in 0..200 {
            let p = format!("{mnt_s}/small{i}.bin");
            if std::fs::write(&p, rng.bytes(20_000)).is_err() {
                let _ = std::fs::remove_file(&p);
                break;
            }
        }
        m.unmount();
    }
    fsck_exfat_clean(&src);
    let dump = sh(&format!("dump.exfat '{}' 2>&1", src.display()));
    let free: u64 = dump
        .lines()
        .find(|l| l.contains("Free Clusters"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{dump}"));
    assert_eq!(free, 0, "the volume should be full");

    let (last, cluster) = last_cluster(&src);
    {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; cluster as usize];
        std::fs::File::open(&src)
            .unwrap()
            .read_exact_at(&mut buf, last)
            .unwrap();
        assert!(
            buf.iter().any(|&b| b != buf[0]),
            "the last cluster should hold file data, not a fill pattern"
        );
    }
    let ours = lib_used(&src);
    assert!(
        ours.iter()
            .any(|&(s, l)| s <= last && s + l >= last + cluster),
        "our map must hold the last cluster [{last:#x}, +{cluster:#x}): {ours:x?}"
    );
    let pc = partclone("partclone.exfat", &src, w);
    let lost = difference(&ours, &pc.domain);
    eprintln!(
        "exfat full: ours {} B; partclone.exfat header {} B; its map leaves out {:x?} (last cluster at {last:#x})",
        ours.iter().map(|r| r.1).sum::<u64>(),
        pc.space_in_use,
        lost
    );
    assert!(
        lost.is_empty() || lost == vec![(last, cluster)],
        "partclone's map should differ from ours by the last cluster at most: {lost:x?}"
    );

    let want = hash_volume(&src, &w.join("mnt-src"));
    assert!(want.len() >= 2, "{want:?}");
    let (target, info) = save_restore(&src, w);
    assert_eq!(
        info["stored_bytes"].as_u64().unwrap(),
        ours.iter().map(|r| r.1).sum::<u64>()
    );
    fsck_exfat_clean(&target);
    same_bytes(&src, &target, &[(last, cluster)]);
    let got = hash_volume(&target, &w.join("mnt-target"));
    assert_same_files(&got, &want, "full exfat");
}

#[test]
fn exfat_root_chain_loop_is_refused() {
    let work = tempdir();
    let src = work.path().join("loop.img");
    sh(&format!(
        "truncate -s 16M '{s}' && mkfs.exfat '{s}' >/dev/null",
        s = src.display()
    ));
    // Point the root directory's FAT entry at itself.
    let b = std::fs::read(&src).unwrap();
    let u32at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let fat = u64::from(u32at(0x50)) << b[0x6C];
    let root = u32at(0x60);
    let at = fat + 4 * u64::from(root);
    sh(&format!(
        "printf '{}' | dd of='{}' bs=1 seek={at} conv=notrunc status=none",
        root.to_le_bytes()
            .iter()
            .map(|x| format!("\\x{x:02x}"))
            .collect::<String>(),
        src.display()
    ));
    let (code, out, _) = crate::common::fc_run(&["inspect", src.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("loops back to cluster"), "{out}");
    let (code, _, err) = crate::common::fc_run(&[
        "-q",
        "save",
        src.to_str().unwrap(),
        work.path().join("img").to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("{at:#x}")),
        "the error names the FAT entry's offset: {err}"
    );
}
