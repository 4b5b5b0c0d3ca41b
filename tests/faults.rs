//! Faults and bad input: a killed or interrupted save never leaves an image that calls itself
//! complete; a full repository is a clear error, not a hang; a tampered manifest is caught; two
//! jobs never write one target.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{bin, fc_ok, fc_run, root, sh, tempdir};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The small Windows-style fixture (built once per run, shared with the other test modules).
fn windows256() -> PathBuf {
    crate::common::fixture("windows", 256)
}

#[test]
fn a_tampered_manifest_is_caught_by_its_sha256() {
    let dir = tempdir();
    let img = dir.path().join("img");
    fc_ok(&["save", s(&windows256()), s(&img), "--no-verify"]);
    // Every recorded SHA-256 is the file's real one (sha256sum agrees).
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(img.join("manifest.json")).unwrap()).unwrap();
    for st in m["streams"].as_array().unwrap() {
        for v in st["volumes"].as_array().unwrap() {
            let f = img.join(v["file"].as_str().unwrap());
            let sum = sh(&format!("sha256sum '{}' | cut -d' ' -f1", f.display()));
            assert_eq!(sum.trim(), v["sha256"].as_str().unwrap());
        }
    }
    sh(&format!(
        "cd '{}' && sha256sum -c --quiet manifest.sha256",
        img.display()
    ));
    // A valid JSON edit (a different creation time) is still caught.
    sh(&format!(
        "sed -i 's/\"created\": \"[^\"]*\"/\"created\": \"2000-01-01T00:00:00Z\"/' '{}'",
        img.join("manifest.json").display()
    ));
    let (code, _, err) = fc_run(&["verify", s(&img)]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("manifest was altered"), "{err}");
}

#[test]
fn kill_9_at_twenty_points_never_leaves_an_image_that_claims_to_be_complete() {
    let dir = tempdir();
    // A private copy: a save killed while it measures a filesystem's minimum size (through a
    // read-only loop device) cannot detach that device; the guard detaches every loop device
    // backed by this copy, i.e. exactly those our killed processes made.
    let src = dir.path().join("src.img");
    sh(&format!(
        "cp --sparse=always '{}' '{}'",
        windows256().display(),
        src.display()
    ));
    let _loops = LoopsOf(src.clone());
    // How long a whole save takes here, to spread the kills over it.
    let t0 = Instant::now();
    fc_ok(&[
        "save",
        s(&src),
        s(&dir.path().join("probe")),
        "--split",
        "4M",
        "--no-verify",
    ]);
    let full = t0.elapsed();
    let mut complete = 0;
    for i in 0..20u32 {
        let img = dir.path().join(format!("img{i}"));
        let mut child = Command::new(bin())
            .args(["save", s(&src), s(&img), "--split", "4M", "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full * i / 20);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let partial = dir.path().join(format!("img{i}.partial"));
        if img.exists() {
            // Complete: it must verify.
            let (code, _, err) = fc_run(&["verify", s(&img)]);
            assert_eq!(
                code, 0,
                "kill {i}: an image that exists does not verify: {err}"
            );
            complete += 1;
        } else {
            // Incomplete: never restorable, reported as such, removable.
            let (code, out, err) = fc_run(&["info", s(&img), "--json"]);
            assert_ne!(code, 0);
            assert!(out.contains("\"complete\":false"), "{out}");
            if partial.exists() {
                assert!(err.contains("did not finish"), "kill {i}: {err}");
                let (code, _, err) =
                    fc_run(&["restore", s(&partial), s(&dir.path().join("t.img"))]);
                assert_ne!(code, 0);
                assert!(err.contains("incomplete"), "{err}");
                std::fs::remove_dir_all(&partial).unwrap();
            }
        }
    }
    eprintln!("{complete} of 20 killed saves had completed");
}

/// Detaches, on drop, the loop devices backed by one file this test owns.
struct LoopsOf(PathBuf);

impl Drop for LoopsOf {
    fn drop(&mut self) {
        let list = Command::new("losetup")
            .arg("-j")
            .arg(&self.0)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for dev in list.lines().filter_map(|l| l.split(':').next()) {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
    }
}

#[test]
fn sigint_stops_a_save_cleanly_with_exit_130() {
    let src = windows256();
    let dir = tempdir();
    let img = dir.path().join("img");
    // Throttle by saving raw from a slow pipe? A raw save of 256 MiB takes long enough here;
    // send SIGINT as soon as the partial directory appears.
    let child = Command::new(bin())
        .args([
            "save",
            s(&src),
            s(&img),
            "--raw",
            "--split",
            "8M",
            "--threads",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let partial = dir.path().join("img.partial");
    let t0 = Instant::now();
    while !partial.join("p1.000").exists() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    sh(&format!("kill -INT {}", child.id()));
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(0) {
        // Finished before the signal landed: then it must be a good image.
        fc_ok(&["verify", s(&img)]);
        return;
    }
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(
        !img.exists() && !partial.exists(),
        "the partial image was left behind"
    );
}

/// A small filesystem mounted on a loop device this test made; unmounted and detached on drop.
struct SmallRepo {
    mnt: PathBuf,
    dev: String,
}

impl SmallRepo {
    fn new(dir: &Path, mib: u32) -> SmallRepo {
        let file = dir.join("repo.img");
        sh(&format!(
            "truncate -s {mib}M '{0}' && mkfs.ext4 -q -m 0 '{0}'",
            file.display()
        ));
        let dev = sh(&format!("losetup -f --show '{}'", file.display()))
            .trim()
            .to_string();
        let mnt = dir.join("repo");
        std::fs::create_dir(&mnt).unwrap();
        sh(&format!("mount {dev} '{}'", mnt.display()));
        SmallRepo { mnt, dev }
    }
}

impl Drop for SmallRepo {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

#[test]
fn a_full_repository_is_a_clear_error_within_seconds_and_leaves_nothing() {
    let src = windows256();
    let dir = tempdir();
    let repo = SmallRepo::new(dir.path(), 24);
    let img = repo.mnt.join("img");
    let t0 = Instant::now();
    let (code, _, err) = fc_run(&["save", s(&src), s(&img), "--raw"]);
    let took = t0.elapsed();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("repository full") && err.contains("free"),
        "{err}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(
        !img.exists() && !repo.mnt.join("img.partial").exists(),
        "partial image left"
    );
}

#[test]
fn a_second_job_on_the_same_target_is_refused() {
    let src = windows256();
    let dir = tempdir();
    let img = dir.path().join("img");
    fc_ok(&["save", s(&src), s(&img), "--no-verify"]);
    let target = dir.path().join("t.img");
    fc_ok(&["restore", s(&img), s(&target)]);
    // Another job holds the target (flock, as a running restore does).
    let mut holder = Command::new("flock")
        .args(["-x", s(&target), "sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = crate::common::sha256_file(&target);
    let (code, _, err) = fc_run(&["restore", s(&img), s(&target), "--yes"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("another job"), "{err}");
    assert_eq!(before, crate::common::sha256_file(&target));
}

/// A disk served by tests/tools/faulty_disk.py (FUSE): reads or writes touching the given
/// ranges fail with EIO. Unmounted on drop.
struct FaultyDisk {
    mnt: PathBuf,
    child: std::process::Child,
}

impl FaultyDisk {
    fn new(
        dir: &Path,
        backing: &Path,
        bad_reads: &[(u64, u64)],
        bad_writes: &[(u64, u64)],
    ) -> FaultyDisk {
        let mnt = dir.join("faulty");
        std::fs::create_dir_all(&mnt).unwrap();
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(root().join("tests/tools/faulty_disk.py"))
            .arg(backing)
            .arg(&mnt);
        for (s, l) in bad_reads {
            cmd.arg("--bad-read").arg(format!("{s}:{l}"));
        }
        for (s, l) in bad_writes {
            cmd.arg("--bad-write").arg(format!("{s}:{l}"));
        }
        let child = cmd
            .stdout(Stdio::null())
            .spawn()
            .expect("start faulty_disk.py");
        let t0 = Instant::now();
        while !mnt.join("disk.img").exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "faulty disk did not appear"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        FaultyDisk { mnt, child }
    }

    fn disk(&self) -> PathBuf {
        self.mnt.join("disk.img")
    }
}

impl Drop for FaultyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The used extents of stream `name` of an image, as disk byte ranges (reads the .map file).
fn used_extents(img: &Path, name: &str, base: u64) -> Vec<(u64, u64)> {
    let b = std::fs::read(img.join(format!("{name}.map"))).unwrap();
    let n = u64::from_le_bytes(b[8..16].try_into().unwrap()) as usize;
    (0..n)
        .map(|i| {
            let at = 24 + i * 16;
            let s = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
            let l = u64::from_le_bytes(b[at + 8..at + 16].try_into().unwrap());
            (base + s, l)
        })
        .collect()
}

#[test]
fn unreadable_sectors_stop_a_save_or_are_rescued_and_recorded() {
    let src = windows256();
    let dir = tempdir();
    let good = dir.path().join("good");
    fc_ok(&["save", s(&src), s(&good), "--no-verify"]);
    let info: serde_json::Value =
        serde_json::from_str(&fc_ok(&["info", s(&good), "--json"])).unwrap();
    let p3 = info["source"]["partitions"].as_array().unwrap()[2]["start_bytes"]
        .as_u64()
        .unwrap();
    // Two bad places inside data the save must read: 8 KiB in one C: extent, one sector in another.
    let ext: Vec<(u64, u64)> = used_extents(&good, "p3", p3)
        .into_iter()
        .filter(|e| e.1 >= 64 << 10)
        .collect();
    assert!(ext.len() >= 4, "{ext:?}");
    let bad = [
        (ext[1].0 + 8192, 8192),
        (ext[ext.len() / 2].0 + 4096 + 512, 512),
    ];
    let fd = FaultyDisk::new(dir.path(), &src, &bad, &[]);
    let disk = fd.disk();

    // Without --rescue: stop, name the device and the byte offset, leave nothing.
    let img = dir.path().join("img");
    let (code, _, err) = fc_run(&["save", s(&disk), s(&img)]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(s(&disk)) && err.contains("at byte 0x"),
        "{err}"
    );
    assert!(err.contains("--rescue"), "{err}");
    assert!(!img.exists() && !dir.path().join("img.partial").exists());

    // With --rescue: finish, exit 4, record exactly the unreadable sectors.
    let (code, out, err) = fc_run(&["save", s(&disk), s(&img), "--rescue"]);
    assert_eq!(code, 4, "{out}{err}");
    let j: serde_json::Value = serde_json::from_str(&fc_ok(&["info", s(&img), "--json"])).unwrap();
    let got: Vec<(u64, u64)> = j["bad_ranges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["offset"].as_u64().unwrap(), b["length"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, bad.to_vec());
    assert!(fc_ok(&["info", s(&img)]).contains("unreadable at save"));
    let v = fc_ok(&["verify", s(&img)]);
    assert!(v.contains("were unreadable at save"), "{v}");
    drop(fd);

    // Restored: zeros exactly there, everything else as the good image restores it.
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    fc_ok(&["restore", s(&good), s(&a)]);
    fc_ok(&["restore", s(&img), s(&b)]);
    let diff = sh(&format!(
        "cmp -l '{}' '{}' | awk '{{print $1 - 1, $3}}' || true",
        a.display(),
        b.display()
    ));
    for line in diff.lines() {
        let mut f = line.split_whitespace();
        let off: u64 = f.next().unwrap().parse().unwrap();
        let byte = f.next().unwrap();
        assert!(
            bad.iter().any(|&(s, l)| off >= s && off < s + l),
            "difference outside the bad ranges at {off}"
        );
        assert_eq!(byte, "0", "a rescued byte is not zero at {off}");
    }
}

#[test]
fn a_write_error_on_the_target_stops_the_restore_and_names_the_offset() {
    let src = windows256();
    let dir = tempdir();
    let img = dir.path().join("img");
    fc_ok(&["save", s(&src), s(&img), "--no-verify"]);
    let backing = dir.path().join("target.img");
    crate::common::pattern_file(&backing, std::fs::metadata(&src).unwrap().len(), 0x11);
    let info: serde_json::Value =
        serde_json::from_str(&fc_ok(&["info", s(&img), "--json"])).unwrap();
    let p3 = info["source"]["partitions"].as_array().unwrap()[2]["start_bytes"]
        .as_u64()
        .unwrap();
    let ext = used_extents(&img, "p3", p3);
    let big = ext
        .iter()
        .find(|e| e.1 >= 64 << 10)
        .expect("a 64 KiB extent in C:");
    let bad_at = big.0 + 8192;
    let fd = FaultyDisk::new(dir.path(), &backing, &[], &[(bad_at, 4096)]);
    let (code, _, err) = fc_run(&["restore", s(&img), s(&fd.disk()), "--yes"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("writing") && err.contains("at byte 0x") && err.contains("inconsistent"),
        "{err}"
    );
}

#[test]
fn partitions_beyond_the_disk_or_overlapping_are_refused_with_their_number() {
    let dir = tempdir();
    // A partition that ends past the end of the disk (the file was cut short).
    let d = dir.path().join("cut.img");
    sh(&format!(
        "truncate -s 64M '{0}' && printf 'label: dos\\nstart=2048, size=100000, type=83\\n' | sfdisk -q '{0}' && truncate -s 32M '{0}'",
        d.display()
    ));
    for cmd in [
        vec!["inspect", s(&d)],
        vec!["save", s(&d), s(&dir.path().join("i1"))],
    ] {
        let (code, _, err) = fc_run(&cmd);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("partition 1") && err.contains("beyond the end of the disk"),
            "{err}"
        );
    }
    // Two MBR entries that overlap (written by hand: sfdisk refuses to make them).
    let o = dir.path().join("overlap.img");
    sh(&format!(
        "truncate -s 64M '{0}' && printf 'label: dos\\nstart=2048, size=40000, type=83\\nstart=50000, size=40000, type=83\\n' | sfdisk -q '{0}' \
         && printf '\\x20\\x4e\\x00\\x00' | dd of='{0}' bs=1 seek=$((446 + 16 + 8)) conv=notrunc status=none",
        o.display()
    ));
    let (code, _, err) = fc_run(&["save", s(&o), s(&dir.path().join("i2"))]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("partition 2") && err.contains("overlaps partition 1"),
        "{err}"
    );
    assert!(!dir.path().join("i2").exists() && !dir.path().join("i2.partial").exists());
}

#[test]
fn a_foreign_manifest_is_refused_before_writing() {
    let dir = tempdir();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    fc_ok(&["save", s(&windows256()), s(&a), "--no-verify"]);
    let other = dir.path().join("other.img");
    sh(&format!(
        "truncate -s 64M '{0}' && mkfs.ext4 -q '{0}'",
        other.display()
    ));
    fc_ok(&["save", s(&other), s(&b), "--no-verify"]);
    for f in ["manifest.json", "manifest.sha256"] {
        std::fs::copy(a.join(f), b.join(f)).unwrap();
    }
    let target = dir.path().join("t.img");
    crate::common::pattern_file(&target, 256 << 20, 0x42);
    let before = crate::common::sha256_file(&target);
    let (code, _, err) = fc_run(&["restore", s(&b), s(&target), "--yes"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("missing") || err.contains("manifest says"),
        "{err}"
    );
    assert_eq!(before, crate::common::sha256_file(&target));
    let (code, _, _) = fc_run(&["verify", s(&b)]);
    assert_eq!(code, 3);
}
