//! Clone, and restores and clones onto disks of other sizes (`--fit`), new IDs: the Windows-style
//! GPT disk and the legacy MBR disk with logical partitions, checked with sgdisk, ntfsfix,
//! ntfsresize --info, e2fsck, dumpe2fs and scripts/disk-manifest.sh (every file's SHA-256).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::common::{fc_ok, fc_run, fixture, pattern_file, root, sh, sha256_file, tempdir};
use crate::imaging::{assert_same, bytes, check_partition, inspect, manifest, Loop};

const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An image of a fixture, saved once per build of the binary (kept under target/ between runs;
/// images made by older builds are removed).
fn image_of(kind: &str, size_mib: u32) -> PathBuf {
    static CACHE: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let key = format!("{kind}-{size_mib}");
    if let Some(p) = c.get(&key) {
        return p.clone();
    }
    let src = fixture(kind, size_mib);
    let built = std::fs::metadata(crate::common::bin())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = root().join("target/test-fixtures");
    let prefix = format!("img-fit-{key}-");
    let name = format!("{prefix}{built}");
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&prefix) && !n.starts_with(&name) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let p = dir.join(name);
    if !p.join("manifest.json").exists() {
        // A save that a killed run left unfinished.
        let _ = std::fs::remove_dir_all(p.with_file_name(format!("{prefix}{built}.partial")));
        let (code, _, err) = fc_run(&["save", s(&src), s(&p), "--no-verify", "-q"]);
        // Another test process of this tree may have saved it first.
        assert!(code == 0 || p.join("manifest.json").exists(), "{err}");
    }
    c.insert(key, p.clone());
    p
}

/// The disk manifest of a fixture, computed once per run.
fn source_manifest(disk: &Path) -> String {
    static CACHE: Mutex<BTreeMap<PathBuf, String>> = Mutex::new(BTreeMap::new());
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    c.entry(disk.to_path_buf())
        .or_insert_with(|| manifest(disk))
        .clone()
}

/// A disk manifest without positions: table lines keep type, GUID, name and attributes but not
/// start and size; partition headings keep their number; the GPT's last LBA goes.
fn without_positions(m: &str) -> String {
    m.lines()
        .filter(|l| !l.trim_start().starts_with("last-lba"))
        .map(|l| {
            if let Some(rest) = l.strip_prefix("== p") {
                format!("== p{}", rest.split(' ').next().unwrap_or(""))
            } else if l.starts_with("  p") && l.contains(" : start=") {
                let (head, tail) = l.split_once(" : ").unwrap();
                let tail = tail.split_once("type=").map(|t| t.1).unwrap_or(tail);
                format!("{head} : type={tail}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// (start, size) of partition `n` as inspect sees it.
fn part(j: &serde_json::Value, n: u64) -> (u64, u64) {
    let p = j["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["number"] == n)
        .unwrap_or_else(|| panic!("no partition {n} in {j}"));
    (
        p["start_bytes"].as_u64().unwrap(),
        p["size_bytes"].as_u64().unwrap(),
    )
}

/// A read-only loop device over partition `n` of `disk`.
fn part_loop(disk: &Path, n: u64) -> Loop {
    let (start, size) = part(&inspect(disk), n);
    Loop::attach(disk, &format!("-r -o {start} --sizelimit {size}"))
}

/// `ntfsfix -n` on partition `n`: clean, alternate boot sector included.
fn ntfsfix_clean(disk: &Path, n: u64) {
    let lo = part_loop(disk, n);
    let out = sh(&format!("ntfsfix -n {} 2>&1", lo.0));
    assert!(
        out.contains("alternate boot sector... OK") && out.contains("processed successfully"),
        "partition {n}: {out}"
    );
}

/// NTFS volume size and partition size of partition `n`, by ntfsresize --info.
fn ntfs_sizes(disk: &Path, n: u64) -> (u64, u64) {
    let lo = part_loop(disk, n);
    let out = sh(&format!(
        "ntfsresize --info --force --no-progress-bar {}",
        lo.0
    ));
    let num = |key: &str| -> u64 {
        let at = out
            .find(key)
            .unwrap_or_else(|| panic!("{key} not in {out}"))
            + key.len();
        out[at..]
            .trim_start()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (num("Current volume size:"), num("Current device size:"))
}

fn hidden_sectors(disk: &Path, start: u64) -> u32 {
    u32::from_le_bytes(bytes(disk, start + 0x1C, 4).try_into().unwrap())
}

/// The last usable byte + 1 of a GPT disk, from sfdisk.
fn gpt_usable_end(disk: &Path) -> u64 {
    let d = sh(&format!("sfdisk -d '{}'", disk.display()));
    let lba: u64 = d
        .lines()
        .find_map(|l| l.strip_prefix("last-lba:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (lba + 1) * 512
}

/// Everything a Windows disk fitted onto another size must satisfy.
fn check_windows_fit(src: &Path, dst: &Path) {
    let v = sh(&format!("sgdisk -v '{}'", dst.display()));
    assert!(v.contains("No problems found"), "{v}");
    let j = inspect(dst);
    let (c_start, c_size) = part(&j, 3);
    let (r_start, r_size) = part(&j, 4);
    // Recovery ends at the last usable sector, starts aligned; C: fills the space before it.
    assert_eq!(r_start + r_size, gpt_usable_end(dst), "Recovery's end");
    assert_eq!(r_start % MIB, 0, "Recovery's start is aligned");
    assert_eq!(c_start + c_size, r_start, "C: ends where Recovery starts");
    assert_eq!(part(&j, 1), part(&inspect(src), 1), "the ESP stays");
    for n in [3, 4] {
        ntfsfix_clean(dst, n);
    }
    // The NTFS volumes fill their partitions: C: to the cluster, Recovery within the < 1 MiB
    // its partition grew by to end at the last usable sector.
    let (vol, dev) = ntfs_sizes(dst, 3);
    assert_eq!(dev, c_size);
    assert!(
        dev - vol <= 4096 + 512,
        "C: volume {vol} in partition {dev}"
    );
    let (vol, dev) = ntfs_sizes(dst, 4);
    assert!(dev - vol < MIB, "Recovery volume {vol} in partition {dev}");
    assert_eq!(u64::from(hidden_sectors(dst, r_start)), r_start / 512);
    assert_eq!(u64::from(hidden_sectors(dst, c_start)), c_start / 512);
    check_partition(dst, 1, "fsck.vfat -n");
    assert_same(
        &without_positions(&source_manifest(src)),
        &without_positions(&manifest(dst)),
        "fitted disk: files, labels, UUIDs, GUIDs or table differ",
    );
}

fn windows() -> PathBuf {
    fixture("windows", 256)
}

#[test]
fn clone_copies_windows_and_legacy_disks_into_files() {
    let dir = tempdir();
    for (kind, size) in [("windows", 256), ("legacy", 512)] {
        let src = fixture(kind, size);
        let out = dir.path().join(format!("{kind}.img"));
        let r = fc_ok(&["clone", s(&src), s(&out), "--verify", "-q"]);
        assert!(r.contains("verified"), "{r}");
        assert_eq!(
            std::fs::metadata(&out).unwrap().len(),
            std::fs::metadata(&src).unwrap().len()
        );
        assert_same(
            &source_manifest(&src),
            &manifest(&out),
            &format!("{kind}: cloned disk differs"),
        );
        let first = part(&inspect(&src), 1).0;
        assert_eq!(
            bytes(&src, 0, first),
            bytes(&out, 0, first),
            "{kind}: boot area differs"
        );
    }
    let out = dir.path().join("windows.img");
    sh(&format!(
        "sgdisk -v '{}' | grep -q 'No problems found'",
        out.display()
    ));
    check_partition(&out, 3, "ntfsfix -n");
    check_partition(&dir.path().join("legacy.img"), 5, "e2fsck -fn");
    // Onto an existing disk of the same size full of old data (stale bytes must not show).
    let target = dir.path().join("old.img");
    pattern_file(&target, 256 * MIB, 0x6B);
    fc_ok(&["clone", s(&windows()), s(&target), "--yes", "-q"]);
    assert_same(
        &source_manifest(&windows()),
        &manifest(&target),
        "clone over old data differs",
    );
}

#[test]
fn clone_refuses_its_source_a_small_target_and_unconfirmed_overwrites() {
    let dir = tempdir();
    let src = dir.path().join("src.img");
    std::fs::copy(windows(), &src).unwrap();
    let before = sha256_file(&src);
    let (code, _, err) = fc_run(&["clone", s(&src), s(&src), "--yes"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("onto itself"), "{err}");
    // The same file through a loop device, and a hard link.
    {
        let lo = Loop::attach(&src, "");
        let (code, _, err) = fc_run(&["clone", s(&src), &lo.0, "--yes"]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("loop device over"), "{err}");
        let (code, _, err) = fc_run(&["clone", &lo.0, s(&src), "--yes"]);
        assert_eq!(code, 1, "{err}");
    }
    let link = dir.path().join("link.img");
    std::fs::hard_link(&src, &link).unwrap();
    let (code, _, err) = fc_run(&["clone", s(&src), s(&link), "--yes"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("same file"), "{err}");
    assert_eq!(before, sha256_file(&src), "the source was modified");
    // Too small without --fit: the size needed, the target untouched.
    let small = dir.path().join("small.img");
    pattern_file(&small, 200 * MIB, 0x11);
    let tb = sha256_file(&small);
    let (code, _, err) = fc_run(&["clone", s(&src), s(&small), "--yes"]);
    assert_eq!(code, 1, "{err}");
    let need = 255 * MIB + 33 * 512;
    assert!(
        err.contains("too small") && err.contains(&format!("needs at least {need} bytes")),
        "{err}"
    );
    assert!(err.contains("--fit auto"), "{err}");
    assert_eq!(tb, sha256_file(&small));
    // No --yes off a terminal: usage error; --dry-run: nothing written.
    let (code, _, err) = fc_run(&["clone", s(&src), s(&small), "--fit", "auto"]);
    assert_eq!(code, 2, "{err}");
    let (code, out, err) = fc_run(&["clone", s(&src), s(&small), "--fit", "auto", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("dry run") && err.contains("shrunk"),
        "{out}{err}"
    );
    assert_eq!(tb, sha256_file(&small));
    assert_eq!(before, sha256_file(&src));
    // 4096-byte sectors onto 512-byte ones: refused, not converted.
    let src4k = dir.path().join("4k.img");
    std::fs::copy(fixture("gpt4k", 256), &src4k).unwrap();
    let a = Loop::attach(&src4k, "-r --sector-size 4096");
    let b = Loop::attach(&small, "");
    let (code, _, err) = fc_run(&["clone", &a.0, &b.0, "--fit", "auto", "--yes"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("converting between sector sizes is not supported"),
        "{err}"
    );
    drop((a, b));
    assert_eq!(tb, sha256_file(&small));
}

#[test]
fn windows_restore_with_fit_auto_onto_twice_the_size() {
    let dir = tempdir();
    let target = dir.path().join("big.img");
    pattern_file(&target, 512 * MIB, 0x5A);
    let out = fc_ok(&[
        "restore",
        s(&image_of("windows", 256)),
        s(&target),
        "--fit",
        "auto",
        "--yes",
        "-q",
    ]);
    assert!(out.contains("restored"), "{out}");
    check_windows_fit(&windows(), &target);
    assert!(part(&inspect(&target), 3).1 > 400 * MIB);
}

#[test]
fn windows_clone_with_fit_auto_onto_twice_the_size() {
    let dir = tempdir();
    let src = windows();
    let before = sha256_file(&src);
    let target = dir.path().join("big.img");
    pattern_file(&target, 512 * MIB, 0xA5);
    fc_ok(&["clone", s(&src), s(&target), "--fit", "auto", "--yes", "-q"]);
    check_windows_fit(&src, &target);
    assert_eq!(before, sha256_file(&src), "the source was modified");
}

#[test]
fn windows_restore_and_clone_onto_a_smaller_disk_shrink_c() {
    let dir = tempdir();
    let src = windows();
    let before = sha256_file(&src);
    let a = dir.path().join("restored.img");
    pattern_file(&a, 192 * MIB, 0x33);
    let (code, _, err) = fc_run(&[
        "restore",
        s(&image_of("windows", 256)),
        s(&a),
        "--fit",
        "auto",
        "--scratch",
        s(dir.path()),
        "--yes",
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("shrunk"), "{err}");
    check_windows_fit(&src, &a);
    let b = dir.path().join("cloned.img");
    fc_ok(&[
        "clone",
        s(&src),
        s(&b),
        "--fit",
        "auto",
        "--scratch",
        s(dir.path()),
        "--yes",
        "-q",
    ]);
    // A target that did not exist is made at the source's size: nothing to fit.
    assert_eq!(std::fs::metadata(&b).unwrap().len(), 256 * MIB);
    pattern_file(&b, 192 * MIB, 0x44);
    fc_ok(&[
        "clone",
        s(&src),
        s(&b),
        "--fit",
        "auto",
        "--scratch",
        s(dir.path()),
        "--yes",
        "-q",
    ]);
    check_windows_fit(&src, &b);
    assert_eq!(before, sha256_file(&src), "the source was modified");
    // No scratch file is left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ferroclone-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The number right after `needs at least ` in an error.
fn needed(err: &str) -> u64 {
    let at = err
        .find("needs at least ")
        .unwrap_or_else(|| panic!("{err}"))
        + 15;
    err[at..].split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn too_small_even_shrunk_is_refused_untouched_with_the_exact_size() {
    let dir = tempdir();
    let img = image_of("windows", 256);
    let tiny = dir.path().join("tiny.img");
    pattern_file(&tiny, 150 * MIB, 0x77);
    let before = sha256_file(&tiny);
    let args = |t: &Path| {
        vec![
            "--fit".to_string(),
            "auto".into(),
            "--scratch".into(),
            s(dir.path()).into(),
            "--yes".into(),
            "-q".into(),
            s(t).into(),
        ]
    };
    let run = |cmd: &str, src: &Path, t: &Path| {
        let mut a = vec![cmd.to_string(), s(src).to_string()];
        let mut rest = args(t);
        let target = rest.pop().unwrap();
        a.push(target);
        a.extend(rest);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        fc_run(&a)
    };
    let (code, _, err) = run("restore", &img, &tiny);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("too small"), "{err}");
    let need = needed(&err);
    assert!(need > 150 * MIB, "{err}");
    let (code, _, cerr) = run("clone", &windows(), &tiny);
    assert_eq!(code, 1, "{cerr}");
    assert_eq!(
        needed(&cerr),
        need,
        "clone and restore need the same: {cerr}"
    );
    assert_eq!(before, sha256_file(&tiny), "the target was modified");
    // Exactly: one sector less is refused, the size named works.
    let t = dir.path().join("exact.img");
    pattern_file(&t, need - 512, 0x78);
    let (code, _, err) = run("restore", &img, &t);
    assert_eq!((code, needed(&err)), (1, need), "{err}");
    pattern_file(&t, need, 0x78);
    let (code, _, err) = run("restore", &img, &t);
    assert_eq!(code, 0, "{err}");
    check_windows_fit(&windows(), &t);
}

/// The table lines of a disk manifest with GUIDs and the disk ID left out.
fn without_ids(m: &str) -> String {
    m.lines()
        .filter(|l| !l.trim_start().starts_with("label-id"))
        .map(|l| match l.split_once(", uuid=") {
            Some((a, b)) => format!("{a},{}", b.split_once(',').map(|x| x.1).unwrap_or("")),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn new_ids_make_new_guids_and_keep_the_data() {
    let dir = tempdir();
    let src = windows();
    let a = dir.path().join("a.img");
    fc_ok(&["clone", s(&src), s(&a), "--new-ids", "-q"]);
    sh(&format!(
        "sgdisk -v '{}' | grep -q 'No problems found'",
        a.display()
    ));
    let (js, ja) = (inspect(&src), inspect(&a));
    assert_ne!(js["disk_id"], ja["disk_id"]);
    let guids = |d: &Path| {
        sh(&format!(
            "sfdisk -d '{}' | grep -o 'uuid=[^,]*'",
            d.display()
        ))
    };
    let (gs, ga) = (guids(&src), guids(&a));
    assert_eq!(gs.lines().count(), 4, "{gs}");
    for g in ga.lines() {
        assert!(!gs.contains(g), "{g} kept");
    }
    let (ms, ma) = (source_manifest(&src), manifest(&a));
    assert_ne!(ms, ma);
    assert_same(
        &without_ids(&ms),
        &without_ids(&ma),
        "--new-ids changed more than IDs",
    );
    // By restore, with a fit; and an MBR disk gets a new signature.
    let b = dir.path().join("b.img");
    pattern_file(&b, 384 * MIB, 0x21);
    fc_ok(&[
        "restore",
        s(&image_of("windows", 256)),
        s(&b),
        "--fit",
        "auto",
        "--new-ids",
        "--yes",
        "-q",
    ]);
    let jb = inspect(&b);
    assert_ne!(jb["disk_id"], js["disk_id"]);
    assert_ne!(jb["disk_id"], ja["disk_id"]);
    for g in guids(&b).lines() {
        assert!(!gs.contains(g), "{g} kept");
    }
    assert_same(
        &without_ids(&without_positions(&ms)),
        &without_ids(&without_positions(&manifest(&b))),
        "--new-ids --fit auto changed the data",
    );
    let legacy = fixture("legacy", 512);
    let c = dir.path().join("c.img");
    fc_ok(&["clone", s(&legacy), s(&c), "--new-ids", "-q"]);
    let (jl, jc) = (inspect(&legacy), inspect(&c));
    assert_ne!(jl["disk_id"], jc["disk_id"]);
    assert_eq!(jl["partitions"], jc["partitions"]);
}

#[test]
fn legacy_mbr_disk_onto_larger_and_smaller_disks_resizes_ext4_and_moves_the_logicals() {
    let dir = tempdir();
    let src = fixture("legacy", 512);
    let target = dir.path().join("big.img");
    pattern_file(&target, 1024 * MIB, 0x99);
    fc_ok(&[
        "restore",
        s(&image_of("legacy", 512)),
        s(&target),
        "--fit",
        "auto",
        "--yes",
        "-q",
    ]);
    let (js, jt) = (inspect(&src), inspect(&target));
    assert_eq!(jt["disk_id"], js["disk_id"]);
    let (p1, p5, p6) = (part(&jt, 1), part(&jt, 5), part(&jt, 6));
    assert_eq!(p1.0, MIB);
    assert!(p1.1 > 700 * MIB, "root grown: {p1:?}");
    assert_eq!(p6.0 + p6.1, 1024 * MIB, "swap ends at the disk's end");
    assert_eq!(p5.1, part(&js, 5).1);
    assert_eq!(
        p5.0 - (p1.0 + p1.1),
        part(&js, 5).0 - (MIB + part(&js, 1).1)
    );
    let d = sh(&format!("sfdisk -d '{}'", target.display()));
    assert!(d.contains("type=5") && d.contains("bootable"), "{d}");
    for n in [1, 5] {
        check_partition(&target, n, "e2fsck -fn");
    }
    // ext4 fills partition 1.
    let lo = part_loop(&target, 1);
    let info = sh(&format!("dumpe2fs -h {} 2>/dev/null", lo.0));
    let field = |k: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(field("Block count:") * field("Block size:"), p1.1);
    drop(lo);
    assert_same(
        &without_positions(&source_manifest(&src)),
        &without_positions(&manifest(&target)),
        "legacy fitted disk differs",
    );
    // The boot code and the post-MBR gap came along.
    assert_eq!(bytes(&src, 0, 440), bytes(&target, 0, 440));
    assert_eq!(bytes(&src, 512, MIB - 512), bytes(&target, 512, MIB - 512));
    // A smaller disk: root shrunk by resize2fs (in a scratch file), the logicals moved down.
    let small = dir.path().join("small.img");
    pattern_file(&small, 400 * MIB, 0x98);
    fc_ok(&[
        "clone",
        s(&src),
        s(&small),
        "--fit",
        "auto",
        "--scratch",
        s(dir.path()),
        "--yes",
        "-q",
    ]);
    let j = inspect(&small);
    assert_eq!(part(&j, 6).0 + part(&j, 6).1, 400 * MIB);
    assert!(part(&j, 1).1 < part(&js, 1).1);
    for n in [1, 5] {
        check_partition(&small, n, "e2fsck -fn");
    }
    assert_same(
        &without_positions(&source_manifest(&src)),
        &without_positions(&manifest(&small)),
        "legacy shrunk disk differs",
    );
}

#[test]
fn mbr_uses_only_the_first_2_tib_of_a_larger_disk() {
    let dir = tempdir();
    let huge = dir.path().join("huge.img");
    sh(&format!("truncate -s 3T '{}'", huge.display()));
    let (code, out, err) = fc_run(&[
        "restore",
        s(&image_of("legacy", 512)),
        s(&huge),
        "--fit",
        "auto",
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dry run"), "{out}");
    assert!(
        err.contains("MBR partition table addresses only the first 2.0 TiB"),
        "{err}"
    );
    assert_eq!(std::fs::metadata(&huge).unwrap().len(), 3 << 40);
    assert_eq!(
        sh(&format!("du -k '{}' | cut -f1", huge.display())).trim(),
        "0"
    );
}

/// A GPT disk made here: p1 XFS (320 MiB), p2 btrfs (256 MiB), free space after them.
fn xfs_btrfs_disk(dir: &Path) -> PathBuf {
    let disk = dir.join("src.img");
    sh(&format!(
        "truncate -s 700M '{0}' && sgdisk -o -n 1:2048:+320M -t 1:8300 -n 2:0:+256M -t 2:8300 '{0}' >/dev/null",
        disk.display()
    ));
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    for (n, mkfs) in [
        (1, "mkfs.xfs -q -L fc-xfs"),
        (2, "mkfs.btrfs -q -L fc-btrfs"),
    ] {
        let (start, size) = part(&inspect(&disk), n);
        let lo = Loop::attach(&disk, &format!("-o {start} --sizelimit {size}"));
        sh(&format!(
            "{mkfs} {0} && mount {0} '{1}' && mkdir '{1}/d' && \
             for i in $(seq 1 40); do head -c $((i * 7919)) /dev/urandom > '{1}/d/f'$i; done && \
             head -c 20M /dev/urandom > '{1}/big' && umount '{1}'",
            lo.0,
            mnt.display()
        ));
    }
    disk
}

#[test]
fn xfs_and_btrfs_grow_with_their_tools() {
    let dir = tempdir();
    let src = xfs_btrfs_disk(dir.path());
    let want = without_positions(&manifest(&src));
    for n in [1u64, 2] {
        let t = dir.path().join(format!("t{n}.img"));
        pattern_file(&t, 1024 * MIB, 0x3C);
        let fit = n.to_string();
        fc_ok(&["clone", s(&src), s(&t), "--fit", &fit, "--yes", "-q"]);
        sh(&format!(
            "sgdisk -v '{}' | grep -q 'No problems found'",
            t.display()
        ));
        let j = inspect(&t);
        let (p1, p2) = (part(&j, 1), part(&j, 2));
        assert_eq!(
            p2.0 + p2.1,
            gpt_usable_end(&t),
            "p2 ends at the last usable sector"
        );
        let lo1 = part_loop(&t, 1);
        sh(&format!("xfs_repair -n {}", lo1.0));
        let lo2 = part_loop(&t, 2);
        sh(&format!("btrfs check --readonly {} 2>&1", lo2.0));
        if n == 1 {
            assert_eq!(p1.1 + p1.0, p2.0);
            let db = sh(&format!(
                "xfs_db -r -c 'sb 0' -c 'p dblocks' -c 'p blocksize' {}",
                lo1.0
            ));
            let v: Vec<u64> = db
                .lines()
                .map(|l| l.split(" = ").nth(1).unwrap().trim().parse().unwrap())
                .collect();
            assert!(p1.1 - v[0] * v[1] < MIB, "XFS {} of {}", v[0] * v[1], p1.1);
        } else {
            assert_eq!(p1, part(&inspect(&src), 1));
            let sb = sh(&format!(
                "btrfs inspect-internal dump-super {} | grep '^total_bytes'",
                lo2.0
            ));
            let total: u64 = sb.split_whitespace().nth(1).unwrap().parse().unwrap();
            assert!(p2.1 - total < MIB, "btrfs {total} of {}", p2.1);
        }
        drop((lo1, lo2));
        assert_same(&want, &without_positions(&manifest(&t)), "files differ");
    }
}

/// The lines of partition `n`'s section of a disk manifest (blkid and files), without its heading.
fn section(m: &str, n: u64) -> String {
    let head = format!("== p{n} ");
    m.lines()
        .skip_while(|l| !l.starts_with(&head))
        .skip(1)
        .take_while(|l| !l.starts_with("== "))
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_string()
}

#[test]
fn partitions_go_into_partitions_of_another_disk() {
    let dir = tempdir();
    let t = dir.path().join("other.img");
    sh(&format!(
        "truncate -s 400M '{0}' && sgdisk -o -n 1:2048:+100M -t 1:0700 -n 2:0:+200M -t 2:0700 '{0}' >/dev/null",
        t.display()
    ));
    let table = sh(&format!("sfdisk -d '{}'", t.display()));
    // C: from an image into the larger partition 2, grown; Recovery cloned into partition 1,
    // its filesystem left at its size.
    let (code, _, err) = fc_run(&[
        "restore",
        s(&image_of("windows", 256)),
        s(&t),
        "--parts",
        "3",
        "--into",
        "2",
        "--fit",
        "auto",
        "--yes",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("goes into partition 2"), "{err}");
    fc_ok(&[
        "clone",
        s(&windows()),
        s(&t),
        "--parts",
        "4",
        "--into",
        "1",
        "--yes",
        "-q",
    ]);
    assert_eq!(
        table,
        sh(&format!("sfdisk -d '{}'", t.display())),
        "table changed"
    );
    for n in [1, 2] {
        ntfsfix_clean(&t, n);
    }
    let (vol, dev) = ntfs_sizes(&t, 2);
    assert!(dev - vol <= 4096 + 512, "{vol} of {dev}");
    let (start, _) = part(&inspect(&t), 1);
    assert_eq!(u64::from(hidden_sectors(&t, start)), start / 512);
    let (ms, mt) = (source_manifest(&windows()), manifest(&t));
    assert_same(&section(&ms, 3), &section(&mt, 2), "C: differs");
    assert_same(&section(&ms, 4), &section(&mt, 1), "Recovery differs");
    // Too small: refused with the size, nothing written.
    let before = sha256_file(&t);
    let (code, _, err) = fc_run(&[
        "clone",
        s(&windows()),
        s(&t),
        "--parts",
        "3",
        "--into",
        "1",
        "--yes",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--fit auto"), "{err}");
    let (code, _, err) = fc_run(&[
        "clone",
        s(&windows()),
        s(&t),
        "--parts",
        "3",
        "--into",
        "9",
        "--yes",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no partition 9"), "{err}");
    assert_eq!(before, sha256_file(&t));
}

fn allocated_mib(p: &Path) -> u64 {
    sh(&format!("du -m '{}' | cut -f1", p.display()))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn discard_drops_the_free_space_of_a_block_device_and_a_file() {
    let dir = tempdir();
    let back = dir.path().join("ssd.img");
    pattern_file(&back, 256 * MIB, 0x5A);
    {
        let lo = Loop::attach(&back, "");
        let (code, _, err) = fc_run(&[
            "restore",
            s(&image_of("windows", 256)),
            &lo.0,
            "--discard",
            "--yes",
            "-q",
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("of free space discarded"), "{err}");
    }
    // The loop device punched the discarded ranges out of its file: the free space of every
    // partition (stale pattern) is gone, the data is all there.
    assert!(allocated_mib(&back) < 160, "{} MiB", allocated_mib(&back));
    assert_same(
        &source_manifest(&windows()),
        &manifest(&back),
        "discarded target differs",
    );
    ntfsfix_clean(&back, 3);
    // A clone into a file punches holes the same way.
    let f = dir.path().join("file.img");
    pattern_file(&f, 256 * MIB, 0x5A);
    fc_ok(&["clone", s(&windows()), s(&f), "--discard", "--yes", "-q"]);
    assert!(allocated_mib(&f) < 160, "{} MiB", allocated_mib(&f));
    assert_same(&source_manifest(&windows()), &manifest(&f), "file differs");
}
