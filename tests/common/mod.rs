//! Shared helpers for the integration tests: the binary, temporary directories, commands.
//! Tests run as root (CI installs every tool); they only touch files and loop devices they
//! create themselves.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// Path of the built `ferroclone` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ferroclone"))
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh temporary directory, removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ferroclone-test-")
        .tempdir_in(std::env::var("FERROCLONE_TEST_TMP").unwrap_or_else(|_| "/var/tmp".into()))
        .expect("temp dir")
}

/// Runs a command and returns its output; panics with the command line and stderr when it
/// cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

/// Runs a command that must succeed; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a shell snippet that must succeed; returns stdout.
pub fn sh(script: &str) -> String {
    ok(Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script))
}

/// `ferroclone ARGS…` as a command, quiet progress.
pub fn fc(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args);
    c
}

/// Runs ferroclone and returns (exit code, stdout, stderr).
pub fn fc_run(args: &[&str]) -> (i32, String, String) {
    let out = run(&mut fc(args));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs ferroclone, which must exit 0.
pub fn fc_ok(args: &[&str]) -> String {
    ok(&mut fc(args))
}

/// Makes a file of `size` bytes filled with byte `fill` (a non-zero pattern shows blocks a
/// restore missed).
pub fn pattern_file(path: &Path, size: u64, fill: u8) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("create pattern file");
    let chunk = vec![fill; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).expect("write pattern");
        left -= n as u64;
    }
}

/// SHA-256 of a whole file, as hex.
pub fn sha256_file(path: &Path) -> String {
    sh(&format!("sha256sum '{}' | cut -d' ' -f1", path.display()))
        .trim()
        .to_string()
}

/// A fixture disk built once per run of the suite (cached under target/ by the hash of the
/// scripts that make it). Tests only read fixtures.
pub fn fixture(kind: &str, size_mib: u32) -> PathBuf {
    static CACHE: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let key = format!("{kind}-{size_mib}");
    if let Some(p) = cache.get(&key) {
        return p.clone();
    }
    let r = root();
    let hash = sh(&format!(
        "cat '{0}/scripts/mkdisk.sh' '{0}/scripts/lib-loop.sh' | sha256sum | cut -c1-12",
        r.display()
    ));
    let dir = r.join("target/test-fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{key}-{}.img", hash.trim()));
    if !path.exists() {
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        sh(&format!(
            "'{}/scripts/mkdisk.sh' {kind} '{}' {size_mib}",
            r.display(),
            tmp.display()
        ));
        std::fs::rename(&tmp, &path).unwrap();
    }
    cache.insert(key, path.clone());
    path
}
