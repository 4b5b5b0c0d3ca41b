//! End-to-end tests of the rescue environment (DESIGN §9 tier 4): the unattended mode on the
//! host (`ferroclone boot` with a command line in a file), the ISO's layout, and the ISO booted
//! in qemu (scripts/qemu-e2e.sh: save by BIOS from a CD, restore by UEFI from a USB stick,
//! the start screen on the serial console, a failing job's result line; source and restored
//! disk compared on the host).
//!
//! The ISO is built once per run by scripts/build-iso.sh (the kernel .deb is cached under
//! target/iso-cache).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::common::{bin, fc, ok, root, run, sh, tempdir};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `ferroclone boot` with a command line (and extra keys) from files.
fn boot(cmdline: &str, extra: Option<&str>) -> (i32, String, String) {
    let dir = tempdir();
    let c = dir.path().join("cmdline");
    std::fs::write(&c, cmdline).unwrap();
    let e = dir.path().join("fw_cfg");
    if let Some(x) = extra {
        std::fs::write(&e, x).unwrap();
    }
    let out = run(&mut fc(&["boot", "--cmdline", s(&c), "--extra", s(&e)]));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn boot_mode_runs_the_job_and_prints_one_result_line() {
    assert!(
        !Path::new(ferroclone::boot::RELEASE_FILE).exists(),
        "this test must not run inside the rescue environment"
    );
    let dir = tempdir();
    let src = dir.path().join("bare ext4.img");
    sh(&format!(
        "truncate -s 32M '{0}' && mkfs.ext4 -q -F -L BARE '{0}'",
        src.display()
    ));
    let img = dir.path().join("my image");
    // Quotes inside the value (single quotes: the kernel strips double ones), the job from
    // the extra (fw_cfg) file overriding the command line's, and after=poweroff, which must
    // not happen outside the rescue environment.
    let (code, out, err) = boot(
        "BOOT_IMAGE=/boot/vmlinuz console=ttyS0 ferroclone.run=\"info /nowhere\" quiet",
        Some(&format!(
            "ferroclone.run=\"--quiet save '{}' '{}'\" ferroclone.after=poweroff\n",
            src.display(),
            img.display()
        )),
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let results: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("FERROCLONE-RESULT:"))
        .collect();
    assert_eq!(results, ["FERROCLONE-RESULT: ok"], "stdout: {out}");
    assert!(
        err.contains("not doing ferroclone.after=poweroff"),
        "stderr: {err}"
    );
    ok(fc(&["verify", s(&img), "--against", s(&src)]).arg("--quiet"));

    // A job that fails: one failed line with the reason, the job's exit code.
    let (code, out, _) = boot(
        &format!(
            "ferroclone.run=\"restore '{}' '{}'\"",
            dir.path().join("missing").display(),
            dir.path().join("t.img").display()
        ),
        None,
    );
    assert_ne!(code, 0, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("FERROCLONE-RESULT: "))
        .unwrap_or_else(|| panic!("no result line in {out:?}"));
    assert!(line.starts_with("FERROCLONE-RESULT: failed: "), "{line}");
    assert!(line.contains("missing"), "{line}");
    assert!(!dir.path().join("t.img").exists());

    // Bad keys: failed with the key named, exit code 2 (usage), nothing run.
    let (code, out, _) = boot(
        "ferroclone.run=\"save a b\" ferroclone.after=sometime",
        None,
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("FERROCLONE-RESULT: failed: ferroclone.after="),
        "{out}"
    );
    let (code, out, _) = boot("ferroclone.run=\"tui\"", None);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("failed: ferroclone.run cannot start"), "{out}");

    // No job: nothing happens, no result line.
    let (code, out, err) = boot("BOOT_IMAGE=/boot/vmlinuz quiet", None);
    assert_eq!(code, 0);
    assert!(!out.contains("FERROCLONE-RESULT"), "{out}");
    assert!(err.contains("nothing to do"), "{err}");
}

#[test]
fn boot_env_prints_fixed_words_for_init() {
    let dir = tempdir();
    let c = dir.path().join("cmdline");
    std::fs::write(
        &c,
        "ferroclone.run=\"save /dev/vda '/repo/$(reboot)'\" ferroclone.after=reboot ferroclone.net=dhcp ferroclone.settle=3 ferroclone.repo=LABEL=R",
    )
    .unwrap();
    let out = ok(&mut fc(&[
        "boot",
        "--env",
        "--cmdline",
        s(&c),
        "--extra",
        "/nonexistent",
    ]));
    assert_eq!(
        out,
        "FERROCLONE_RUN=1\nFERROCLONE_AFTER=reboot\nFERROCLONE_SETTLE=3\nFERROCLONE_NET=dhcp\nFERROCLONE_REPO=1\n"
    );
}

/// The ISO, built once per run (dist/ferroclone.iso).
fn iso() -> PathBuf {
    static ISO: OnceLock<PathBuf> = OnceLock::new();
    ISO.get_or_init(|| {
        let iso = root().join("dist/ferroclone.iso");
        let out = run(Command::new(root().join("scripts/build-iso.sh")).arg(&iso));
        assert!(
            out.status.success(),
            "scripts/build-iso.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        iso
    })
    .clone()
}

#[test]
fn iso_is_hybrid_small_and_holds_static_binaries() {
    let iso = iso();
    let size = std::fs::metadata(&iso).unwrap().len();
    assert!(size <= 64 << 20, "ISO is {size} bytes, over 64 MiB");
    // El Torito: a BIOS entry (ISOLINUX) and a UEFI one (the appended ESP).
    let el = sh(&format!(
        "xorriso -indev '{}' -report_el_torito plain 2>/dev/null",
        iso.display()
    ));
    assert!(el.contains("El Torito boot img :   1  BIOS"), "{el}");
    assert!(el.contains("El Torito boot img :   2  UEFI"), "{el}");
    // dd-able: an MBR with the ESP as partition 2 (type ef).
    let parts = sh(&format!("sfdisk -d '{}'", iso.display()));
    assert!(parts.contains("type=ef"), "{parts}");
    // Inside: /init, busybox, ferroclone (both static), the release file, modules.
    let dir = tempdir();
    let d = dir.path();
    sh(&format!(
        "cd '{0}' && xorriso -osirrox on -indev '{1}' -extract /boot/initrd.img initrd.img \
         -extract /etc/ferroclone-release release >/dev/null 2>&1 && mkdir r && cd r && \
         zstd -dc ../initrd.img | cpio -id --quiet",
        d.display(),
        iso.display()
    ));
    let r = d.join("r");
    for f in [
        "init",
        "bin/busybox",
        "usr/bin/ferroclone",
        "bin/ferroclone-console",
        "etc/ferroclone-release",
        "etc/ferroclone/modules.core",
    ] {
        assert!(r.join(f).exists(), "{f} missing from the initramfs");
    }
    for b in ["bin/busybox", "usr/bin/ferroclone"] {
        let f = sh(&format!("file -L '{}'", r.join(b).display()));
        assert!(
            f.contains("statically linked") || f.contains("static-pie linked"),
            "{f}"
        );
    }
    let release = std::fs::read_to_string(d.join("release")).unwrap();
    assert!(
        release.starts_with(&format!("ferroclone {} ", env!("CARGO_PKG_VERSION"))),
        "{release}"
    );
    assert!(release.contains("kernel: "), "{release}");
    assert_eq!(
        release,
        std::fs::read_to_string(r.join("etc/ferroclone-release")).unwrap()
    );
    let core = std::fs::read_to_string(r.join("etc/ferroclone/modules.core")).unwrap();
    for m in [
        "ahci",
        "nvme",
        "virtio_blk",
        "usb-storage",
        "uas",
        "xhci-pci",
        "ext4",
        "vfat",
        "exfat",
    ] {
        assert!(core.lines().any(|l| l == m), "{m} not in modules.core");
    }
    if release.contains("6.12") {
        assert!(
            core.lines().any(|l| l == "ntfs3"),
            "ntfs3 not in modules.core"
        );
    }
}

#[test]
fn iso_saves_and_restores_in_qemu() {
    let iso = iso();
    let out = run(Command::new(root().join("scripts/qemu-e2e.sh"))
        .arg("-i")
        .arg(&iso)
        .env("FERROCLONE", bin()));
    assert!(
        out.status.success(),
        "scripts/qemu-e2e.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
