//! Integration tests: fs_btrfs. A real single-device btrfs (DUP metadata, single data) made by
//! mkfs.btrfs in a regular file, partly populated with `--rootdir` and partly through a loop
//! mount, saved, restored onto a 0xA5-filled target, then checked by `btrfs check`, file
//! hashes and the absence of stale data; the used count is compared with the filesystem's own
//! counters and with partclone.btrfs.
//!
//! The source and the restored copy share an fsid: they are never mounted at the same time.

use std::path::Path;
use std::process::Command;

use crate::common::{fc_run, sh, tempdir};
use crate::fs_xfs::kit::*;

const MIB: u64 = 1 << 20;

/// Bytes used per block-group type (DATA, METADATA, SYSTEM), from the extent tree's
/// BLOCK_GROUP_ITEMs.
fn block_group_used(img: &Path) -> (u64, u64, u64) {
    let out = sh(&format!(
        "btrfs inspect-internal dump-tree -t extent '{}' | grep 'block group used'",
        img.display()
    ));
    let (mut data, mut meta, mut sys) = (0, 0, 0);
    for l in out.lines() {
        let used = number_after(l, "block group used").unwrap();
        if l.contains("flags DATA") {
            data += used;
        } else if l.contains("flags METADATA") {
            meta += used;
        } else if l.contains("flags SYSTEM") {
            sys += used;
        }
    }
    (data, meta, sys)
}

fn super_field(img: &Path, name: &str) -> u64 {
    let out = sh(&format!(
        "btrfs inspect-internal dump-super '{}'",
        img.display()
    ));
    out.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in dump-super"))
}

/// partclone.btrfs: (its header's used bytes, the bytes its domain map marks).
fn partclone_btrfs(img: &Path, work: &Path) -> Option<(u64, u64)> {
    let domain = work.join("btrfs.domain");
    let log = partclone_log(
        "partclone.btrfs",
        &[
            "-D",
            "-s",
            img.to_str().unwrap(),
            "-O",
            domain.to_str().unwrap(),
        ],
        work,
    )?;
    let header = number_after(&log, "usedblock =")? * number_after(&log, "block_size =")?;
    let mut marked = 0;
    for l in std::fs::read_to_string(&domain).unwrap().lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 3 && f[2] == "+" {
            marked += u64::from_str_radix(f[1].trim_start_matches("0x"), 16).unwrap();
        }
    }
    Some((header, marked))
}

#[test]
fn btrfs_mixed_content_roundtrip() {
    if !have(&["mkfs.btrfs", "btrfs", "mount"]) {
        return;
    }
    let t = tempdir();
    let rootdir = t.path().join("rootdir");
    std::fs::create_dir(&rootdir).unwrap();
    populate(&rootdir, 0x5EED_1001, 300, 1, 8 << 20);
    let src = t.path().join("btrfs.img");
    std::fs::File::create(&src)
        .unwrap()
        .set_len(600 * MIB)
        .unwrap();
    sh(&format!(
        "mkfs.btrfs -q -m dup -d single -U 2b6f1c1e-7d4a-4f7e-8c21-5a9b0e3d4c01 -L fc-btrfs \
         --rootdir '{}' '{}'",
        rootdir.display(),
        src.display()
    ));
    let m = Mounted::new(&src, &t.path().join("mnt"), "rw");
    populate(&m.path().join("more"), 0x5EED_1002, 1700, 2, 16 << 20);
    write_stale(m.path(), 96 << 20, 0xFEED);
    let hashes = tree_hashes(m.path());
    m.unmount();

    let (fs, used) = inspect(&src);
    assert_eq!(fs, "btrfs");
    let bytes_used = super_field(&src, "bytes_used");
    let (data, meta, sys) = block_group_used(&src);
    assert_eq!(data + meta + sys, bytes_used);
    // [0, 1 MiB) (holds the first superblock), the 64 MiB mirror, data once, metadata and
    // system chunks twice (DUP).
    let expected = MIB + 4096 + data + 2 * (meta + sys);
    eprintln!(
        "btrfs 600 MiB: ours {used} bytes = 1 MiB + 4 KiB mirror + data {data} + 2 x metadata \
         {} ; bytes_used {bytes_used}",
        meta + sys
    );
    assert_eq!(used, expected);
    if let Some((header, marked)) = partclone_btrfs(&src, t.path()) {
        eprintln!(
            "partclone.btrfs: header {header} bytes (bytes_used rounded to nodes), map {marked} bytes"
        );
        // partclone marks the same extents at node granularity (plus logical addresses taken
        // as physical), but not [64 KiB, 1 MiB) apart from the superblock.
        assert!(used <= marked + MIB, "ours {used} vs partclone {marked}");
    }

    let stale_src = count_stale(&src);
    let (target, stored) = save_and_restore(&src, t.path());
    assert_eq!(stored, used, "the image stores exactly the map");
    for args in [
        &["check", "--readonly"][..],
        &["check", "--readonly", "--check-data-csum"],
    ] {
        let out = Command::new("btrfs")
            .args(args)
            .arg(&target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "btrfs {args:?} on the restored copy:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let m = Mounted::new(&target, &t.path().join("mnt-target"), "ro");
    assert_eq!(
        tree_hashes(m.path()),
        hashes,
        "file contents differ after restore"
    );
    m.unmount();
    let stale_dst = count_stale(&target);
    eprintln!("stale 4 KiB blocks: {stale_src} in the source, {stale_dst} after restore");
    assert!(stale_src > 0);
    assert_eq!(stale_dst, 0, "stale data from free space was saved");
}

#[test]
fn btrfs_unreplayed_log_is_refused() {
    if !have(&["mkfs.btrfs", "btrfs", "mount", "xfs_io"]) {
        return;
    }
    let t = tempdir();
    let src = t.path().join("live.img");
    std::fs::File::create(&src)
        .unwrap()
        .set_len(256 * MIB)
        .unwrap();
    sh(&format!("mkfs.btrfs -q -L fc-log '{}'", src.display()));
    let snap = t.path().join("crashed.img");
    {
        let m = Mounted::new(&src, &t.path().join("mnt"), "rw");
        populate(m.path(), 9, 50, 0, 0);
        sh(&format!("sync -f '{}'", m.path().display()));
        // An fsync after the last commit writes a log tree and points the superblock at it;
        // a copy taken now is what a crash would leave.
        std::fs::write(m.path().join("fsynced"), vec![7u8; 100_000]).unwrap();
        sh(&format!(
            "xfs_io -c fsync '{}' && cp --sparse=always '{}' '{}'",
            m.path().join("fsynced").display(),
            src.display(),
            snap.display()
        ));
        m.unmount();
    }
    assert_ne!(super_field(&snap, "log_root"), 0, "no log tree in the copy");
    let img = t.path().join("img");
    let (code, _out, err) = fc_run(&["-q", "save", snap.to_str().unwrap(), img.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("fsync log"), "{err}");
    // Mounting replays the log; afterwards the copy is accepted and holds the fsynced file.
    let m = Mounted::new(&snap, &t.path().join("mnt"), "rw");
    assert_eq!(
        std::fs::read(m.path().join("fsynced")).unwrap().len(),
        100_000
    );
    m.unmount();
    assert_eq!(super_field(&snap, "log_root"), 0);
    let (fs, used) = inspect(&snap);
    assert_eq!((fs.as_str(), used < 64 * MIB), ("btrfs", true));
}

/// Bytes covered by the union of `(start, len)` ranges.
fn union_len(mut r: Vec<(u64, u64)>) -> u64 {
    r.sort_unstable();
    let (mut total, mut end) = (0, 0);
    for (s, l) in r {
        let e = s + l;
        if e > end {
            total += e - s.max(end);
            end = e;
        }
    }
    total
}

#[test]
fn btrfs_multi_device_saves_dev_extents() {
    if !have(&["mkfs.btrfs", "btrfs"]) {
        return;
    }
    let t = tempdir();
    let devs = [t.path().join("dev1.img"), t.path().join("dev2.img")];
    for d in &devs {
        std::fs::File::create(d)
            .unwrap()
            .set_len(256 * MIB)
            .unwrap();
    }
    sh(&format!(
        "mkfs.btrfs -q -d raid1 -m raid1 -L fc-multi '{}' '{}'",
        devs[0].display(),
        devs[1].display()
    ));
    for (i, d) in devs.iter().enumerate() {
        let devid = i as u64 + 1;
        let tree = sh(&format!(
            "btrfs inspect-internal dump-tree -t dev '{}'",
            d.display()
        ));
        let mut ranges = vec![(0, MIB), (64 * MIB, 4096)];
        let mut lines = tree.lines();
        while let Some(l) = lines.next() {
            let key = format!("key ({devid} DEV_EXTENT ");
            if let Some(at) = l.find(&key) {
                let start = number_after(&l[at..], "DEV_EXTENT").unwrap();
                let len = lines
                    .by_ref()
                    .find_map(|l| number_after(l, " length "))
                    .unwrap();
                ranges.push((start, len));
            }
        }
        assert!(ranges.len() > 2, "no dev extents for devid {devid}");
        let (fs, used) = inspect(d);
        assert_eq!(fs, "btrfs");
        assert_eq!(used, union_len(ranges), "device {devid}");
        let text = crate::common::fc_ok(&["inspect", d.to_str().unwrap()]);
        assert!(text.contains("multi-device btrfs (2 devices)"), "{text}");
    }
}
