//! The interactive wizard (ratatui + crossterm): start menu, disk and image pickers, options,
//! a plan summary, typed confirmation, progress and result.
//!
//! - [`app`]: the state and its transitions (plain data, no I/O; unit-tested);
//! - [`ui`]: the screens, drawn from the state alone (snapshot-tested on `TestBackend`);
//! - [`data`]: what the pickers show, and the scans that gather it;
//! - [`job`]: scans and engine jobs on worker threads, reporting through one channel;
//! - this module: the terminal (raw mode, alternate screen, restored on exit and on panic) and
//!   the loop that feeds keys, ticks and job messages to the state and carries out its effects.

pub mod app;
pub mod data;
pub mod job;
pub mod ui;

#[cfg(test)]
mod tests;

use std::io::{self, Stdout, Write};
use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{unbounded, Receiver, Sender};
use crossterm::event::{self, Event};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use crossterm::{cursor, execute};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

use crate::engine::progress::request_cancel;
use crate::engine::save::rfc3339_now;
use app::{App, Effect, LogKind, Msg, Outcome, Setup};

/// How `ferroclone tui` was called.
#[derive(Debug, Clone, Default)]
pub struct TuiArgs {
    /// `--disk` files, shown first in the disk pickers.
    pub disks: Vec<PathBuf>,
    /// `--repo`: the repository, pre-filled.
    pub repo: Option<PathBuf>,
    /// Worker threads for jobs.
    pub threads: usize,
}

/// True when running as the rescue system (PID 1, or `FERROCLONE_RESCUE=1` set by its init):
/// only then do Reboot and Power off act.
pub fn is_rescue() -> bool {
    std::process::id() == 1 || std::env::var_os("FERROCLONE_RESCUE").is_some_and(|v| v == "1")
}

type Term = Terminal<CrosstermBackend<Stdout>>;

fn leave_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
}

fn enter_terminal() -> Result<Term> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            leave_terminal();
            previous(info);
        }));
    });
    enable_raw_mode().context("switching the terminal to raw mode")?;
    execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)
        .context("switching to the alternate screen")?;
    let mut t =
        Terminal::new(CrosstermBackend::new(io::stdout())).context("opening the terminal")?;
    t.clear()?;
    Ok(t)
}

/// Restores the terminal when dropped, whichever way the loop ends.
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        leave_terminal();
    }
}

/// Runs the wizard until the user leaves it.
pub fn run(args: TuiArgs) -> Result<crate::cli::Exit> {
    let setup = Setup {
        extra_disks: args.disks.clone(),
        repo: args.repo.clone(),
        threads: args.threads.max(1),
        rescue: is_rescue(),
        today: rfc3339_now().chars().take(10).collect(),
    };
    let mut app = App::new(setup);
    let mut term = enter_terminal()?;
    let guard = Guard;
    let (tx, rx) = unbounded();
    let result = event_loop(&mut app, &mut term, &tx, &rx);
    drop(term);
    drop(guard);
    result?;
    if let Some(m) = &app.farewell {
        eprintln!("{m}");
    }
    Ok(crate::cli::Exit::Ok)
}

fn event_loop(app: &mut App, term: &mut Term, tx: &Sender<Msg>, rx: &Receiver<Msg>) -> Result<()> {
    loop {
        term.draw(|f| ui::render(app, f))?;
        let mut effects = Vec::new();
        if event::poll(Duration::from_millis(150))? {
            match event::read()? {
                Event::Key(k) => effects.extend(app.update(Msg::Key(k))),
                Event::Resize(..) => term.autoresize()?,
                _ => {}
            }
        }
        while let Ok(m) = rx.try_recv() {
            let done = matches!(m, Msg::Done(_));
            effects.extend(app.update(m));
            if done {
                app.log_path = write_log(app);
            }
        }
        effects.extend(app.update(Msg::Tick(Instant::now())));
        for e in effects {
            perform(e, app, term, tx)?;
        }
        if app.quit {
            return Ok(());
        }
    }
}

fn perform(e: Effect, app: &mut App, term: &mut Term, tx: &Sender<Msg>) -> Result<()> {
    match e {
        Effect::ScanDisks { repo } => {
            job::scan_disks(app.setup.extra_disks.clone(), repo, tx.clone())
        }
        Effect::ScanRepo { dir, source } => job::scan_repo(dir, source, tx.clone()),
        Effect::Prepare(plan) => job::prepare(plan, tx.clone()),
        Effect::Run(j) => {
            app.log_path = None;
            job::spawn(j, tx.clone());
        }
        Effect::Cancel => request_cancel(),
        Effect::Shell => {
            leave_terminal();
            let shell = std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into());
            println!("ferroclone: starting {shell}; type exit to come back to the wizard.");
            let status = std::process::Command::new(&shell).status();
            *term = enter_terminal()?;
            if let Err(err) = status {
                app.notice = Some(app::Notice {
                    text: format!("cannot start {shell}: {err}"),
                    error: true,
                });
            }
        }
        Effect::Reboot | Effect::PowerOff => {
            let (cmd, what) = if matches!(e, Effect::Reboot) {
                ("reboot", "reboot")
            } else {
                ("poweroff", "power off")
            };
            leave_terminal();
            nix::unistd::sync();
            let status = std::process::Command::new(cmd).arg("-f").status();
            app.quit = true;
            app.farewell = Some(match status {
                Ok(s) if s.success() => format!("ferroclone: {what} requested"),
                Ok(s) => format!("ferroclone: {cmd} -f failed ({s})"),
                Err(err) => format!("ferroclone: cannot run {cmd}: {err}"),
            });
        }
    }
    Ok(())
}

/// Appends the finished job's log to `ferroclone.log` in the repository, or in the temporary
/// directory when the repository cannot be written; returns where it went.
fn write_log(app: &App) -> Option<PathBuf> {
    let mut text = format!(
        "== {} ferroclone {}: {}\n",
        rfc3339_now(),
        env!("CARGO_PKG_VERSION"),
        app.flow.title()
    );
    for l in &app.summary {
        text.push_str(&format!("plan: {}\n", l.text.trim()));
    }
    for l in &app.progress.log {
        let prefix = match l.kind {
            LogKind::Step => "",
            LogKind::Note => "note: ",
            LogKind::Warning => "warning: ",
            LogKind::Error => "error: ",
        };
        text.push_str(&format!("{prefix}{}\n", l.text));
    }
    text.push_str(&match &app.outcome {
        Some(o @ Outcome::Failed { .. }) => format!("result: {}\n", o.line()),
        Some(o) => format!("result: ok: {}\n", o.line()),
        None => "result: unknown\n".to_string(),
    });
    let mut places = Vec::new();
    if let Some(r) = app.current_repo() {
        places.push(r.path.join("ferroclone.log"));
    }
    places.push(std::env::temp_dir().join("ferroclone.log"));
    for p in places {
        let ok = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if ok.is_ok() {
            return Some(p);
        }
    }
    None
}
