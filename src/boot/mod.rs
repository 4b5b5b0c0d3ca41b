//! The rescue environment's unattended mode (DESIGN §8), run by the ISO's /init as the hidden
//! `ferroclone boot` subcommand:
//!
//! 1. read the `ferroclone.*` keys from `/proc/cmdline`, then from the qemu fw_cfg file
//!    [`FW_CFG_CMDLINE`] when it exists (so tests can drive the unchanged ISO);
//! 2. mount `ferroclone.repo=` at `/repo`;
//! 3. run `ferroclone.run=` in this process, exactly as the CLI would, as if `--yes` was given;
//! 4. print one `FERROCLONE-RESULT: ok` or `FERROCLONE-RESULT: failed: <reason>` line on the
//!    console and in the kernel log (`/dev/kmsg`, so every console shows it);
//! 5. unmount the repository and power off or reboot (`ferroclone.after=`); for `shell` it
//!    returns and /init starts the interactive environment.
//!
//! `ferroclone boot --env` prints the settings /init needs as shell assignments.

pub mod cmdline;
pub mod repo;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser};

use crate::cli::{self, Cli, Command, Exit};
pub use cmdline::{After, BootConfig, RepoSpec};

/// The qemu fw_cfg file whose text is appended to the kernel command line.
pub const FW_CFG_CMDLINE: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/org.ferroclone/cmdline/raw";
/// Present only in the rescue environment; with it (or as PID 1), `boot` writes to /dev/kmsg
/// and powers off or reboots. Anywhere else those steps are only described.
pub const RELEASE_FILE: &str = "/etc/ferroclone-release";
/// Where the repository is mounted.
pub const REPO_DIR: &str = "/repo";
/// The result line's prefix (contract).
pub const RESULT_PREFIX: &str = "FERROCLONE-RESULT:";
/// How long to wait for the repository device to appear.
pub const REPO_WAIT: Duration = Duration::from_secs(30);

/// `ferroclone boot` arguments.
#[derive(Debug, Args)]
pub struct BootArgs {
    /// Print the settings as shell assignments for /init and exit.
    #[arg(long)]
    pub env: bool,
    /// Kernel command line to read.
    #[arg(long, default_value = "/proc/cmdline")]
    pub cmdline: PathBuf,
    /// More keys, read after the command line when the file exists.
    #[arg(long, default_value = FW_CFG_CMDLINE)]
    pub extra: Vec<PathBuf>,
}

/// True in the rescue environment (the ISO's initramfs).
pub fn in_rescue_env() -> bool {
    std::process::id() == 1 || Path::new(RELEASE_FILE).exists()
}

/// Reads the command line and the extra files into a config.
pub fn read_config(args: &BootArgs) -> BootConfig {
    let mut texts = Vec::new();
    let mut errors = Vec::new();
    match std::fs::read_to_string(&args.cmdline) {
        Ok(t) => texts.push(t),
        Err(e) => errors.push(format!("cannot read {}: {e}", args.cmdline.display())),
    }
    for p in &args.extra {
        if let Ok(t) = std::fs::read_to_string(p) {
            texts.push(t);
        }
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut c = BootConfig::parse(&refs);
    c.errors.extend(errors);
    c
}

/// The `boot` subcommand.
pub fn main(args: &BootArgs) -> Result<Exit> {
    let cfg = read_config(args);
    for w in &cfg.warnings {
        eprintln!("ferroclone boot: warning: {w}");
    }
    if args.env {
        print!("{}", cfg.to_env());
        return Ok(Exit::Ok);
    }
    if cfg.run.is_none() && cfg.errors.is_empty() {
        eprintln!("ferroclone boot: no ferroclone.run= on the kernel command line; nothing to do");
        return Ok(Exit::Ok);
    }
    let rescue = in_rescue_env();
    let (code, outcome) = unattended(&cfg);
    report(&outcome, rescue);
    after(cfg.after, rescue);
    Ok(code)
}

/// Runs the job; returns its exit code and `Ok(())` or the reason it failed.
pub fn unattended(cfg: &BootConfig) -> (Exit, Result<(), String>) {
    if !cfg.errors.is_empty() {
        return (Exit::Usage, Err(cfg.errors.join("; ")));
    }
    let Some(words) = cfg.run.as_ref() else {
        return (Exit::Usage, Err("no ferroclone.run= given".into()));
    };
    let job = match job_cli(words) {
        Ok(j) => j,
        Err(e) => return (Exit::Usage, Err(e)),
    };
    let mounted = match &cfg.repo {
        None => false,
        Some(spec) if spec.is_network() => {
            eprintln!("ferroclone boot: mounting repository {spec} at {REPO_DIR}");
            if let Err(e) = repo::mount_network(spec, Path::new(REPO_DIR), REPO_WAIT) {
                return (Exit::Failed, Err(e));
            }
            true
        }
        Some(spec) => {
            eprintln!("ferroclone boot: waiting for repository {spec}");
            let mounted = repo::wait_for(spec, REPO_WAIT).and_then(|c| {
                eprintln!(
                    "ferroclone boot: mounting {} ({}) at {REPO_DIR}",
                    c.dev.display(),
                    c.kind
                );
                repo::mount(&c, Path::new(REPO_DIR))
            });
            if let Err(e) = mounted {
                return (Exit::Failed, Err(e));
            }
            true
        }
    };
    eprintln!("ferroclone boot: running: ferroclone {}", words.join(" "));
    let (code, outcome) = run_job(job);
    nix::unistd::sync();
    if mounted {
        if let Err(e) = repo::unmount(Path::new(REPO_DIR)) {
            eprintln!("ferroclone boot: warning: {e}");
        }
    }
    (code, outcome)
}

/// Parses the job's words as a `ferroclone` command line, with `--yes` for commands that
/// write to a disk; refuses jobs that make no sense unattended.
pub fn job_cli(words: &[String]) -> Result<Cli, String> {
    let argv = std::iter::once("ferroclone".to_string()).chain(words.iter().cloned());
    let mut job = Cli::try_parse_from(argv).map_err(|e| {
        let text = e.to_string();
        let first = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("cannot parse");
        format!(
            "ferroclone.run: {}",
            first.trim().trim_start_matches("error: ")
        )
    })?;
    match &mut job.command {
        None => return Err("ferroclone.run names no command".into()),
        Some(Command::Boot(_)) | Some(Command::Tui { .. }) => {
            return Err("ferroclone.run cannot start `boot` or `tui`".into())
        }
        Some(Command::Restore(a)) => a.yes = true,
        Some(Command::Clone(a)) => a.yes = true,
        Some(_) => {}
    }
    Ok(job)
}

/// Runs a parsed job in this process, turning errors and panics into a reason.
pub fn run_job(job: Cli) -> (Exit, Result<(), String>) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cli::run(job)));
    match r {
        Ok(Ok(Exit::Ok)) => (Exit::Ok, Ok(())),
        Ok(Ok(code)) => (code, Err(format!("exit code {}", code as u8))),
        Ok(Err(e)) => {
            let code = cli::exit_code(&e);
            eprintln!("ferroclone: error: {e:#}");
            if code == Exit::Ok {
                (code, Ok(()))
            } else {
                (code, Err(format!("{e:#}")))
            }
        }
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            (Exit::Failed, Err(format!("internal error (panic): {msg}")))
        }
    }
}

/// The result line for an outcome: one line, whatever the reason holds.
pub fn result_line(outcome: &Result<(), String>) -> String {
    match outcome {
        Ok(()) => format!("{RESULT_PREFIX} ok"),
        Err(reason) => {
            let one: String = reason
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(400)
                .collect();
            format!("{RESULT_PREFIX} failed: {one}")
        }
    }
}

/// Prints the result line on stdout (the console) and, in the rescue environment, into the
/// kernel log at level 2, so it reaches every console whatever `console=` says.
fn report(outcome: &Result<(), String>, rescue: bool) {
    let line = result_line(outcome);
    let _ = std::io::stderr().flush();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    if rescue {
        if let Ok(mut k) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
            let _ = k.write_all(format!("<2>{line}\n").as_bytes());
        }
        let _ = std::fs::create_dir_all("/run/ferroclone");
        let _ = std::fs::write("/run/ferroclone/result", format!("{line}\n"));
    }
}

/// Powers off or reboots (rescue environment only); `shell` returns to /init.
fn after(what: After, rescue: bool) {
    if what == After::Shell {
        return;
    }
    if !rescue {
        eprintln!(
            "ferroclone boot: not in the rescue environment ({RELEASE_FILE} missing): not doing ferroclone.after={what}"
        );
        return;
    }
    use nix::sys::reboot::{reboot, RebootMode};
    nix::unistd::sync();
    // Let the console drain before the machine goes away.
    std::thread::sleep(Duration::from_millis(300));
    let mode = if what == After::Reboot {
        RebootMode::RB_AUTOBOOT
    } else {
        RebootMode::RB_POWER_OFF
    };
    let Err(e) = reboot(mode);
    eprintln!("ferroclone boot: {what} failed: {e}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        cmdline::split_words(s).unwrap()
    }

    #[test]
    fn jobs_get_yes_and_bad_jobs_are_refused() {
        let j = job_cli(&words("restore /repo/w /dev/nvme0n1")).unwrap();
        match j.command {
            Some(Command::Restore(a)) => {
                assert!(a.yes);
                assert_eq!(a.target, PathBuf::from("/dev/nvme0n1"));
            }
            other => panic!("{other:?}"),
        }
        let j = job_cli(&words("clone /dev/sda /dev/sdb")).unwrap();
        assert!(matches!(j.command, Some(Command::Clone(ref a)) if a.yes));
        let j = job_cli(&words("--threads 2 save /dev/vda /repo/x --split 1G")).unwrap();
        assert_eq!(j.threads, Some(2));
        assert!(matches!(j.command, Some(Command::Save(_))));
        for bad in [
            "",
            "frobnicate",
            "boot",
            "tui",
            "save /dev/vda",
            "save --bogus a b",
        ] {
            let e = job_cli(&words(bad)).unwrap_err();
            assert!(e.contains("ferroclone.run"), "{bad:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn result_lines() {
        assert_eq!(result_line(&Ok(())), "FERROCLONE-RESULT: ok");
        assert_eq!(
            result_line(&Err("disk full:\n  at /repo/x\tvolume 3".into())),
            "FERROCLONE-RESULT: failed: disk full: at /repo/x volume 3"
        );
        assert!(result_line(&Err("x".repeat(1000))).len() < 450);
    }

    #[test]
    fn config_errors_fail_without_running() {
        let c = BootConfig::parse(&["ferroclone.run=\"save a b\" ferroclone.after=later"]);
        let (code, r) = unattended(&c);
        assert_eq!(code, Exit::Usage);
        assert!(r.unwrap_err().contains("later"));
    }
}
