//! Clonezilla and partclone images: directories made by scripts/mk-clonezilla.sh from REAL
//! partclone 0.3.23 output (and ntfsclone, sfdisk, sgdisk, parted, dd) of the disks
//! scripts/mkdisk.sh builds; restored, verified and converted by ferroclone, and compared with
//! the source disk by scripts/disk-manifest.sh (table, boot area, every file) and each
//! filesystem's checker. Damaged and incomplete images must leave the target untouched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::common::{fc_ok, fc_run, pattern_file, root, sh, sha256_file, tempdir};
use crate::imaging::{assert_same, bytes, check_partition, flip_byte, inspect, manifest};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A fixture disk, shared with the other test modules (one cache, one lock: never built twice).
fn disk(kind: &str, size_mib: u32) -> PathBuf {
    crate::common::fixture(kind, size_mib)
}

/// A Clonezilla image directory of `disk(kind, size)` made with `opts`, cached by the hash of
/// the scripts and the options. Tests copy it before damaging it.
fn clonezilla(kind: &str, size_mib: u32, opts: &str) -> PathBuf {
    static CACHE: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let src = disk(kind, size_mib);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let key = format!("{kind}-{size_mib}-{opts}");
    if let Some(p) = cache.get(&key) {
        return p.clone();
    }
    let r = root();
    let hash = sh(&format!(
        "cat '{0}/scripts/mk-clonezilla.sh' '{0}/scripts/mkdisk.sh' '{0}/scripts/lib-loop.sh' | sha256sum | cut -c1-12",
        r.display()
    ));
    let opts_hash: String = {
        use sha2::Digest;
        sha2::Sha256::digest(opts.as_bytes())
            .iter()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let path = r
        .join("target/test-fixtures")
        .join(format!("cz-{kind}-{size_mib}-{}-{opts_hash}", hash.trim()));
    if !path.exists() {
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        sh(&format!(
            "'{}/scripts/mk-clonezilla.sh' {opts} '{}' '{}'",
            r.display(),
            src.display(),
            tmp.display()
        ));
        std::fs::rename(&tmp, &path).unwrap();
    }
    cache.insert(key, path.clone());
    path
}

const WINDOWS_OPTS: &str = "--comp gz,zst,lz4,none --csum '-a1 -k 64;-a0;-a1 -K' --split 10M";
const LEGACY_OPTS: &str = "--comp zst,xz,bz2 --csum '-a1 -k 100;-a0' --split 8M";

fn sfdisk_dump(p: &Path) -> String {
    sh(&format!("sfdisk -d '{}'", p.display())).replace(s(p), "DISK")
}

/// Everything a restore must give back: the files (disk-manifest), the boot area before the
/// first partition, the table (`sfdisk -d`), the backup GPT or the EBRs, and clean checkers.
fn assert_restored(src: &Path, out: &Path, checks: &[(u64, &str)], what: &str) {
    assert_same(
        &manifest(src),
        &manifest(out),
        &format!("{what}: restored disk differs"),
    );
    let j = inspect(src);
    let parts = j["partitions"].as_array().unwrap();
    let first = parts
        .iter()
        .map(|p| p["start_bytes"].as_u64().unwrap())
        .min()
        .unwrap();
    assert!(
        bytes(src, 0, first) == bytes(out, 0, first),
        "{what}: boot area differs"
    );
    assert_eq!(sfdisk_dump(src), sfdisk_dump(out), "{what}: table differs");
    let len = std::fs::metadata(src).unwrap().len();
    if j["table"] == "gpt" {
        assert!(
            bytes(src, len - 33 * 512, 33 * 512) == bytes(out, len - 33 * 512, 33 * 512),
            "{what}: backup GPT differs"
        );
        sh(&format!(
            "sgdisk -v '{}' | grep -q 'No problems found'",
            out.display()
        ));
    } else {
        // Every EBR, byte for byte: one sector before each logical partition's 1 MiB gap.
        for p in parts.iter().filter(|p| p["number"].as_u64().unwrap() >= 5) {
            let ebr = p["start_bytes"].as_u64().unwrap() - (1 << 20);
            assert!(
                bytes(src, ebr, 512) == bytes(out, ebr, 512),
                "{what}: EBR at {ebr:#x} differs"
            );
        }
    }
    for &(n, check) in checks {
        check_partition(out, n, check);
    }
}

const WINDOWS_CHECKS: &[(u64, &str)] = &[(1, "fsck.vfat -n"), (3, "ntfsfix -n"), (4, "ntfsfix -n")];
const LEGACY_CHECKS: &[(u64, &str)] = &[(1, "e2fsck -fn"), (5, "e2fsck -fn")];

/// restore → equal; verify (and against the source); convert → native verify → restore → equal.
fn round_trip(kind: &str, opts: &str, checks: &[(u64, &str)]) -> serde_json::Value {
    let src = disk(kind, 256);
    let cz = clonezilla(kind, 256, opts);
    let dir = tempdir();
    let out = dir.path().join("restored.img");
    fc_ok(&["restore", s(&cz), s(&out)]);
    assert_restored(&src, &out, checks, &format!("{kind} from Clonezilla"));
    let v = fc_ok(&["verify", s(&cz), "--against", s(&src)]);
    assert!(
        v.contains("sound") && v.contains("equal to the disk"),
        "{v}"
    );
    let info: serde_json::Value =
        serde_json::from_str(&fc_ok(&["info", s(&cz), "--json"])).unwrap();
    assert_eq!(info["format"], "clonezilla");
    assert_eq!(info["complete"], true);
    let native = dir.path().join("native");
    let c = fc_ok(&["convert", s(&cz), s(&native)]);
    assert!(c.contains("verified"), "{c}");
    let v = fc_ok(&["verify", s(&native), "--against", s(&src)]);
    assert!(v.contains("equal to the disk"), "{v}");
    let out2 = dir.path().join("from-native.img");
    fc_ok(&["restore", s(&native), s(&out2)]);
    assert_restored(&src, &out2, checks, &format!("{kind} converted"));
    info
}

fn part(info: &serde_json::Value, n: u64) -> &serde_json::Value {
    info["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["number"] == n)
        .unwrap_or_else(|| panic!("no partition {n}: {info}"))
}

#[test]
fn windows_gpt_clonezilla_image_restores_equal() {
    let info = round_trip("windows", WINDOWS_OPTS, WINDOWS_CHECKS);
    // What the directory holds: real partclone 0.3.23 images in four compressions, split.
    assert_eq!(part(&info, 1)["compression"], "gzip");
    assert_eq!(part(&info, 1)["partclone"]["checksum"], "CRC32");
    assert_eq!(part(&info, 1)["partclone"]["blocks_per_checksum"], 64);
    assert_eq!(part(&info, 2)["compression"], "zstd");
    assert_eq!(part(&info, 2)["mode"], "raw");
    assert_eq!(part(&info, 3)["compression"], "lz4");
    assert_eq!(part(&info, 3)["partclone"]["fs"], "NTFS");
    assert!(part(&info, 3)["pieces"].as_u64().unwrap() > 1);
    assert_eq!(part(&info, 4)["compression"], "uncompressed");
}

#[test]
fn legacy_mbr_clonezilla_image_with_logical_partitions_and_swap_restores_equal() {
    let info = round_trip("legacy", LEGACY_OPTS, LEGACY_CHECKS);
    assert_eq!(part(&info, 1)["compression"], "zstd");
    assert_eq!(part(&info, 5)["compression"], "xz");
    assert_eq!(part(&info, 5)["partclone"]["checksum"], "none");
    assert_eq!(part(&info, 6)["swap"], true);
    // bzip2 and CRC32 without reseeding, on the other partitions' turn.
    let cz = clonezilla("legacy", 256, "--comp bz2,gz --csum '-a1 -K'");
    let src = disk("legacy", 256);
    let dir = tempdir();
    let out = dir.path().join("out.img");
    // Onto an existing target pre-filled with a pattern: the table, boot area and files are
    // still those of the source.
    pattern_file(&out, std::fs::metadata(&src).unwrap().len(), 0xA5);
    fc_ok(&["restore", s(&cz), s(&out), "--yes"]);
    assert_same(
        &manifest(&src),
        &manifest(&out),
        "bzip2 image onto a used target",
    );
    check_partition(&out, 1, "e2fsck -fn");
}

#[test]
fn ntfsclone_images_restore_equal() {
    let src = disk("windows", 256);
    let cz = clonezilla("windows", 256, "--ntfsclone --comp gz,none");
    assert!(cz.join("sda3.ntfs-img").exists() || cz.join("sda3.ntfs-img.aa").exists());
    let dir = tempdir();
    let out = dir.path().join("out.img");
    fc_ok(&["restore", s(&cz), s(&out)]);
    assert_restored(&src, &out, WINDOWS_CHECKS, "ntfsclone image");
    let v = fc_ok(&["verify", s(&cz), "--against", s(&src)]);
    assert!(v.contains("equal to the disk"), "{v}");
}

/// A fresh copy of the Windows Clonezilla image and a target pre-filled with a pattern.
fn damage_setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let cz = clonezilla("windows", 256, WINDOWS_OPTS);
    let dir = tempdir();
    let img = dir.path().join("cz");
    sh(&format!("cp -r '{}' '{}'", cz.display(), img.display()));
    let target = dir.path().join("target.img");
    pattern_file(
        &target,
        std::fs::metadata(disk("windows", 256)).unwrap().len(),
        0x3C,
    );
    (dir, img, target)
}

fn assert_refused_untouched(img: &Path, target: &Path, needles: &[&str]) -> String {
    let before = sha256_file(target);
    let (code, _, err) = fc_run(&["restore", s(img), s(target), "--yes"]);
    assert_ne!(code, 0, "restore of a damaged image succeeded");
    for n in needles {
        assert!(err.contains(n), "error does not mention {n:?}: {err}");
    }
    assert_eq!(before, sha256_file(target), "the target was modified");
    err
}

#[test]
fn a_missing_piece_is_refused_and_the_target_untouched() {
    let (_d, img, target) = damage_setup();
    std::fs::remove_file(img.join("sda3.ntfs-ptcl-img.lz4.ab")).unwrap();
    assert_refused_untouched(&img, &target, &["sda3.ntfs-ptcl-img.lz4.ab", "missing"]);
    let (code, _, err) = fc_run(&["verify", s(&img)]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("sda3.ntfs-ptcl-img.lz4.ab"), "{err}");
    // The last piece gone: the name cannot tell, the data does (uncompressed: by size, before
    // reading; compressed: the full check before the first write).
    let (_d, img, target) = damage_setup();
    std::fs::remove_file(img.join("sda4.ntfs-ptcl-img.uncomp.ac")).unwrap();
    assert_refused_untouched(
        &img,
        &target,
        &["sda4.ntfs-ptcl-img.uncomp.ab", "truncated"],
    );
    let (_d, img, target) = damage_setup();
    let last = (b'a'..=b'z')
        .map(|c| img.join(format!("sda3.ntfs-ptcl-img.lz4.a{}", c as char)))
        .take_while(|p| p.exists())
        .last()
        .unwrap();
    std::fs::remove_file(&last).unwrap();
    assert_refused_untouched(&img, &target, &["sda3.ntfs-ptcl-img.lz4", "lz4"]);
    // No data file at all for a listed partition.
    let (_d, img, target) = damage_setup();
    sh(&format!("rm '{}'/sda1.vfat-ptcl-img.gz*", img.display()));
    assert_refused_untouched(&img, &target, &["sda1", "no data file"]);
    // A table file.
    let (_d, img, target) = damage_setup();
    std::fs::remove_file(img.join("sda-gpt-2nd")).unwrap();
    assert_refused_untouched(&img, &target, &["sda-gpt-2nd"]);
}

#[test]
fn a_damaged_byte_is_refused_and_the_target_untouched() {
    // In lz4-compressed partclone data: the full check finds it before the first write.
    let (_d, img, target) = damage_setup();
    let piece = img.join("sda3.ntfs-ptcl-img.lz4.ac");
    flip_byte(&piece, 5_000_000);
    let err = assert_refused_untouched(
        &img,
        &target,
        &["sda3.ntfs-ptcl-img.lz4.ac", "nothing was written"],
    );
    assert!(err.contains("partition 3"), "{err}");
    let (code, _, err) = fc_run(&["verify", s(&img)]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("sda3.ntfs-ptcl-img.lz4.ac"), "{err}");
    // Without the check, restore writes until it reaches the damage, then stops and says where.
    let (code, _, err) = fc_run(&["restore", s(&img), s(&target), "--yes", "--skip-check"]);
    assert_ne!(code, 0);
    assert!(err.contains("sda3.ntfs-ptcl-img.lz4.ac"), "{err}");

    // In uncompressed partclone data: partclone's own CRC32 of the strip catches it.
    let (_d, img, target) = damage_setup();
    flip_byte(&img.join("sda4.ntfs-ptcl-img.uncomp.ab"), 3_333_333);
    assert_refused_untouched(
        &img,
        &target,
        &["sda4.ntfs-ptcl-img.uncomp.ab", "CRC32 of data strip"],
    );

    // In a header: refused when the image is opened.
    let (_d, img, target) = damage_setup();
    flip_byte(&img.join("sda4.ntfs-ptcl-img.uncomp.aa"), 70);
    assert_refused_untouched(
        &img,
        &target,
        &["sda4.ntfs-ptcl-img.uncomp.aa", "header CRC32"],
    );

    // In the bitmap.
    let (_d, img, target) = damage_setup();
    flip_byte(&img.join("sda4.ntfs-ptcl-img.uncomp.aa"), 200);
    assert_refused_untouched(
        &img,
        &target,
        &["sda4.ntfs-ptcl-img.uncomp.aa", "bitmap CRC32"],
    );

    // In the table dump: the sectors no longer agree with it.
    let (_d, img, target) = damage_setup();
    sh(&format!(
        "sed -i 's/start=      116736/start=      116744/' '{}/sda-pt.sf'",
        img.display()
    ));
    assert_refused_untouched(&img, &target, &["sda-pt.sf", "partition 3"]);
}

#[test]
fn encrypted_and_multi_disk_images_are_refused_clearly() {
    let dir = tempdir();
    let img = dir.path().join("enc");
    std::fs::create_dir(&img).unwrap();
    std::fs::write(img.join("parts"), "sda1\n").unwrap();
    std::fs::write(
        img.join("gocryptfs.info"),
        "disk_of_img=\"sda\"\nparts_of_img=\"sda1\"\n",
    )
    .unwrap();
    let (code, _, err) = fc_run(&["info", s(&img)]);
    assert_ne!(code, 0);
    assert!(
        err.contains("encrypted") && err.contains("gocryptfs"),
        "{err}"
    );
    let target = dir.path().join("t.img");
    let (code, _, err) = fc_run(&["restore", s(&img), s(&target)]);
    assert_ne!(code, 0);
    assert!(err.contains("encrypted"), "{err}");
    assert!(!target.exists());
    std::fs::remove_file(img.join("gocryptfs.info")).unwrap();
    std::fs::write(img.join("disk"), "sda sdb\n").unwrap();
    let (code, _, err) = fc_run(&["restore", s(&img), s(&target)]);
    assert_ne!(code, 0);
    assert!(err.contains("2 disks"), "{err}");
    assert!(!target.exists());
}

#[test]
fn restore_onto_a_larger_disk_moves_the_backup_gpt() {
    let src = disk("windows", 256);
    let cz = clonezilla("windows", 256, WINDOWS_OPTS);
    let dir = tempdir();
    let target = dir.path().join("big.img");
    pattern_file(
        &target,
        std::fs::metadata(&src).unwrap().len() + (96 << 20),
        0x5A,
    );
    let (code, _, err) = fc_run(&["restore", s(&cz), s(&target), "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("backup GPT"), "{err}");
    let v = sh(&format!("sgdisk -v '{}'", target.display()));
    assert!(v.contains("No problems found"), "{v}");
    assert_eq!(inspect(&src)["partitions"], inspect(&target)["partitions"]);
    check_partition(&target, 3, "ntfsfix -n");
}
