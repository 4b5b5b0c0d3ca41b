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

/// The Buildroot tree (buildroot/) cannot be built here (it downloads its toolchain and
/// sources), so check that it holds together: every file the defconfig, the makefiles and the
/// scripts name exists, the package version is Cargo.toml's, and the names line up.
#[test]
fn buildroot_tree_is_consistent() {
    let br = root().join("buildroot");
    let read = |p: &str| {
        std::fs::read_to_string(br.join(p)).unwrap_or_else(|e| panic!("buildroot/{p}: {e}"))
    };
    let desc = read("external.desc");
    assert!(desc.lines().any(|l| l == "name: FERROCLONE"), "{desc}");
    assert!(read("external.mk").contains("$(BR2_EXTERNAL_FERROCLONE_PATH)/package/*/*.mk"));

    // Every $(BR2_EXTERNAL_FERROCLONE_PATH)/… or $BR2_EXTERNAL_FERROCLONE_PATH/… path exists.
    let mut named = 0;
    for f in sh(&format!("cd '{}' && find . -type f | sort", br.display())).lines() {
        let text = read(f);
        for marker in [
            "$(BR2_EXTERNAL_FERROCLONE_PATH)/",
            "$BR2_EXTERNAL_FERROCLONE_PATH/",
        ] {
            for (i, _) in text.match_indices(marker) {
                let rest = &text[i + marker.len()..];
                let end = rest
                    .find(|c: char| c.is_whitespace() || c == '"' || c == ')')
                    .unwrap_or(rest.len());
                let path = &rest[..end];
                if path.contains('*') {
                    continue;
                }
                named += 1;
                assert!(br.join(path).exists(), "{f} names {path}, which is missing");
            }
        }
    }
    assert!(named >= 5, "only {named} paths named");

    // The defconfig selects the package the tree defines, and the package's version is ours.
    let defconfig = read("configs/ferroclone_x86_64_defconfig");
    assert!(defconfig.lines().any(|l| l == "BR2_PACKAGE_FERROCLONE=y"));
    assert!(read("package/ferroclone/Config.in").contains("config BR2_PACKAGE_FERROCLONE\n"));
    let mk = read("package/ferroclone/ferroclone.mk");
    let version = mk
        .lines()
        .find_map(|l| l.strip_prefix("FERROCLONE_VERSION = "))
        .expect("FERROCLONE_VERSION in ferroclone.mk");
    assert_eq!(version, env!("CARGO_PKG_VERSION"), "ferroclone.mk version");
    assert!(mk.contains("$(eval $(cargo-package))"));
    assert!(mk.contains("FERROCLONE_SITE = $(BR2_EXTERNAL_FERROCLONE_PATH)/.."));

    // The post-image script is executable, valid sh, and runs our build-iso.sh.
    let post = br.join("board/ferroclone/post-image.sh");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&post).unwrap().permissions());
    assert!(mode & 0o111 != 0, "post-image.sh is not executable");
    ok(Command::new("sh").arg("-n").arg(&post));
    let text = read("board/ferroclone/post-image.sh");
    assert!(text.contains("/scripts/build-iso.sh"));
    assert!(root().join("scripts/build-iso.sh").exists());
    // The EFI GRUB built by Buildroot finds the medium by the file build-iso.sh writes.
    assert!(read("board/ferroclone/grub-efi-embed.cfg").contains("--file /boot/ferroclone.id"));
    let build_iso = std::fs::read_to_string(root().join("scripts/build-iso.sh")).unwrap();
    assert!(build_iso.contains("\"$ISO/boot/ferroclone.id\""));
    // Every option the kernel fragment sets is a CONFIG_ line.
    for l in read("board/ferroclone/linux.fragment").lines() {
        assert!(
            l.is_empty() || l.starts_with('#') || (l.starts_with("CONFIG_") && l.ends_with("=y")),
            "linux.fragment: {l:?}"
        );
    }
}
