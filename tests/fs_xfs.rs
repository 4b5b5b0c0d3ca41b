//! Integration tests: fs_xfs. Real XFS filesystems made by mkfs.xfs in regular files, filled
//! through a loop mount, saved, restored onto a 0xA5-filled target, then checked by
//! `xfs_repair -n`, file hashes, and the absence of stale data; the used count is compared
//! with partclone.xfs.
//!
//! `kit` is shared with fs_btrfs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{fc_ok, fc_run, pattern_file, sh, tempdir};

pub(crate) mod kit {
    use super::*;
    use std::io::Write;

    /// Checks every tool is installed; a missing one fails the test (CI installs them all).
    pub(crate) fn have(tools: &[&str]) -> bool {
        for t in tools {
            let ok = Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            assert!(ok, "{t} is needed by this test; run scripts/setup.sh");
        }
        true
    }

    /// A loop mount, unmounted (and its loop device released) on drop.
    pub(crate) struct Mounted {
        dir: PathBuf,
        mounted: bool,
    }

    impl Mounted {
        pub(crate) fn new(image: &Path, dir: &Path, opts: &str) -> Mounted {
            std::fs::create_dir_all(dir).unwrap();
            sh(&format!(
                "mount -o loop,{opts} '{}' '{}'",
                image.display(),
                dir.display()
            ));
            Mounted {
                dir: dir.to_path_buf(),
                mounted: true,
            }
        }

        pub(crate) fn path(&self) -> &Path {
            &self.dir
        }

        /// Unmounts now, checking that it worked.
        pub(crate) fn unmount(mut self) {
            sh(&format!("umount '{}'", self.dir.display()));
            self.mounted = false;
        }
    }

    impl Drop for Mounted {
        fn drop(&mut self) {
            if self.mounted {
                let _ = Command::new("umount").arg(&self.dir).status();
            }
        }
    }

    /// Seeded xorshift64*: reproducible "random" file contents.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        pub(crate) fn fill(&mut self, buf: &mut [u8]) {
            for c in buf.chunks_mut(8) {
                let v = self.next().to_le_bytes();
                c.copy_from_slice(&v[..c.len()]);
            }
        }

        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    const WORDS: [&str; 16] = [
        "block",
        "extent",
        "inode",
        "journal",
        "sector",
        "cluster",
        "bitmap",
        "allocation",
        "group",
        "superblock",
        "restore",
        "image",
        "partition",
        "checksum",
        "tree",
        "node",
    ];

    fn write_random(path: &Path, rng: &mut Rng, len: usize) -> u64 {
        let mut f = std::fs::File::create(path).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len());
            rng.fill(&mut buf[..n]);
            f.write_all(&buf[..n]).unwrap();
            left -= n;
        }
        len as u64
    }

    /// A realistic mix under `root`: text files, seeded-random binaries, `small` small files in
    /// 20 directories, `big` random files of `big_len` bytes, a sparse file, an empty file and
    /// a symlink. Returns the bytes of file data written.
    pub(crate) fn populate(
        root: &Path,
        seed: u64,
        small: usize,
        big: usize,
        big_len: usize,
    ) -> u64 {
        let mut rng = Rng(seed | 1);
        let mut total = 0u64;
        let texts = root.join("texts");
        std::fs::create_dir_all(&texts).unwrap();
        for i in 0..40 {
            let mut s = String::new();
            let lines = 20 + rng.below(800);
            for l in 0..lines {
                s.push_str(&format!("{l:5}:"));
                for _ in 0..(3 + rng.below(12)) {
                    s.push(' ');
                    s.push_str(WORDS[rng.below(16) as usize]);
                }
                s.push('\n');
            }
            total += s.len() as u64;
            std::fs::write(texts.join(format!("notes-{i:02}.txt")), s).unwrap();
        }
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for i in 0..20 {
            let len = 4096 + rng.below(512 << 10) as usize;
            total += write_random(&bin.join(format!("prog-{i:02}")), &mut rng, len);
        }
        for i in 0..small {
            let d = root.join(format!("small/d{:02}", i % 20));
            std::fs::create_dir_all(&d).unwrap();
            let mut buf = vec![0u8; rng.below(6000) as usize];
            rng.fill(&mut buf);
            total += buf.len() as u64;
            std::fs::write(d.join(format!("f{i:05}")), buf).unwrap();
        }
        for i in 0..big {
            total += write_random(&root.join(format!("big-{i}.bin")), &mut rng, big_len);
        }
        // Sparse: 64 KiB of data at each end of an 8 MiB file.
        let sparse = root.join("sparse.img");
        let f = std::fs::File::create(&sparse).unwrap();
        f.set_len(8 << 20).unwrap();
        let mut head = vec![0u8; 65536];
        rng.fill(&mut head);
        use std::os::unix::fs::FileExt;
        f.write_all_at(&head, 0).unwrap();
        f.write_all_at(&head, (8 << 20) - 65536).unwrap();
        total += 2 * 65536;
        std::fs::write(root.join("empty"), b"").unwrap();
        std::os::unix::fs::symlink("texts/notes-00.txt", root.join("link")).unwrap();
        total
    }

    /// The marker at the start of every 4 KiB block of stale data.
    pub(crate) const STALE: &[u8; 8] = b"FCSTALE!";

    /// Writes `len` bytes of marked random data, syncs it to disk, and deletes it: the blocks
    /// stay on disk, free.
    pub(crate) fn write_stale(root: &Path, len: usize, seed: u64) {
        // Earlier files first, so that their delayed allocation cannot land in the freed space.
        sh(&format!("sync -f '{}'", root.display()));
        let path = root.join("stale.bin");
        let mut rng = Rng(seed | 1);
        let mut f = std::fs::File::create(&path).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..len / buf.len() {
            rng.fill(&mut buf);
            for b in buf.chunks_mut(4096) {
                b[..8].copy_from_slice(STALE);
            }
            f.write_all(&buf).unwrap();
        }
        f.sync_all().unwrap();
        drop(f);
        std::fs::remove_file(&path).unwrap();
        sh(&format!("sync -f '{}'", root.display()));
    }

    /// How many 512-byte-aligned places of a file start with the stale marker.
    pub(crate) fn count_stale(path: &Path) -> u64 {
        use std::io::Read;
        let mut f = std::fs::File::open(path).unwrap();
        let mut buf = vec![0u8; 4 << 20];
        let mut n = 0;
        loop {
            let mut got = 0;
            while got < buf.len() {
                let r = f.read(&mut buf[got..]).unwrap();
                if r == 0 {
                    break;
                }
                got += r;
            }
            n += buf[..got]
                .chunks(512)
                .filter(|c| c.starts_with(STALE))
                .count() as u64;
            if got < buf.len() {
                return n;
            }
        }
    }

    /// "sha256  ./path" for every regular file, sorted, plus the symlink targets.
    pub(crate) fn tree_hashes(root: &Path) -> String {
        let files = sh(&format!(
            "cd '{}' && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum",
            root.display()
        ));
        let links = sh(&format!(
            "cd '{}' && find . -type l -printf '%p -> %l\\n' | LC_ALL=C sort",
            root.display()
        ));
        format!("{files}{links}")
    }

    /// `inspect --json` of a raw filesystem file: (fs, used_bytes).
    pub(crate) fn inspect(path: &Path) -> (String, u64) {
        let out = fc_ok(&["inspect", path.to_str().unwrap(), "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let p = &v["partitions"][0];
        (
            p["fs"].as_str().unwrap().to_string(),
            p["used_bytes"].as_u64().unwrap(),
        )
    }

    /// Saves `src` into `work/img`, restores it onto `work/target` (same size, pre-filled with
    /// 0xA5) and returns the target and the image's stored bytes.
    pub(crate) fn save_and_restore(src: &Path, work: &Path) -> (PathBuf, u64) {
        let img = work.join("img");
        let target = work.join("target.img");
        fc_ok(&["-q", "save", src.to_str().unwrap(), img.to_str().unwrap()]);
        let info = fc_ok(&["info", img.to_str().unwrap(), "--json"]);
        let v: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(v["partitions"][0]["mode"], "used", "{info}");
        let stored = v["partitions"][0]["stored_bytes"].as_u64().unwrap();
        pattern_file(&target, std::fs::metadata(src).unwrap().len(), 0xA5);
        fc_ok(&[
            "-q",
            "restore",
            "--yes",
            img.to_str().unwrap(),
            target.to_str().unwrap(),
        ]);
        (target, stored)
    }

    /// Runs partclone with a log file and returns the log text (None when it is missing).
    pub(crate) fn partclone_log(tool: &str, args: &[&str], work: &Path) -> Option<String> {
        if !have(&[tool]) {
            return None;
        }
        let log = work.join(format!("{tool}.log"));
        let out = Command::new(tool)
            .args(args)
            .arg("-L")
            .arg(&log)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(String::from_utf8_lossy(&std::fs::read(&log).unwrap()).replace('\r', "\n"))
    }

    /// The number after `key` in a partclone log line.
    pub(crate) fn number_after(log: &str, key: &str) -> Option<u64> {
        let at = log.find(key)? + key.len();
        let digits: String = log[at..]
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    }
}

use kit::*;

const MIB: u64 = 1 << 20;

fn xfs_db(img: &Path, cmds: &[&str]) -> String {
    let mut c = Command::new("xfs_db");
    c.arg("-r");
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    crate::common::ok(c.arg(img))
}

fn xfs_field(out: &str, name: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} = ")))
        .unwrap_or_else(|| panic!("{name} not in {out}"))
        .trim()
        .parse()
        .unwrap()
}

/// partclone.xfs: (blocks in its bitmap, blocks in its header = dblocks − fdblocks).
fn partclone_xfs(img: &Path, work: &Path) -> Option<(u64, u64)> {
    let log = partclone_log(
        "partclone.xfs",
        &["-c", "-s", img.to_str().unwrap(), "-O", "/dev/null"],
        work,
    )?;
    let bitmap = number_after(&log, "bused =")?;
    let header = log
        .lines()
        .find(|l| l.contains("Space in use:"))
        .and_then(|l| number_after(l, "="))?;
    Some((bitmap, header))
}

/// `dblocks − fdblocks` (what partclone's header shows) and Σ agf_btreeblks: our count must be
/// their sum, because fdblocks counts the free-space btrees' own blocks as free.
fn xfs_counters(img: &Path) -> (u64, u64) {
    let sb = xfs_db(img, &["sb 0", "p dblocks fdblocks agcount"]);
    let header = xfs_field(&sb, "dblocks") - xfs_field(&sb, "fdblocks");
    let mut btreeblks = 0;
    for ag in 0..xfs_field(&sb, "agcount") {
        let agf = xfs_db(img, &[&format!("agf {ag}"), "p btreeblks"]);
        btreeblks += xfs_field(&agf, "btreeblks");
    }
    (header, btreeblks)
}

/// Save, restore onto 0xA5, `xfs_repair -n`, same file hashes, no stale data restored.
fn check_roundtrip(src: &Path, work: &Path, hashes: &str, used: u64) {
    let stale_src = count_stale(src);
    let (target, stored) = save_and_restore(src, work);
    assert_eq!(stored, used, "the image stores exactly the map");
    let out = Command::new("xfs_repair")
        .arg("-n")
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xfs_repair -n on the restored copy:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Mounted::new(&target, &work.join("mnt-target"), "ro,nouuid");
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
fn xfs_mixed_content_roundtrip() {
    if !have(&["mkfs.xfs", "xfs_repair", "xfs_db", "mount"]) {
        return;
    }
    let t = tempdir();
    let src = t.path().join("xfs.img");
    std::fs::File::create(&src)
        .unwrap()
        .set_len(600 * MIB)
        .unwrap();
    sh(&format!(
        "mkfs.xfs -q -m uuid=6a0c1c3e-5f0e-4f43-9a53-0d6f8a3b7c01 -L fc-xfs '{}'",
        src.display()
    ));
    let m = Mounted::new(&src, &t.path().join("mnt"), "rw");
    populate(m.path(), 0x5EED_0001, 2000, 2, 16 << 20);
    write_stale(m.path(), 96 << 20, 0xDEAD);
    let hashes = tree_hashes(m.path());
    m.unmount();

    let (fs, used) = inspect(&src);
    assert_eq!(fs, "xfs");
    assert_eq!(used % 4096, 0);
    let blocks = used / 4096;
    let (header, btreeblks) = xfs_counters(&src);
    eprintln!(
        "xfs 600 MiB: ours {blocks} blocks of 4 KiB; dblocks - fdblocks = {header}, btreeblks {btreeblks}"
    );
    assert_eq!(blocks, header + btreeblks);
    if let Some((bitmap, pc_header)) = partclone_xfs(&src, t.path()) {
        eprintln!("partclone.xfs: bitmap {bitmap} blocks, header {pc_header} blocks");
        assert_eq!(blocks, bitmap, "partclone.xfs's bitmap and ours differ");
        assert_eq!(pc_header, header);
    }
    // The stale 96 MiB is not in the map: the live data, the 64 MiB log and metadata are.
    assert!(used < 200 * MIB, "{used}");
    check_roundtrip(&src, t.path(), &hashes, used);
}

#[test]
fn xfs_fragmented_three_level_bnobt() {
    if !have(&["mkfs.xfs", "xfs_repair", "xfs_db", "xfs_io", "mount"]) {
        return;
    }
    let t = tempdir();
    let src = t.path().join("frag.img");
    std::fs::File::create(&src)
        .unwrap()
        .set_len(300 * MIB)
        .unwrap();
    // 1 KiB blocks: leaves hold 121 free extents, nodes 80 pointers; 2 AGs.
    sh(&format!(
        "mkfs.xfs -q -b size=1024 -d agcount=2 -m uuid=6a0c1c3e-5f0e-4f43-9a53-0d6f8a3b7c02 -L fc-frag '{}'",
        src.display()
    ));
    let m = Mounted::new(&src, &t.path().join("mnt"), "rw");
    populate(m.path(), 0x5EED_0002, 2000, 0, 0);
    // Every other small file deleted, then a 40 MiB file with every other 1 KiB block
    // punched out: ~20 000 one-block free extents in one AG.
    sh(&format!(
        "cd '{}' && find small -name 'f*[13579]' -delete",
        m.path().display()
    ));
    let holes = m.path().join("holes.bin");
    {
        let mut rng = Rng(7);
        let mut buf = vec![0u8; 40 << 20];
        rng.fill(&mut buf);
        std::fs::write(&holes, &buf).unwrap();
    }
    sh(&format!("sync -f '{}'", m.path().display()));
    let mut punch = String::new();
    for i in (0..40 * 1024).step_by(2) {
        punch.push_str(&format!("fpunch {} 1024\n", i * 1024));
    }
    let script = t.path().join("punch.cmds");
    std::fs::write(&script, punch).unwrap();
    sh(&format!(
        "xfs_io '{}' < '{}' && sync -f '{}'",
        holes.display(),
        script.display(),
        m.path().display()
    ));
    write_stale(m.path(), 24 << 20, 0xBEEF);
    let hashes = tree_hashes(m.path());
    m.unmount();

    let mut max_level = 0;
    for ag in 0..2 {
        let agf = xfs_db(&src, &[&format!("agf {ag}"), "p bnolevel"]);
        max_level = max_level.max(xfs_field(&agf, "bnolevel"));
    }
    let (fs, used) = inspect(&src);
    assert_eq!(fs, "xfs");
    let blocks = used / 1024;
    let (header, btreeblks) = xfs_counters(&src);
    eprintln!(
        "fragmented xfs: bnobt {max_level} levels; ours {blocks} blocks of 1 KiB; \
         dblocks - fdblocks = {header}, btreeblks {btreeblks}"
    );
    assert!(max_level >= 3, "bnobt only {max_level} levels");
    assert_eq!(
        blocks,
        header + btreeblks,
        "ours vs dblocks - fdblocks + btreeblks"
    );
    if let Some((bitmap, pc_header)) = partclone_xfs(&src, t.path()) {
        eprintln!("partclone.xfs: bitmap {bitmap} blocks, header {pc_header} blocks");
        assert_eq!(blocks, bitmap, "partclone.xfs's bitmap and ours differ");
        assert_eq!(pc_header, header);
    }
    check_roundtrip(&src, t.path(), &hashes, used);
}

#[test]
fn xfs_dirty_log_is_refused() {
    if !have(&["mkfs.xfs", "xfs_io", "mount"]) {
        return;
    }
    let t = tempdir();
    let src = t.path().join("dirty.img");
    std::fs::File::create(&src)
        .unwrap()
        .set_len(300 * MIB)
        .unwrap();
    sh(&format!("mkfs.xfs -q -L fc-dirty '{}'", src.display()));
    let m = Mounted::new(&src, &t.path().join("mnt"), "rw");
    populate(m.path(), 3, 100, 0, 0);
    // Force the log to disk, then shut down without writing back: the log now holds changes
    // the on-disk trees do not.
    sh(&format!(
        "xfs_io -x -c 'shutdown -f' '{}'",
        m.path().display()
    ));
    m.unmount();
    let img = t.path().join("img");
    let (code, _out, err) = fc_run(&["-q", "save", src.to_str().unwrap(), img.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("not unmounted cleanly"), "{err}");
    // The kernel replays it at mount; afterwards the filesystem is accepted.
    Mounted::new(&src, &t.path().join("mnt"), "rw").unmount();
    let (fs, used) = inspect(&src);
    assert_eq!((fs.as_str(), used < 300 * MIB), ("xfs", true));
}
