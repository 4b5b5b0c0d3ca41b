//! End to end through the wizard: the real binary runs in a tmux pane (100x30, TERM=linux) on
//! a private tmux server; the test types keys with send-keys and reads the screen with
//! capture-pane. It saves a file-backed Windows-style disk into a repository, restores the
//! image onto another file, then checks the result with `verify --against` and `inspect
//! --json`, as the core tests do.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{bin, fc_ok, fc_run, fixture, ok, tempdir};

/// A tmux server of our own (its socket in the test's directory) with one session.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// Starts `command` in a detached 100x30 session. The command's exit code is printed as
    /// `EXIT=N` after it ends, and the pane stays open to be read.
    fn start(dir: &Path, command: &str) -> Tmux {
        let socket = dir.join("tmux.sock");
        let t = Tmux { socket };
        let script = format!("{command}; echo EXIT=$?; sleep 600");
        ok(t.cmd()
            .args(["new-session", "-d", "-s", "fc", "-x", "100", "-y", "30"])
            .args(["sh", "-c", &script]));
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket).arg("-f").arg("/dev/null");
        c
    }

    /// Presses keys (tmux names: Enter, Down, Escape, C-u).
    fn keys(&self, keys: &[&str]) {
        ok(self.cmd().args(["send-keys", "-t", "fc"]).args(keys));
    }

    /// Types text literally.
    fn type_text(&self, text: &str) {
        ok(self.cmd().args(["send-keys", "-t", "fc", "-l", text]));
    }

    fn screen(&self) -> String {
        ok(self.cmd().args(["capture-pane", "-p", "-t", "fc"]))
    }

    /// Waits until the screen shows every one of `want`; fails, showing the screen, when it
    /// shows one of `fail` first or after `secs` seconds.
    fn wait_for(&self, want: &[&str], fail: &[&str], secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.screen();
            // "Please wait" is the wizard's busy box: keys are ignored until it is gone.
            if want.iter().all(|w| s.contains(w)) && !s.contains("Please wait") {
                return s;
            }
            if let Some(f) = fail.iter().find(|f| s.contains(*f)) {
                panic!("the screen shows {f:?} while waiting for {want:?}:\n{s}");
            }
            if Instant::now() > deadline {
                panic!("timed out after {secs} s waiting for {want:?}; the screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

const FAILED: &[&str] = &["failed.", "was stopped", "Cannot use it", "EXIT="];

fn partitions(disk: &Path) -> (serde_json::Value, serde_json::Value) {
    let j: serde_json::Value =
        serde_json::from_str(&fc_ok(&["inspect", disk.to_str().unwrap(), "--json"])).unwrap();
    (
        serde_json::json!([j["table"], j["disk_id"], j["size_bytes"]]),
        j["partitions"].clone(),
    )
}

#[test]
fn wizard_saves_then_restores_a_windows_disk() {
    let src_fixture = fixture("windows", 256);
    let dir = tempdir();
    // The wizard gets its own copy, so the names it shows are ours.
    let src = dir.path().join("source.img");
    std::fs::copy(&src_fixture, &src).unwrap();
    let target = dir.path().join("target.img");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let tmux = Tmux::start(
        dir.path(),
        &format!(
            "TERM=linux '{}' tui --disk '{}' --disk '{}' --repo '{}'",
            bin().display(),
            src.display(),
            target.display(),
            repo.display()
        ),
    );

    // Save: the first disk (source.img), the repository given, the name "win".
    tmux.wait_for(&["What do you want to do?", "Save a disk"], FAILED, 30);
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        &[
            "Choose the disk to save",
            "source.img",
            "GPT partition table",
        ],
        FAILED,
        60,
    );
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["Image repository", "Free space:"], FAILED, 30);
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["Image name", "Verify"], FAILED, 30);
    tmux.keys(&["C-u"]);
    tmux.type_text("win");
    tmux.wait_for(&["Image name   win_"], FAILED, 10);
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        &["Plan: this is what will happen", "Nothing on any disk"],
        FAILED,
        10,
    );
    tmux.keys(&["Enter"]);
    let s = tmux.wait_for(&["Saved ", "Verification passed"], FAILED, 300);
    assert!(s.contains("Log"), "{s}");
    assert!(repo.join("win/manifest.json").is_file());

    // Restore: the image "win" onto the second disk (target.img), confirmed by typing its name.
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["What do you want to do?"], FAILED, 10);
    tmux.keys(&["Down", "Enter"]);
    tmux.wait_for(&["Image repository", "1 complete"], FAILED, 30);
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        &["Choose the image to restore", "win", "complete"],
        FAILED,
        10,
    );
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        &["Choose the disk to write", "target.img", "source.img - "],
        FAILED,
        60,
    );
    tmux.keys(&["Down"]);
    tmux.wait_for(&["target.img - 256.0 MiB"], FAILED, 10);
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["Options", "Partitions", "[x]"], FAILED, 10);
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["WILL BE OVERWRITTEN"], FAILED, 60);
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["type target.img and press Enter"], FAILED, 10);
    // A wrong name first: refused, nothing written.
    tmux.type_text("source.img");
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["exactly to overwrite it"], FAILED, 10);
    tmux.type_text("target.img");
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["Restored ", "target.img"], FAILED, 300);
    tmux.keys(&["q"]);
    tmux.wait_for(&["EXIT=0"], &[], 30);

    // The result, checked as the core tests do.
    let v = fc_ok(&[
        "verify",
        repo.join("win").to_str().unwrap(),
        "--against",
        src.to_str().unwrap(),
    ]);
    assert!(v.contains("equal to the disk"), "{v}");
    let (src_disk, src_parts) = partitions(&src);
    let (tgt_disk, tgt_parts) = partitions(&target);
    assert_eq!(src_disk, tgt_disk);
    assert_eq!(src_parts, tgt_parts);
    assert_eq!(src_parts.as_array().map(Vec::len), Some(4), "{src_parts}");
    // Every stored byte is where it was: the image compared with the restored disk too.
    let v = fc_ok(&[
        "verify",
        repo.join("win").to_str().unwrap(),
        "--against",
        target.to_str().unwrap(),
    ]);
    assert!(v.contains("equal to the disk"), "{v}");
    // The log of both jobs is in the repository.
    let log = std::fs::read_to_string(repo.join("ferroclone.log")).unwrap();
    assert!(log.contains("result: ok: saved"), "{log}");
    assert!(log.contains("result: ok: restored"), "{log}");
}

#[test]
fn bare_command_opens_the_wizard_on_a_terminal_only() {
    // Not a terminal: a usage error that points to --help, and `tui` says it needs one.
    let (code, _, err) = fc_run(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--help"), "{err}");
    let (code, _, err) = fc_run(&["tui"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("terminal"), "{err}");
    // A terminal: the start menu; q leaves with 0 and the terminal restored.
    let dir = tempdir();
    let tmux = Tmux::start(dir.path(), &format!("'{}'", bin().display()));
    tmux.wait_for(&["What do you want to do?", "Up/Down move"], &["EXIT="], 30);
    tmux.keys(&["q"]);
    let s = tmux.wait_for(&["EXIT=0"], &[], 30);
    assert!(
        !s.contains("What do you want to do?"),
        "left the alternate screen:\n{s}"
    );
}
