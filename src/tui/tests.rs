//! Tests of the wizard without a terminal: every screen drawn on ratatui's `TestBackend` and
//! compared with snapshot files (src/tui/snapshots/, at 80x24 and 140x40), and the state
//! machine driven message by message. The data is fixed (no real disks, paths or clocks), so
//! nothing needs redacting.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use crate::engine::progress::ProgressEvent;
use crate::tui::app::{App, Effect, Flow, LogKind, Msg, Outcome, Popup, Screen, Setup, MENU};
use crate::tui::data::{DiskInfo, ImageEntry, ImagePart, PartInfo, RepoInfo};
use crate::tui::job::Job;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn part(number: u32, start: u64, size: u64, fs: &str, label: &str, used: u64) -> PartInfo {
    PartInfo {
        number,
        start,
        size,
        fs: fs.into(),
        label: label.into(),
        used,
        mountpoint: None,
    }
}

fn disk(path: &str, size: u64) -> DiskInfo {
    let p = PathBuf::from(path);
    DiskInfo {
        name: crate::tui::data::confirm_name(&p),
        is_file: !path.starts_with("/dev/"),
        path: p,
        exists: true,
        size,
        model: String::new(),
        serial: String::new(),
        transport: if path.starts_with("/dev/") {
            "sata".into()
        } else {
            "file".into()
        },
        removable: false,
        read_only: false,
        table: "gpt".into(),
        partitions: Vec::new(),
        in_use: None,
        holds_repo: false,
        error: None,
    }
}

/// The machine of the tests: two disk files, a system SSD in use, the USB stick holding the
/// repository, and an NVMe disk to restore onto.
fn disks() -> Vec<DiskInfo> {
    let mut win = disk("/var/tmp/demo/win.img", 256 * MIB);
    win.partitions = vec![
        part(1, MIB, 40 * MIB, "vfat", "SYSTEM", 5 * MIB + 400 * 1024),
        part(
            2,
            41 * MIB,
            16 * MIB,
            "unknown",
            "Microsoft reserved partition",
            16 * MIB,
        ),
        part(
            3,
            57 * MIB,
            168 * MIB,
            "ntfs",
            "Windows",
            73 * MIB + 700 * 1024,
        ),
        part(
            4,
            225 * MIB,
            30 * MIB,
            "ntfs",
            "Recovery",
            20 * MIB + 512 * 1024,
        ),
    ];
    let mut target = disk("/var/tmp/demo/target.img", 300 * MIB);
    target.table = "mbr".into();
    target.partitions = vec![part(1, MIB, 299 * MIB, "ntfs", "Data", 120 * MIB)];
    let mut sda = disk("/dev/sda", 500_107_862_016);
    sda.model = "Samsung SSD 870 EVO 500GB".into();
    sda.serial = "S6PXNM0T123456".into();
    sda.partitions = vec![
        part(1, MIB, 512 * MIB, "vfat", "EFI", 6 * MIB),
        part(2, 513 * MIB, 465 * GIB, "ext4", "root", 21 * GIB),
    ];
    sda.partitions[1].mountpoint = Some("/".into());
    sda.in_use = Some("/dev/sda holds a mounted filesystem (8:2 on /); unmount it first".into());
    let mut sdb = disk("/dev/sdb", 61_530_439_680);
    sdb.model = "SanDisk Ultra".into();
    sdb.serial = "4C530001230915".into();
    sdb.transport = "usb".into();
    sdb.removable = true;
    sdb.table = "mbr".into();
    sdb.partitions = vec![part(1, MIB, 61_529_391_104, "exfat", "IMAGES", 17 * GIB)];
    sdb.partitions[0].mountpoint = Some("/mnt/repo".into());
    sdb.in_use = Some("/dev/sdb holds a mounted filesystem (8:17 on /mnt/repo)".into());
    sdb.holds_repo = true;
    let mut nvme = disk("/dev/nvme0n1", 1_024_209_543_168);
    nvme.model = "WD Blue SN570 1TB".into();
    nvme.serial = "22047A801234".into();
    nvme.transport = "nvme".into();
    nvme.partitions = vec![
        part(1, MIB, 100 * MIB, "vfat", "", 30 * MIB),
        part(2, 101 * MIB, 16 * MIB, "unknown", "", 16 * MIB),
        part(3, 117 * MIB, 952 * GIB, "ntfs", "Windows", 310 * GIB),
    ];
    vec![win, target, sda, sdb, nvme]
}

fn images() -> Vec<ImageEntry> {
    let win = ImageEntry {
        name: "win-2026-11-20".into(),
        path: "/mnt/repo/win-2026-11-20".into(),
        complete: true,
        problem: None,
        created: "2026-11-20T09:15:02Z".into(),
        source: "/var/tmp/demo/win.img".into(),
        source_size: 256 * MIB,
        table: "gpt".into(),
        size: 80 * MIB,
        partitions: vec![
            ImagePart {
                number: 1,
                fs: "vfat".into(),
                label: "SYSTEM".into(),
                size: 40 * MIB,
                stored: 5 * MIB,
            },
            ImagePart {
                number: 2,
                fs: "unknown".into(),
                label: String::new(),
                size: 16 * MIB,
                stored: 16 * MIB,
            },
            ImagePart {
                number: 3,
                fs: "ntfs".into(),
                label: "Windows".into(),
                size: 168 * MIB,
                stored: 73 * MIB,
            },
            ImagePart {
                number: 4,
                fs: "ntfs".into(),
                label: "Recovery".into(),
                size: 30 * MIB,
                stored: 20 * MIB,
            },
        ],
    };
    let laptop = ImageEntry {
        name: "laptop-2026-10-01".into(),
        path: "/mnt/repo/laptop-2026-10-01".into(),
        created: "2026-10-01T18:40:55Z".into(),
        source: "/dev/nvme0n1".into(),
        source_size: 1_024_209_543_168,
        size: 190 * GIB,
        partitions: vec![ImagePart {
            number: 3,
            fs: "ntfs".into(),
            label: "Windows".into(),
            size: 952 * GIB,
            stored: 310 * GIB,
        }],
        ..win.clone()
    };
    let partial = ImageEntry {
        name: "backup.partial".into(),
        path: "/mnt/repo/backup.partial".into(),
        complete: false,
        problem: Some("incomplete: its save did not finish".into()),
        created: String::new(),
        source: String::new(),
        source_size: 0,
        table: String::new(),
        size: 3 * GIB,
        partitions: Vec::new(),
    };
    vec![win, laptop, partial]
}

fn repo() -> RepoInfo {
    RepoInfo {
        path: "/mnt/repo".into(),
        free: 40 * GIB,
        total: 57 * GIB,
        images: images(),
        conflict: None,
    }
}

fn setup() -> Setup {
    Setup {
        extra_disks: vec![
            "/var/tmp/demo/win.img".into(),
            "/var/tmp/demo/target.img".into(),
        ],
        repo: Some("/mnt/repo".into()),
        threads: 2,
        rescue: false,
        today: "2026-11-22".into(),
    }
}

fn key(c: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

fn ctrl(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

fn press(app: &mut App, c: KeyCode) -> Vec<Effect> {
    app.update(key(c))
}

fn type_text(app: &mut App, s: &str) {
    for c in s.chars() {
        assert!(app.update(key(KeyCode::Char(c))).is_empty());
    }
}

/// A wizard brought by real transitions to the save flow's options screen.
fn save_at_options() -> App {
    let mut app = App::new(setup());
    let fx = press(&mut app, KeyCode::Enter);
    assert!(matches!(fx[..], [Effect::ScanDisks { .. }]));
    app.update(Msg::Disks(disks()));
    let fx = press(&mut app, KeyCode::Enter);
    assert!(matches!(fx[..], [Effect::ScanRepo { .. }]), "{fx:?}");
    app.update(Msg::Repo {
        path: "/mnt/repo".into(),
        result: Ok(repo()),
    });
    assert_eq!(app.screen, Screen::Repo);
    assert!(press(&mut app, KeyCode::Enter).is_empty());
    assert_eq!(app.screen, Screen::Options);
    app
}

/// A wizard brought by real transitions to the restore flow's options screen, onto the
/// NVMe disk.
fn restore_at_options() -> App {
    let mut app = App::new(setup());
    press(&mut app, KeyCode::Down);
    let fx = press(&mut app, KeyCode::Enter);
    assert!(matches!(fx[..], [Effect::ScanRepo { .. }]), "{fx:?}");
    app.update(Msg::Repo {
        path: "/mnt/repo".into(),
        result: Ok(repo()),
    });
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.screen, Screen::Images);
    let fx = press(&mut app, KeyCode::Enter);
    match &fx[..] {
        [Effect::ScanDisks { repo }] => assert_eq!(repo.as_deref(), Some("/mnt/repo".as_ref())),
        other => panic!("{other:?}"),
    }
    app.update(Msg::Disks(disks()));
    for _ in 0..4 {
        press(&mut app, KeyCode::Down);
    }
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.screen, Screen::Options, "{:?}", app.notice);
    app
}

fn prepared_lines() -> Vec<String> {
    vec![
        "image /mnt/repo/win-2026-11-20 (gpt table, source /var/tmp/demo/win.img of 256.0 MiB)"
            .into(),
        "target /dev/nvme0n1 (953.9 GiB) WILL BE OVERWRITTEN".into(),
        "write the boot area and the gpt partition table".into(),
        "partition 1: vfat SYSTEM at byte 0x100000 (40.0 MiB, 5.0 MiB stored)".into(),
        "partition 2: unknown  at byte 0x2900000 (16.0 MiB, 16.0 MiB stored)".into(),
        "partition 3: ntfs Windows at byte 0x3900000 (168.0 MiB, 73.0 MiB stored)".into(),
        "partition 4: ntfs Recovery at byte 0xe100000 (30.0 MiB, 20.0 MiB stored)".into(),
        "move the backup GPT to the end of the target".into(),
    ]
}

fn restore_at_confirm() -> App {
    let mut app = restore_at_options();
    let fx = press(&mut app, KeyCode::Enter);
    assert!(matches!(fx[..], [Effect::Prepare(_)]), "{fx:?}");
    app.update(Msg::Prepared(Ok(prepared_lines())));
    assert_eq!(app.screen, Screen::Summary);
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.screen, Screen::Confirm);
    app
}

/// A save in the middle of partition 3, 83 s after it started.
fn save_running() -> App {
    let mut app = save_at_options();
    press(&mut app, KeyCode::Enter);
    let t0 = Instant::now();
    app.update(Msg::Tick(t0));
    let fx = press(&mut app, KeyCode::Enter);
    assert!(matches!(fx[..], [Effect::Run(Job::Save(_))]), "{fx:?}");
    let events = [
        ProgressEvent::Job {
            op: "save",
            total: 116 * MIB,
        },
        ProgressEvent::Step {
            label: "boot area and partition tables".into(),
            total: MIB,
        },
        ProgressEvent::Advance { bytes: MIB },
        ProgressEvent::Step {
            label: "partition 1 (vfat, 5.4 MiB)".into(),
            total: 5 * MIB,
        },
        ProgressEvent::Advance { bytes: 5 * MIB },
        ProgressEvent::Warning(
            "partition 3: the NTFS volume is marked dirty (Windows was not shut down cleanly); \
             it is imaged exactly as it is"
                .into(),
        ),
        ProgressEvent::Step {
            label: "partition 2 (unknown, raw, 16.0 MiB)".into(),
            total: 16 * MIB,
        },
        ProgressEvent::Advance { bytes: 16 * MIB },
        ProgressEvent::Step {
            label: "partition 3 (ntfs, 73.7 MiB)".into(),
            total: 74 * MIB,
        },
        ProgressEvent::Advance { bytes: 30 * MIB },
    ];
    for ev in events {
        app.update(Msg::Progress(ev));
    }
    app.update(Msg::Tick(t0 + Duration::from_secs(83)));
    app
}

fn draw(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    t.draw(|f| crate::tui::ui::render(app, f)).expect("draw");
    t.backend().to_string()
}

/// Snapshots of `app` at 80x24 (the Linux console) and 140x40.
fn snap(name: &str, app: &App) {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_snapshot_path("snapshots");
    settings.bind(|| {
        insta::assert_snapshot!(format!("{name}_80x24"), draw(app, 80, 24));
        insta::assert_snapshot!(format!("{name}_140x40"), draw(app, 140, 40));
    });
}

mod snapshots {
    use super::*;

    #[test]
    fn start() {
        let mut app = App::new(setup());
        snap("start", &app);
        press(&mut app, KeyCode::Char('3'));
        press(&mut app, KeyCode::Enter);
        snap("start_clone_not_available", &app);
    }

    #[test]
    fn disks_scanning() {
        let mut app = App::new(setup());
        press(&mut app, KeyCode::Enter);
        snap("disks_scanning", &app);
    }

    #[test]
    fn disks_save() {
        let mut app = App::new(setup());
        press(&mut app, KeyCode::Enter);
        app.update(Msg::Disks(disks()));
        snap("disks_save", &app);
        // The USB stick with the repository, refused as a source.
        for _ in 0..3 {
            press(&mut app, KeyCode::Down);
        }
        press(&mut app, KeyCode::Enter);
        snap("disks_save_refused", &app);
    }

    #[test]
    fn disks_restore() {
        let mut app = restore_at_options();
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.screen, Screen::Disks);
        snap("disks_restore_nvme", &app);
        app.disk_cursor = 2;
        snap("disks_restore_mounted", &app);
    }

    #[test]
    fn repo() {
        let mut app = save_at_options();
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.screen, Screen::Repo);
        snap("repo", &app);
        app.repo.as_mut().unwrap().free = 50 * MIB;
        snap("repo_low_space", &app);
        app.update(Msg::Key(KeyEvent::new(
            KeyCode::Char('u'),
            KeyModifiers::CONTROL,
        )));
        type_text(&mut app, "/mnt/nothing");
        app.update(Msg::Repo {
            path: "/mnt/nothing".into(),
            result: Err(
                "/mnt/nothing is not a directory (mount the repository first, e.g. \
                         from the shell)"
                    .into(),
            ),
        });
        snap("repo_error", &app);
    }

    #[test]
    fn images() {
        let mut app = restore_at_options();
        app.screen = Screen::Images;
        snap("images", &app);
        app.image_cursor = 2;
        press(&mut app, KeyCode::Enter);
        snap("images_incomplete", &app);
    }

    #[test]
    fn options() {
        let mut app = save_at_options();
        snap("options_save", &app);
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Char(' '));
        snap("options_save_part2_off", &app);
        let app = restore_at_options();
        snap("options_restore", &app);
    }

    #[test]
    fn summary() {
        let mut app = save_at_options();
        press(&mut app, KeyCode::Enter);
        snap("summary_save", &app);
        let mut app = restore_at_confirm();
        press(&mut app, KeyCode::Esc);
        snap("summary_restore", &app);
    }

    #[test]
    fn confirm() {
        let mut app = restore_at_confirm();
        type_text(&mut app, "nvme0");
        snap("confirm_typing", &app);
        type_text(&mut app, "x");
        press(&mut app, KeyCode::Enter);
        snap("confirm_wrong", &app);
    }

    #[test]
    fn progress() {
        let mut app = save_running();
        snap("progress_save", &app);
        press(&mut app, KeyCode::Esc);
        snap("progress_cancel_question", &app);
    }

    #[test]
    fn results() {
        let mut app = save_running();
        app.log_path = Some("/mnt/repo/ferroclone.log".into());
        app.update(Msg::Done(Outcome::Saved {
            source: "/var/tmp/demo/win.img".into(),
            image: "/mnt/repo/win-2026-11-22".into(),
            read: 116 * MIB,
            written: 80 * MIB,
            secs: 83.0,
            verified: Some((119, 116 * MIB)),
        }));
        snap("result_saved", &app);

        let mut app = save_running();
        app.log_path = Some("/mnt/repo/ferroclone.log".into());
        app.update(Msg::Done(Outcome::Failed {
            op: Flow::Save,
            error: "saving partition 3: repository full while writing \
                    /mnt/repo/win-2026-11-22.partial/p3.000 at byte 0x2000000: needed about \
                    41943040 more bytes, 1048576 free"
                .into(),
            interrupted: false,
            damaged: false,
            secs: 12.0,
        }));
        snap("result_save_failed", &app);

        let mut app = save_running();
        app.update(Msg::Done(Outcome::Failed {
            op: Flow::Save,
            error: "interrupted".into(),
            interrupted: true,
            damaged: false,
            secs: 9.0,
        }));
        snap("result_save_stopped", &app);

        let mut app = restore_at_confirm();
        type_text(&mut app, "nvme0n1");
        press(&mut app, KeyCode::Enter);
        app.log_path = Some("/mnt/repo/ferroclone.log".into());
        app.update(Msg::Done(Outcome::Restored {
            image: "/mnt/repo/win-2026-11-20".into(),
            target: "/dev/nvme0n1".into(),
            written: 116 * MIB,
            secs: 4.0,
        }));
        snap("result_restored", &app);

        let mut app = App::new(setup());
        app.flow = Flow::Verify;
        app.screen = Screen::Result;
        app.outcome = Some(Outcome::Verified {
            image: "/mnt/repo/win-2026-11-20".into(),
            blocks: 119,
            bytes: 116 * MIB,
            volumes: 4,
            secs: 2.0,
        });
        snap("result_verified", &app);
        app.outcome = Some(Outcome::Failed {
            op: Flow::Verify,
            error: "verifying stream p3 of /mnt/repo/win-2026-11-20: \
                    /mnt/repo/win-2026-11-20/p3.000: block 17 of stream p3 (bytes \
                    0x1100000..0x1200000 of the stream) at byte 0x10f0c2c: CRC32 mismatch"
                .into(),
            interrupted: false,
            damaged: true,
            secs: 1.0,
        });
        snap("result_verify_damaged", &app);
    }

    #[test]
    fn every_screen_survives_any_size() {
        let mut apps = vec![App::new(setup()), save_at_options(), restore_at_confirm()];
        let mut running = save_running();
        apps.push(save_running());
        running.update(Msg::Done(Outcome::Failed {
            op: Flow::Save,
            error: "x".into(),
            interrupted: false,
            damaged: false,
            secs: 0.0,
        }));
        apps.push(running);
        let mut d = restore_at_options();
        press(&mut d, KeyCode::Esc);
        apps.push(d);
        for app in &apps {
            for (w, h) in [
                (1, 1),
                (2, 2),
                (10, 3),
                (30, 8),
                (79, 23),
                (80, 25),
                (250, 70),
            ] {
                draw(app, w, h);
            }
        }
    }
}

mod transitions {
    use super::*;

    #[test]
    fn start_menu_moves_and_wraps() {
        let mut app = App::new(setup());
        press(&mut app, KeyCode::Up);
        assert_eq!(app.menu, MENU.len() - 1);
        press(&mut app, KeyCode::Down);
        assert_eq!(app.menu, 0);
        press(&mut app, KeyCode::Char('4'));
        assert_eq!(app.menu, 3);
        press(&mut app, KeyCode::Home);
        assert_eq!(app.menu, 0);
    }

    #[test]
    fn quit_keys() {
        for msg in [key(KeyCode::Char('q')), key(KeyCode::Esc), ctrl('c')] {
            let mut app = App::new(setup());
            app.update(msg);
            assert!(app.quit);
        }
        let mut app = App::new(setup());
        press(&mut app, KeyCode::End);
        press(&mut app, KeyCode::Enter);
        assert!(app.quit);
        assert!(app.farewell.is_none());
    }

    #[test]
    fn clone_is_not_available() {
        let mut app = App::new(setup());
        press(&mut app, KeyCode::Char('3'));
        assert!(press(&mut app, KeyCode::Enter).is_empty());
        assert_eq!(app.screen, Screen::Start);
        assert!(app.notice.as_ref().unwrap().text.contains("not available"));
        press(&mut app, KeyCode::Down);
        assert!(app.notice.is_none(), "a key clears the notice");
    }

    #[test]
    fn shell_reboot_power_off() {
        let mut app = App::new(setup());
        press(&mut app, KeyCode::Char('5'));
        assert!(matches!(
            press(&mut app, KeyCode::Enter)[..],
            [Effect::Shell]
        ));
        // Not the rescue system: leave with a message, never reboot.
        for n in ['6', '7'] {
            let mut app = App::new(setup());
            press(&mut app, KeyCode::Char(n));
            assert!(press(&mut app, KeyCode::Enter).is_empty());
            assert!(app.quit);
            assert!(app
                .farewell
                .as_ref()
                .unwrap()
                .contains("not running as the rescue"));
        }
        // The rescue system asks first.
        let mut app = App::new(Setup {
            rescue: true,
            ..setup()
        });
        press(&mut app, KeyCode::Char('6'));
        assert!(press(&mut app, KeyCode::Enter).is_empty());
        assert_eq!(app.popup, Some(Popup::Reboot));
        press(&mut app, KeyCode::Char('n'));
        assert_eq!(app.popup, None);
        assert!(!app.quit);
        press(&mut app, KeyCode::Char('7'));
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.popup, Some(Popup::PowerOff));
        assert!(matches!(
            press(&mut app, KeyCode::Char('y'))[..],
            [Effect::PowerOff]
        ));
    }

    #[test]
    fn busy_ignores_keys_but_ctrl_c() {
        let mut app = App::new(setup());
        press(&mut app, KeyCode::Enter);
        assert!(app.busy.is_some());
        assert!(press(&mut app, KeyCode::Esc).is_empty());
        assert_eq!(app.screen, Screen::Disks);
        app.update(ctrl('c'));
        assert!(app.quit);
    }

    #[test]
    fn save_scans_disks_with_the_repository() {
        let mut app = App::new(setup());
        match &press(&mut app, KeyCode::Enter)[..] {
            [Effect::ScanDisks { repo }] => {
                assert_eq!(repo.as_deref(), Some("/mnt/repo".as_ref()))
            }
            other => panic!("{other:?}"),
        }
        app.update(Msg::Disks(Vec::new()));
        assert!(app.busy.is_none());
        assert!(app.notice.as_ref().unwrap().error);
        assert!(press(&mut app, KeyCode::Enter).is_empty());
        assert!(matches!(
            press(&mut app, KeyCode::Char('r'))[..],
            [Effect::ScanDisks { .. }]
        ));
    }

    #[test]
    fn save_refuses_the_repository_disk_and_allows_a_mounted_one() {
        let mut app = App::new(setup());
        press(&mut app, KeyCode::Enter);
        app.update(Msg::Disks(disks()));
        app.disk_cursor = 3;
        assert!(press(&mut app, KeyCode::Enter).is_empty());
        assert_eq!(app.screen, Screen::Disks);
        assert!(app.notice.as_ref().unwrap().text.contains("repository"));
        app.disk_cursor = 2;
        match &press(&mut app, KeyCode::Enter)[..] {
            [Effect::ScanRepo { dir, source }] => {
                assert_eq!(dir, &PathBuf::from("/mnt/repo"));
                assert_eq!(source.as_deref(), Some("/dev/sda".as_ref()));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(app.source.as_ref().unwrap().name, "sda");
    }

    #[test]
    fn save_whole_flow_builds_the_plan() {
        let mut app = save_at_options();
        assert_eq!(app.options.name, "win-2026-11-22");
        assert_eq!(app.options.parts.len(), 4);
        assert!(app.options.verify);
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.screen, Screen::Summary);
        assert!(app
            .summary
            .iter()
            .any(|l| l.text.contains("/mnt/repo/win-2026-11-22")));
        assert!(app.summary.iter().all(|l| !l.danger));
        match &press(&mut app, KeyCode::Enter)[..] {
            [Effect::Run(Job::Save(plan))] => {
                assert_eq!(plan.source, PathBuf::from("/var/tmp/demo/win.img"));
                assert_eq!(plan.image, PathBuf::from("/mnt/repo/win-2026-11-22"));
                assert_eq!(plan.parts, None);
                assert_eq!(plan.volume_size, crate::image::format::DEFAULT_VOLUME_SIZE);
                assert!(plan.verify);
                assert_eq!(plan.threads, 2);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(app.screen, Screen::Progress);
    }

    #[test]
    fn save_options_edit_and_validate() {
        let mut app = save_at_options();
        // Name: cleared, then a slash is refused.
        app.update(ctrl('u'));
        press(&mut app, KeyCode::Enter);
        assert!(app.notice.as_ref().unwrap().error);
        type_text(&mut app, "a/b");
        press(&mut app, KeyCode::Enter);
        assert!(app.notice.as_ref().unwrap().text.contains("slash"));
        press(&mut app, KeyCode::Backspace);
        press(&mut app, KeyCode::Backspace);
        assert_eq!(app.options.name, "a");
        // An existing image's name is refused.
        app.update(ctrl('u'));
        type_text(&mut app, "laptop-2026-10-01");
        press(&mut app, KeyCode::Enter);
        assert!(app.notice.as_ref().unwrap().text.contains("already exists"));
        app.update(ctrl('u'));
        type_text(&mut app, "mine");
        // Partitions: 1 and 3 only.
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Char('a'));
        assert!(app.options.parts.iter().all(|p| !p.chosen));
        press(&mut app, KeyCode::Enter);
        assert!(app.notice.as_ref().unwrap().text.contains("at least one"));
        press(&mut app, KeyCode::Char(' '));
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Char(' '));
        // Split: a bad size, then 1G; verification off.
        for _ in 0..2 {
            press(&mut app, KeyCode::Down);
        }
        app.update(ctrl('u'));
        type_text(&mut app, "lots");
        press(&mut app, KeyCode::Enter);
        assert!(app.notice.as_ref().unwrap().text.contains("not a size"));
        app.update(ctrl('u'));
        type_text(&mut app, "1K");
        press(&mut app, KeyCode::Enter);
        assert!(app.notice.as_ref().unwrap().text.contains("at least"));
        app.update(ctrl('u'));
        type_text(&mut app, "1G");
        press(&mut app, KeyCode::Tab);
        press(&mut app, KeyCode::Char(' '));
        assert!(!app.options.verify);
        press(&mut app, KeyCode::Tab);
        assert_eq!(app.options.focus, 0, "focus wraps to the name");
        press(&mut app, KeyCode::BackTab);
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.screen, Screen::Summary, "{:?}", app.notice);
        match &press(&mut app, KeyCode::Enter)[..] {
            [Effect::Run(Job::Save(plan))] => {
                assert_eq!(plan.image, PathBuf::from("/mnt/repo/mine"));
                assert_eq!(plan.parts, Some(vec![1, 3]));
                assert_eq!(plan.volume_size, 1 << 30);
                assert!(!plan.verify);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn repository_typed_scanned_and_proceeding() {
        let mut app = App::new(Setup {
            repo: None,
            ..setup()
        });
        press(&mut app, KeyCode::Enter);
        app.update(Msg::Disks(disks()));
        assert!(
            press(&mut app, KeyCode::Enter).is_empty(),
            "no repo: no scan"
        );
        assert_eq!(app.screen, Screen::Repo);
        assert!(press(&mut app, KeyCode::Enter).is_empty());
        assert!(app.notice.as_ref().unwrap().error);
        type_text(&mut app, "/mnt/repox");
        press(&mut app, KeyCode::Backspace);
        assert_eq!(app.repo_input, "/mnt/repo");
        assert!(matches!(
            press(&mut app, KeyCode::Enter)[..],
            [Effect::ScanRepo { .. }]
        ));
        // A scan that fails keeps the screen.
        app.update(Msg::Repo {
            path: "/mnt/repo".into(),
            result: Err("cannot list /mnt/repo: permission denied".into()),
        });
        assert_eq!(app.screen, Screen::Repo);
        assert!(app.repo_error.is_some());
        // One that succeeds, asked for with Enter, goes on.
        press(&mut app, KeyCode::Enter);
        app.update(Msg::Repo {
            path: "/mnt/repo".into(),
            result: Ok(repo()),
        });
        assert_eq!(app.screen, Screen::Options);
        assert!(app.repo_error.is_none());
        // Back, edit: the old scan no longer counts.
        press(&mut app, KeyCode::Esc);
        press(&mut app, KeyCode::Char('/'));
        assert!(app.current_repo().is_none());
        press(&mut app, KeyCode::Backspace);
        assert!(app.current_repo().is_some());
    }

    #[test]
    fn repository_low_space_warns_and_waits() {
        let mut app = App::new(setup());
        press(&mut app, KeyCode::Enter);
        app.update(Msg::Disks(disks()));
        press(&mut app, KeyCode::Enter);
        app.repo_proceed = true;
        app.update(Msg::Repo {
            path: "/mnt/repo".into(),
            result: Ok(RepoInfo {
                free: 10 * MIB,
                ..repo()
            }),
        });
        assert_eq!(app.screen, Screen::Repo, "a warning stops the auto-advance");
        assert!(app.space_warning().unwrap().contains("10.0 MiB free"));
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.screen, Screen::Options, "Enter goes on anyway");
        press(&mut app, KeyCode::Enter);
        assert!(app
            .summary
            .iter()
            .any(|l| l.danger && l.text.contains("may not fit")));
    }

    #[test]
    fn repository_on_the_source_disk_is_refused() {
        let mut app = App::new(setup());
        press(&mut app, KeyCode::Enter);
        app.update(Msg::Disks(disks()));
        press(&mut app, KeyCode::Enter);
        app.update(Msg::Repo {
            path: "/mnt/repo".into(),
            result: Ok(RepoInfo {
                conflict: Some("the image directory /mnt/repo is on the source disk".into()),
                ..repo()
            }),
        });
        assert!(press(&mut app, KeyCode::Enter).is_empty());
        assert_eq!(app.screen, Screen::Repo);
        assert!(app.notice.as_ref().unwrap().text.contains("source disk"));
    }

    #[test]
    fn restore_whole_flow_confirms_by_name() {
        let mut app = restore_at_options();
        assert_eq!(app.options.parts.len(), 4);
        let fx = press(&mut app, KeyCode::Enter);
        match &fx[..] {
            [Effect::Prepare(plan)] => {
                assert_eq!(plan.image, PathBuf::from("/mnt/repo/win-2026-11-20"));
                assert_eq!(plan.target, PathBuf::from("/dev/nvme0n1"));
                assert_eq!(plan.parts, None);
            }
            other => panic!("{other:?}"),
        }
        assert!(app.busy.is_some());
        app.update(Msg::Prepared(Ok(prepared_lines())));
        assert_eq!(app.screen, Screen::Summary);
        assert!(app
            .summary
            .iter()
            .any(|l| l.danger && l.text.contains("WILL BE OVERWRITTEN")));
        assert!(app
            .summary
            .iter()
            .any(|l| l.danger && l.text.contains("partition 3: ntfs Windows (952.0 GiB")));
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.screen, Screen::Confirm);
        // A wrong name: no effect, the field is cleared.
        type_text(&mut app, "sda");
        assert!(press(&mut app, KeyCode::Enter).is_empty());
        assert!(app.notice.as_ref().unwrap().text.contains("nvme0n1"));
        assert!(app.confirm_input.is_empty());
        type_text(&mut app, "nvme0n1");
        match &press(&mut app, KeyCode::Enter)[..] {
            [Effect::Run(Job::Restore { plan, expect, .. })] => {
                assert_eq!(plan.target, PathBuf::from("/dev/nvme0n1"));
                assert_eq!(expect, &prepared_lines());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(app.screen, Screen::Progress);
    }

    #[test]
    fn restore_refuses_busy_targets_and_incomplete_images() {
        let mut app = restore_at_options();
        press(&mut app, KeyCode::Esc);
        for (i, what) in [(2, "mounted"), (3, "repository")] {
            app.disk_cursor = i;
            assert!(press(&mut app, KeyCode::Enter).is_empty());
            assert_eq!(app.screen, Screen::Disks);
            assert!(
                app.notice.as_ref().unwrap().text.contains(what),
                "{:?}",
                app.notice
            );
        }
        app.disks[4].read_only = true;
        app.disk_cursor = 4;
        press(&mut app, KeyCode::Enter);
        assert!(app.notice.as_ref().unwrap().text.contains("read-only"));
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.screen, Screen::Images);
        app.image_cursor = 2;
        assert!(press(&mut app, KeyCode::Enter).is_empty());
        assert_eq!(app.screen, Screen::Images);
        assert!(app
            .notice
            .as_ref()
            .unwrap()
            .text
            .contains("cannot be restored"));
    }

    #[test]
    fn restore_chosen_partitions_and_check_failure() {
        let mut app = restore_at_options();
        press(&mut app, KeyCode::Char(' '));
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Char(' '));
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Char(' '));
        match &press(&mut app, KeyCode::Enter)[..] {
            [Effect::Prepare(plan)] => assert_eq!(plan.parts, Some(vec![3])),
            other => panic!("{other:?}"),
        }
        app.update(Msg::Prepared(Err(
            "the target /dev/nvme0n1 is too small".into()
        )));
        assert_eq!(app.screen, Screen::Options);
        assert!(app.busy.is_none());
        assert!(app.notice.as_ref().unwrap().text.contains("too small"));
    }

    #[test]
    fn verify_flow() {
        let mut app = App::new(setup());
        press(&mut app, KeyCode::Char('4'));
        let fx = press(&mut app, KeyCode::Enter);
        assert_eq!(app.flow, Flow::Verify);
        assert!(matches!(fx[..], [Effect::ScanRepo { ref source, .. }] if source.is_none()));
        app.update(Msg::Repo {
            path: "/mnt/repo".into(),
            result: Ok(repo()),
        });
        press(&mut app, KeyCode::Enter);
        press(&mut app, KeyCode::Down);
        assert!(press(&mut app, KeyCode::Enter).is_empty());
        assert_eq!(app.screen, Screen::Summary);
        assert_eq!(app.image.as_ref().unwrap().name, "laptop-2026-10-01");
        match &press(&mut app, KeyCode::Enter)[..] {
            [Effect::Run(Job::Verify { image, threads })] => {
                assert_eq!(image, &PathBuf::from("/mnt/repo/laptop-2026-10-01"));
                assert_eq!(*threads, 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_repository() {
        let mut app = App::new(setup());
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Enter);
        app.update(Msg::Repo {
            path: "/mnt/repo".into(),
            result: Ok(RepoInfo {
                images: Vec::new(),
                ..repo()
            }),
        });
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.screen, Screen::Images);
        assert!(app.notice.is_some());
        assert!(press(&mut app, KeyCode::Enter).is_empty());
        assert!(app.notice.as_ref().unwrap().error);
    }

    #[test]
    fn back_with_esc_from_every_screen() {
        let mut app = save_at_options();
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.screen, Screen::Summary);
        for want in [Screen::Options, Screen::Repo, Screen::Disks, Screen::Start] {
            press(&mut app, KeyCode::Esc);
            assert_eq!(app.screen, want);
        }
        let mut app = restore_at_confirm();
        for want in [
            Screen::Summary,
            Screen::Options,
            Screen::Disks,
            Screen::Images,
            Screen::Repo,
            Screen::Start,
        ] {
            press(&mut app, KeyCode::Esc);
            assert_eq!(app.screen, want);
        }
        assert!(!app.quit);
    }

    #[test]
    fn progress_events_update_gauges_rate_and_log() {
        let app = save_running();
        let p = &app.progress;
        assert_eq!(p.op, "save");
        assert_eq!(p.total, 116 * MIB);
        assert_eq!(p.done, 52 * MIB);
        assert_eq!(p.step, "partition 3 (ntfs, 73.7 MiB)");
        assert_eq!((p.step_done, p.step_total), (30 * MIB, 74 * MIB));
        assert!((p.elapsed() - 83.0).abs() < 1e-6);
        let rate = 52.0 * MIB as f64 / 83.0;
        assert!((p.rate() - rate).abs() < 1.0);
        assert!((p.eta().unwrap() - 64.0 * MIB as f64 / rate).abs() < 0.01);
        assert_eq!(p.log.iter().filter(|l| l.kind == LogKind::Step).count(), 4);
        assert_eq!(
            p.log.iter().filter(|l| l.kind == LogKind::Warning).count(),
            1
        );
        // The verification after the save is a new phase.
        let mut app = app;
        app.update(Msg::Progress(ProgressEvent::Job {
            op: "verify",
            total: 116 * MIB,
        }));
        assert_eq!((app.progress.op.as_str(), app.progress.done), ("verify", 0));
        assert!(
            (app.progress.elapsed() - 83.0).abs() < 1e-6,
            "the run's clock goes on"
        );
    }

    #[test]
    fn cancel_asks_first() {
        let mut app = save_running();
        assert!(press(&mut app, KeyCode::Esc).is_empty());
        assert_eq!(app.popup, Some(Popup::CancelJob));
        assert!(press(&mut app, KeyCode::Char('x')).is_empty());
        assert_eq!(app.popup, Some(Popup::CancelJob));
        press(&mut app, KeyCode::Char('n'));
        assert_eq!(app.popup, None);
        assert!(!app.progress.cancelling);
        assert!(!app.quit, "no way out of a running job but stopping it");
        // Ctrl-C asks; a second Ctrl-C means yes.
        assert!(app.update(ctrl('c')).is_empty());
        assert_eq!(app.popup, Some(Popup::CancelJob));
        assert!(matches!(app.update(ctrl('c'))[..], [Effect::Cancel]));
        assert!(app.progress.cancelling);
        assert!(press(&mut app, KeyCode::Esc).is_empty());
        assert_eq!(app.popup, None, "no second question while stopping");
        // The job ends as interrupted.
        app.update(Msg::Done(crate::tui::job::failure(
            Flow::Save,
            &anyhow::anyhow!(crate::engine::Interrupted),
            3.0,
        )));
        assert_eq!(app.screen, Screen::Result);
        assert!(matches!(
            app.outcome,
            Some(Outcome::Failed {
                interrupted: true,
                ..
            })
        ));
        // Yes with y, too.
        let mut app = save_running();
        press(&mut app, KeyCode::Esc);
        assert!(matches!(
            press(&mut app, KeyCode::Char('y'))[..],
            [Effect::Cancel]
        ));
    }

    #[test]
    fn failures_are_never_empty_and_keep_their_kind() {
        let e = crate::tui::job::failure(Flow::Restore, &anyhow::anyhow!(""), 1.0);
        match e {
            Outcome::Failed { error, .. } => assert!(!error.trim().is_empty()),
            other => panic!("{other:?}"),
        }
        let mismatch = anyhow::Error::from(crate::engine::verify::Mismatch {
            disk: "/dev/sda".into(),
            offset: 0x1000,
            stream: "p1".into(),
            block: 0,
        })
        .context("verifying");
        match crate::tui::job::failure(Flow::Verify, &mismatch, 1.0) {
            Outcome::Failed {
                error,
                damaged,
                interrupted,
                ..
            } => {
                assert!(damaged && !interrupted);
                assert!(error.contains("verifying: /dev/sda differs"), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn result_goes_back_to_start_and_forgets_the_flow() {
        let mut app = save_running();
        app.update(Msg::Done(Outcome::Failed {
            op: Flow::Save,
            error: "disk full".into(),
            interrupted: false,
            damaged: false,
            secs: 1.0,
        }));
        assert_eq!(app.screen, Screen::Result);
        assert_eq!(app.progress.log.last().unwrap().kind, LogKind::Error);
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.screen, Screen::Start);
        assert!(app.source.is_none() && app.summary.is_empty());
        assert_eq!(app.repo_input, "/mnt/repo");
        let mut app = save_running();
        app.update(Msg::Done(Outcome::Failed {
            op: Flow::Save,
            error: "x".into(),
            interrupted: false,
            damaged: false,
            secs: 1.0,
        }));
        press(&mut app, KeyCode::Char('q'));
        assert!(app.quit);
    }

    #[test]
    fn image_names_do_not_collide() {
        let d = &disks()[0];
        assert_eq!(
            crate::tui::app::default_image_name(d, "2026-11-22", &[]),
            "win-2026-11-22"
        );
        let taken = vec![
            "win-2026-11-22".to_string(),
            "win-2026-11-22-2.partial".into(),
        ];
        assert_eq!(
            crate::tui::app::default_image_name(d, "2026-11-22", &taken),
            "win-2026-11-22-3"
        );
        assert_eq!(
            crate::tui::app::default_image_name(&disks()[2], "2026-11-22", &[]),
            "sda-2026-11-22"
        );
    }

    #[test]
    fn help_line_on_every_screen() {
        let mut apps = vec![App::new(setup()), save_at_options(), restore_at_confirm()];
        apps.push(save_running());
        for app in &mut apps {
            for s in [
                Screen::Start,
                Screen::Disks,
                Screen::Repo,
                Screen::Images,
                Screen::Options,
                Screen::Summary,
                Screen::Confirm,
                Screen::Progress,
                Screen::Result,
            ] {
                app.screen = s;
                assert!(!app.help().is_empty(), "{s:?}");
            }
        }
    }
}
