//! Progress printers for the command line: a redrawn bar on a terminal, plain periodic lines
//! otherwise (serial consoles, logs).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::engine::progress::{Progress, ProgressEvent};
use crate::engine::save::human_bytes;

struct State {
    op: &'static str,
    job_total: u64,
    job_done: u64,
    step: String,
    started: Instant,
    last_print: Instant,
    bar_shown: bool,
}

/// Prints progress to stderr.
pub struct Printer {
    tty: bool,
    quiet: bool,
    interval: Duration,
    state: Mutex<State>,
}

impl Printer {
    /// A printer that draws a bar when stderr is a terminal.
    pub fn new(quiet: bool) -> Printer {
        let tty = std::io::stderr().is_terminal();
        Printer {
            tty,
            quiet,
            interval: if tty {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(5)
            },
            state: Mutex::new(State {
                op: "",
                job_total: 0,
                job_done: 0,
                step: String::new(),
                started: Instant::now(),
                last_print: Instant::now(),
                bar_shown: false,
            }),
        }
    }

    /// Ends the bar line, if one is shown.
    pub fn finish(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.bar_shown {
            eprintln!();
            s.bar_shown = false;
        }
    }
}

fn line(s: &State) -> String {
    let el = s.started.elapsed().as_secs_f64().max(0.001);
    let rate = s.job_done as f64 / el;
    let pct = if s.job_total > 0 {
        s.job_done as f64 * 100.0 / s.job_total as f64
    } else {
        100.0
    };
    let eta = if rate > 0.0 && s.job_total > s.job_done {
        format!(", ETA {}", hms((s.job_total - s.job_done) as f64 / rate))
    } else {
        String::new()
    };
    format!(
        "{}: {}: {:5.1}% ({} of {}), {}/s, elapsed {}{}",
        s.op,
        s.step,
        pct,
        human_bytes(s.job_done),
        human_bytes(s.job_total),
        human_bytes(rate as u64),
        hms(el),
        eta
    )
}

fn hms(secs: f64) -> String {
    let s = secs.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

impl Progress for Printer {
    fn event(&self, ev: ProgressEvent) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        let clear = |s: &mut State, err: &mut std::io::StderrLock<'_>| {
            if s.bar_shown {
                let _ = write!(err, "\r\x1b[2K");
                s.bar_shown = false;
            }
        };
        match ev {
            ProgressEvent::Job { op, total } => {
                s.op = op;
                s.job_total = total;
                s.job_done = 0;
                s.started = Instant::now();
                s.step.clear();
            }
            ProgressEvent::Step { label, .. } => {
                s.step = label;
                if !self.quiet {
                    clear(&mut s, &mut err);
                    if !self.tty {
                        let _ = writeln!(err, "{}", line(&s));
                        s.last_print = Instant::now();
                    }
                }
            }
            ProgressEvent::Advance { bytes } => {
                s.job_done += bytes;
                if !self.quiet && s.last_print.elapsed() >= self.interval {
                    s.last_print = Instant::now();
                    if self.tty {
                        let l = line(&s);
                        let _ = write!(err, "\r\x1b[2K{l}");
                        s.bar_shown = true;
                    } else {
                        let _ = writeln!(err, "{}", line(&s));
                    }
                }
            }
            ProgressEvent::Warning(w) => {
                clear(&mut s, &mut err);
                let _ = writeln!(err, "warning: {w}");
            }
            ProgressEvent::Note(n) => {
                if !self.quiet {
                    clear(&mut s, &mut err);
                    let _ = writeln!(err, "{n}");
                }
            }
        }
    }
}
