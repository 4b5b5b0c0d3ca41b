//! Integration tests of the imaging core: real disks made by scripts/mkdisk.sh (sgdisk/sfdisk,
//! mkfs.*, mtools, ntfs-3g), saved, verified, restored, and compared by scripts/disk-manifest.sh
//! (partition table, boot area, every file's SHA-256) and each filesystem's checker; damaged
//! images; refusals.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::common::{fc_ok, fc_run, fixture, pattern_file, root, sh, sha256_file, tempdir};

pub(crate) fn manifest(disk: &Path) -> String {
    let out = tempfile::NamedTempFile::new().unwrap();
    sh(&format!(
        "'{}/scripts/disk-manifest.sh' '{}' '{}'",
        root().display(),
        disk.display(),
        out.path().display()
    ));
    std::fs::read_to_string(out.path()).unwrap()
}

/// Asserts two texts are equal, showing only the lines that differ.
pub(crate) fn assert_same(a: &str, b: &str, what: &str) {
    if a == b {
        return;
    }
    let la: Vec<&str> = a.lines().collect();
    let lb: Vec<&str> = b.lines().collect();
    let only_a: Vec<&&str> = la.iter().filter(|l| !lb.contains(l)).take(20).collect();
    let only_b: Vec<&&str> = lb.iter().filter(|l| !la.contains(l)).take(20).collect();
    panic!("{what}:\n only in the first: {only_a:#?}\n only in the second: {only_b:#?}");
}

pub(crate) fn bytes(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

pub(crate) fn inspect(disk: &Path) -> serde_json::Value {
    serde_json::from_str(&fc_ok(&["inspect", disk.to_str().unwrap(), "--json"])).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Extracts partition `n` of `disk` into its own file and runs `check` on it.
pub(crate) fn check_partition(disk: &Path, n: u64, check: &str) {
    let j = inspect(disk);
    let p = j["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["number"] == n)
        .unwrap_or_else(|| panic!("no partition {n} in {j}"));
    let dir = tempdir();
    let part = dir.path().join("part.img");
    sh(&format!(
        "dd if='{}' of='{}' bs=1M iflag=skip_bytes,count_bytes skip={} count={} conv=sparse status=none",
        disk.display(),
        part.display(),
        p["start_bytes"],
        p["size_bytes"]
    ));
    sh(&format!("{check} '{}'", part.display()));
}

/// save → verify → restore into a new file → everything equal. Returns `info --json`.
fn round_trip(kind: &str, size_mib: u32, checks: &[(u64, &str)]) -> serde_json::Value {
    let src = fixture(kind, size_mib);
    let dir = tempdir();
    let img = dir.path().join("img");
    let out = dir.path().join("restored.img");
    fc_ok(&["save", s(&src), s(&img)]);
    let info: serde_json::Value =
        serde_json::from_str(&fc_ok(&["info", s(&img), "--json"])).unwrap();
    let v = fc_ok(&["verify", s(&img), "--against", s(&src)]);
    assert!(v.contains("sound"), "{v}");
    fc_ok(&["restore", s(&img), s(&out)]);
    assert_same(
        &manifest(&src),
        &manifest(&out),
        &format!("{kind}: restored disk differs"),
    );
    let j = inspect(&src);
    // The boot area and the backup GPT, byte for byte.
    let first = j["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["start_bytes"].as_u64().unwrap())
        .min()
        .unwrap_or(0);
    assert_eq!(
        bytes(&src, 0, first),
        bytes(&out, 0, first),
        "{kind}: boot area differs"
    );
    if j["table"] == "gpt" {
        let ss = j["logical_sector_size"].as_u64().unwrap();
        let len = std::fs::metadata(&src).unwrap().len();
        let tail = 33 * ss.min(512) + ss; // array (16 KiB) + header
        assert_eq!(
            bytes(&src, len - tail, tail),
            bytes(&out, len - tail, tail),
            "{kind}: backup GPT differs"
        );
        if ss == 512 {
            sh(&format!(
                "sgdisk -v '{}' | grep -q 'No problems found'",
                out.display()
            ));
        }
    }
    if j["table"] != "none" {
        let d = |p: &Path| {
            sh(&format!(
                "sfdisk -d '{}' | sed 's#^{}#DISK#'",
                p.display(),
                p.display()
            ))
        };
        assert_eq!(
            d(&src).replace(s(&src), "DISK"),
            d(&out).replace(s(&out), "DISK")
        );
    }
    for &(n, check) in checks {
        check_partition(&out, n, check);
    }
    info
}

/// The stored partitions' modes, and stored vs. image bytes, by partition number.
fn modes(info: &serde_json::Value) -> Vec<(u64, String, u64, u64)> {
    info["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["number"].as_u64().unwrap(),
                p["mode"].as_str().unwrap().to_string(),
                p["stored_bytes"].as_u64().unwrap(),
                p["image_bytes"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn windows_gpt_disk_round_trips() {
    let info = round_trip(
        "windows",
        1024,
        &[(1, "fsck.vfat -n"), (3, "ntfsfix -n"), (4, "ntfsfix -n")],
    );
    // Only used data is stored: the filesystems are imaged by their maps (the MSR raw), the
    // stored bytes are what inspect calls used, and stale data in C:'s free space is not there.
    let src = inspect(&fixture("windows", 1024));
    let m = modes(&info);
    let want = ["used", "raw", "used", "used"];
    for ((n, mode, stored, image), w) in m.iter().zip(want) {
        assert_eq!(mode, w, "partition {n}");
        let part = &src["partitions"].as_array().unwrap()[(*n - 1) as usize];
        assert_eq!(
            *stored,
            part["used_bytes"].as_u64().unwrap(),
            "partition {n}"
        );
        assert!(
            image <= stored,
            "partition {n}: image {image} > stored {stored}"
        );
    }
    let c = &src["partitions"][2];
    assert!(
        c["used_bytes"].as_u64().unwrap() < c["size_bytes"].as_u64().unwrap() / 2,
        "C: should be less than half used: {c}"
    );
}

#[test]
fn legacy_mbr_disk_with_logical_partitions_round_trips() {
    let info = round_trip("legacy", 512, &[(1, "e2fsck -fn"), (5, "e2fsck -fn")]);
    let m = modes(&info);
    assert!(m.iter().all(|p| p.1 == "used"), "{m:?}");
    assert_eq!(m[2].2, 4096, "swap: only the header page is stored");
    let src = fixture("legacy", 512);
    let j = inspect(&src);
    let nums: Vec<u64> = j["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["number"].as_u64().unwrap())
        .collect();
    assert_eq!(nums, vec![1, 5, 6]);
    assert_eq!(j["partitions"][2]["fs"], "swap");
}

#[test]
fn bare_filesystem_round_trips() {
    round_trip("bare-ext4", 128, &[]);
    let j = inspect(&fixture("bare-ext4", 128));
    assert_eq!(j["table"], "none");
    assert_eq!(j["partitions"][0]["fs"], "ext4");
}

/// A loop device this test made, detached on drop.
pub(crate) struct Loop(pub(crate) String);

impl Loop {
    pub(crate) fn attach(file: &Path, args: &str) -> Loop {
        let dev = sh(&format!("losetup -f --show {args} '{}'", file.display()));
        Loop(dev.trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.0])
            .status();
    }
}

#[test]
fn gpt_with_4096_byte_sectors_round_trips_through_loop_devices() {
    let src = fixture("gpt4k", 256);
    let dir = tempdir();
    let copy = dir.path().join("src.img");
    std::fs::copy(&src, &copy).unwrap();
    let lo = Loop::attach(&copy, "-r --sector-size 4096");
    let j: serde_json::Value = serde_json::from_str(&fc_ok(&["inspect", &lo.0, "--json"])).unwrap();
    assert_eq!(j["logical_sector_size"], 4096);
    assert_eq!(j["table"], "gpt");
    let img = dir.path().join("img");
    fc_ok(&["save", &lo.0, s(&img)]);
    // Restore onto a 4K loop device of the same size, pre-filled with a pattern.
    let target = dir.path().join("target.img");
    pattern_file(&target, std::fs::metadata(&src).unwrap().len(), 0xA5);
    {
        let tl = Loop::attach(&target, "--sector-size 4096");
        fc_ok(&["restore", s(&img), &tl.0, "--yes"]);
        let a: serde_json::Value =
            serde_json::from_str(&fc_ok(&["inspect", &tl.0, "--json"])).unwrap();
        assert_eq!(a["partitions"], j["partitions"]);
        sh(&format!("sgdisk -v {} | grep -q 'No problems found'", tl.0));
    }
    assert_same(
        &manifest(&src),
        &manifest(&target),
        "4K loop target differs",
    );
    // And into a new regular file: its 4096-byte GPT is recognised from the file alone.
    let out = dir.path().join("new.img");
    fc_ok(&["restore", s(&img), s(&out)]);
    assert_eq!(inspect(&out)["logical_sector_size"], 4096);
    assert_same(&manifest(&src), &manifest(&out), "4K file target differs");
}

#[test]
fn restore_onto_a_larger_disk_moves_the_backup_gpt() {
    let src = fixture("windows", 256);
    let dir = tempdir();
    let img = dir.path().join("img");
    fc_ok(&["save", s(&src), s(&img), "--no-verify"]);
    let target = dir.path().join("big.img");
    let len = std::fs::metadata(&src).unwrap().len();
    pattern_file(&target, len + (96 << 20), 0x5A);
    fc_ok(&["restore", s(&img), s(&target), "--yes"]);
    let v = sh(&format!("sgdisk -v '{}'", target.display()));
    assert!(v.contains("No problems found"), "{v}");
    let a = inspect(&src);
    let b = inspect(&target);
    assert_eq!(a["partitions"], b["partitions"]);
    let strip = |m: String| -> String {
        m.lines()
            .filter(|l| {
                !l.trim_start().starts_with("last-lba")
                    && !l.starts_with("raw")
                    && !l.contains("bytes of raw")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_same(
        &strip(manifest(&src)),
        &strip(manifest(&target)),
        "larger target differs",
    );
    check_partition(&target, 3, "ntfsfix -n");
}

#[test]
fn split_volumes_and_partition_subsets() {
    let src = fixture("windows", 256);
    let dir = tempdir();
    let img = dir.path().join("img");
    fc_ok(&["save", s(&src), s(&img), "--split", "3M", "--parts", "1,3"]);
    let info: serde_json::Value =
        serde_json::from_str(&fc_ok(&["info", s(&img), "--json"])).unwrap();
    let parts: Vec<u64> = info["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["number"].as_u64().unwrap())
        .collect();
    assert_eq!(parts, vec![1, 3]);
    let vols = std::fs::read_dir(&img)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("p3.")
        })
        .count();
    assert!(vols > 4, "expected several p3 volumes, found {vols} files");
    for e in std::fs::read_dir(&img).unwrap() {
        let m = e.unwrap().metadata().unwrap();
        assert!(m.len() <= 3 << 20, "a volume is larger than --split");
    }
    let out = dir.path().join("out.img");
    fc_ok(&["restore", s(&img), s(&out)]);
    check_partition(&out, 1, "fsck.vfat -n");
    check_partition(&out, 3, "ntfsfix -n");
    // Restore only partition 3 onto that disk, which has the same layout.
    let (code, _, err) = fc_run(&["restore", s(&img), s(&out), "--parts", "3", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("keep the target's partition table"), "{err}");
}

/// A saved image of the small Windows disk, copied fresh for each damage test.
fn damaged_setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    static IMG: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut g = IMG.lock().unwrap_or_else(|e| e.into_inner());
    let base = match &*g {
        Some(p) => p.clone(),
        None => {
            let src = fixture("windows", 256);
            let p = root()
                .join("target/test-fixtures")
                .join(format!("img-windows-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            fc_ok(&["save", s(&src), s(&p), "--split", "8M"]);
            *g = Some(p.clone());
            p
        }
    };
    let dir = tempdir();
    let img = dir.path().join("img");
    sh(&format!("cp -r '{}' '{}'", base.display(), img.display()));
    let target = dir.path().join("target.img");
    pattern_file(
        &target,
        std::fs::metadata(fixture("windows", 256)).unwrap().len(),
        0x3C,
    );
    (dir, img, target)
}

/// Restore must fail before writing anything: the target keeps its bytes.
fn assert_refused_untouched(img: &Path, target: &Path, needle: &str) {
    let before = sha256_file(target);
    let (code, _, err) = fc_run(&["restore", s(img), s(target), "--yes"]);
    assert_ne!(code, 0, "restore of a damaged image succeeded");
    assert!(
        err.contains(needle),
        "error does not mention {needle:?}: {err}"
    );
    assert_eq!(before, sha256_file(target), "the target was modified");
}

pub(crate) fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0xFF;
    f.write_all_at(&b, offset).unwrap();
}

fn biggest_volume(img: &Path, prefix: &str) -> PathBuf {
    std::fs::read_dir(img)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(prefix) && n[prefix.len()..].chars().all(|c| c.is_ascii_digit())
        })
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
}

#[test]
fn flipped_byte_in_a_volume_fails_verify_with_exit_3_and_names_it() {
    let (_d, img, target) = damaged_setup();
    let vol = biggest_volume(&img, "p3.");
    let len = std::fs::metadata(&vol).unwrap().len();
    flip_byte(&vol, len / 2);
    let (code, _, err) = fc_run(&["verify", s(&img)]);
    assert_eq!(code, 3, "{err}");
    let name = vol.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        err.contains(&name) && err.contains("p3") && err.contains("block"),
        "{err}"
    );
    // The structure is sound, so restore starts, finds the bad block, stops and says where.
    let (code, _, err) = fc_run(&["restore", s(&img), s(&target), "--yes"]);
    assert_ne!(code, 0);
    assert!(err.contains(&name) && err.contains("block"), "{err}");
}

#[test]
fn truncated_volume_is_refused_before_writing() {
    let (_d, img, target) = damaged_setup();
    let vol = biggest_volume(&img, "p3.");
    let len = std::fs::metadata(&vol).unwrap().len();
    sh(&format!("truncate -s {} '{}'", len - 1000, vol.display()));
    let name = vol.file_name().unwrap().to_string_lossy().into_owned();
    assert_refused_untouched(&img, &target, &name);
    let (code, _, err) = fc_run(&["verify", s(&img)]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn missing_volume_is_refused_before_writing() {
    let (_d, img, target) = damaged_setup();
    let vol = biggest_volume(&img, "p3.");
    std::fs::remove_file(&vol).unwrap();
    let name = vol.file_name().unwrap().to_string_lossy().into_owned();
    assert_refused_untouched(&img, &target, &name);
    let (code, _, err) = fc_run(&["verify", s(&img)]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn swapped_volumes_are_refused_before_writing() {
    let (_d, img, target) = damaged_setup();
    let a = img.join("p3.000");
    let b = img.join("p3.001");
    let t = img.join("tmp");
    std::fs::rename(&a, &t).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(&t, &b).unwrap();
    // Equal sizes would pass the size check; the whole-volume CRC32 or the record check
    // still catches them (restore stops on the first bad block).
    let before = sha256_file(&target);
    let (code, _, err) = fc_run(&["verify", s(&img)]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("p3.00"), "{err}");
    let (code, _, _) = fc_run(&["restore", s(&img), s(&target), "--yes"]);
    assert_ne!(code, 0);
    let _ = before;
}

#[test]
fn truncated_manifest_is_refused_before_writing() {
    let (_d, img, target) = damaged_setup();
    let m = img.join("manifest.json");
    let len = std::fs::metadata(&m).unwrap().len();
    sh(&format!("truncate -s {} '{}'", len / 2, m.display()));
    assert_refused_untouched(&img, &target, "manifest.json");
    let (code, _, err) = fc_run(&["verify", s(&img)]);
    assert_eq!(code, 3, "{err}");
}

#[test]
fn future_version_is_refused_before_writing() {
    let (_d, img, target) = damaged_setup();
    let m = img.join("manifest.json");
    sh(&format!(
        "sed -i 's/\"version\": 1,/\"version\": 99,/' '{}'",
        m.display()
    ));
    assert_refused_untouched(&img, &target, "version 99");
}

#[test]
fn incomplete_image_without_manifest_is_refused() {
    let (_d, img, target) = damaged_setup();
    std::fs::remove_file(img.join("manifest.json")).unwrap();
    assert_refused_untouched(&img, &target, "incomplete");
    let (code, out, _) = fc_run(&["info", s(&img), "--json"]);
    assert_ne!(code, 0);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["complete"], false);
}

#[test]
fn target_too_small_is_refused_with_the_size_needed() {
    let (_d, img, _) = damaged_setup();
    let dir = tempdir();
    let small = dir.path().join("small.img");
    pattern_file(&small, 100 << 20, 0x11);
    let before = sha256_file(&small);
    let (code, _, err) = fc_run(&["restore", s(&img), s(&small), "--yes"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("too small") && err.contains("needs at least"),
        "{err}"
    );
    assert_eq!(before, sha256_file(&small));
}

#[test]
fn overwriting_needs_yes_off_a_terminal_and_dry_run_touches_nothing() {
    let (_d, img, target) = damaged_setup();
    let before = sha256_file(&target);
    let (code, _, err) = fc_run(&["restore", s(&img), s(&target)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--yes"), "{err}");
    let (code, out, err) = fc_run(&["restore", s(&img), s(&target), "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("dry run") && err.contains("WILL BE OVERWRITTEN"),
        "{out}{err}"
    );
    assert_eq!(before, sha256_file(&target));
}

#[test]
fn a_mounted_target_is_refused() {
    let dir = tempdir();
    let fsimg = dir.path().join("fs.img");
    sh(&format!(
        "truncate -s 64M '{0}' && mkfs.ext4 -q '{0}'",
        fsimg.display()
    ));
    let lo = Loop::attach(&fsimg, "");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    sh(&format!("mount {} '{}'", lo.0, mnt.display()));
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Umount(mnt.clone());
    let src = fixture("bare-ext4", 128);
    let img = dir.path().join("img");
    fc_ok(&["save", s(&src), s(&img), "--no-verify"]);
    for target in [lo.0.as_str(), s(&fsimg)] {
        let (code, _, err) = fc_run(&["restore", s(&img), target, "--yes"]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("mounted"), "{err}");
    }
    // Saving a disk into a directory on that same disk is refused.
    let inside = mnt.join("img");
    let (code, _, err) = fc_run(&["save", &lo.0, s(&inside)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is on the source disk"), "{err}");
    assert!(!inside.exists() && !mnt.join("img.partial").exists());
    // A restore onto the disk that holds the image directory is refused too.
    let (code, _, err) = fc_run(&["restore", s(&img), &lo.0, "--yes"]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn saving_over_an_existing_image_or_a_partial_one_is_refused() {
    let (_d, img, _) = damaged_setup();
    let src = fixture("windows", 256);
    let (code, _, err) = fc_run(&["save", s(&src), s(&img)]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    let other = img.with_file_name("other");
    std::fs::create_dir(other.with_file_name("other.partial")).unwrap();
    let (code, _, err) = fc_run(&["save", s(&src), s(&other)]);
    assert_eq!(code, 1);
    assert!(err.contains("did not finish"), "{err}");
}
