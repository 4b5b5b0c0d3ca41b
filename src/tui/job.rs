//! Work off the UI thread: scans and engine jobs run on their own threads and report through
//! one channel of [`Msg`]s, which the UI loop drains between frames.

use std::path::PathBuf;
use std::time::Instant;

use crossbeam_channel::Sender;

use crate::engine::progress::{reset_cancel, Progress, ProgressEvent};
use crate::engine::restore::{self, Confirmed, RestorePlan};
use crate::engine::save::{self, SavePlan};
use crate::engine::verify::{self, Mismatch};
use crate::engine::Interrupted;
use crate::image::ImageError;
use crate::tui::app::{Flow, Msg, Outcome};
use crate::tui::data;

/// Forwards engine events into the UI's channel.
struct ToChannel(Sender<Msg>);

impl Progress for ToChannel {
    fn event(&self, ev: ProgressEvent) {
        // The UI may be gone (quitting); the job then just runs to its end or its cancel.
        let _ = self.0.send(Msg::Progress(ev));
    }
}

/// A job to run.
#[derive(Debug)]
pub enum Job {
    /// Save a disk.
    Save(SavePlan),
    /// Restore an image, after checking that the plan is still what the user confirmed.
    Restore {
        /// The plan.
        plan: RestorePlan,
        /// The user's agreement.
        confirmed: Confirmed,
        /// The summary lines the user saw; the job stops if the checks now say otherwise.
        expect: Vec<String>,
    },
    /// Verify an image.
    Verify {
        /// Image directory.
        image: PathBuf,
        /// Worker threads.
        threads: usize,
    },
}

/// The error in plain words, never empty, and what kind it is.
pub fn failure(op: Flow, err: &anyhow::Error, secs: f64) -> Outcome {
    let mut interrupted = false;
    let mut damaged = false;
    for c in err.chain() {
        interrupted |= c.downcast_ref::<Interrupted>().is_some();
        damaged |= c.downcast_ref::<Mismatch>().is_some()
            || c.downcast_ref::<ImageError>()
                .is_some_and(|e| e.is_damage());
    }
    let mut error = format!("{err:#}");
    if error.trim().is_empty() {
        error = "the job failed without saying why (an empty error message)".into();
    }
    Outcome::Failed {
        op,
        error,
        interrupted,
        damaged,
        secs,
    }
}

/// Runs `job` on a new thread; progress and the outcome arrive on `tx`.
pub fn spawn(job: Job, tx: Sender<Msg>) {
    reset_cancel();
    std::thread::spawn(move || {
        let progress = ToChannel(tx.clone());
        let t0 = Instant::now();
        let outcome = match job {
            Job::Save(plan) => match save::save(&plan, &progress) {
                Ok(r) => Outcome::Saved {
                    source: plan.source.clone(),
                    image: plan.image.clone(),
                    read: r.read_bytes,
                    written: r.image_bytes,
                    secs: t0.elapsed().as_secs_f64(),
                    verified: r.verified.map(|v| (v.blocks, v.bytes)),
                },
                Err(e) => failure(Flow::Save, &e, t0.elapsed().as_secs_f64()),
            },
            Job::Restore {
                plan,
                confirmed,
                expect,
            } => match restore_checked(&plan, confirmed, &expect, &progress) {
                Ok(r) => Outcome::Restored {
                    image: plan.image.clone(),
                    target: plan.target.clone(),
                    written: r.written,
                    secs: t0.elapsed().as_secs_f64(),
                },
                Err(e) => failure(Flow::Restore, &e, t0.elapsed().as_secs_f64()),
            },
            Job::Verify { image, threads } => {
                match verify::verify(&image, None, threads, &progress) {
                    Ok(r) => Outcome::Verified {
                        image,
                        blocks: r.blocks,
                        bytes: r.bytes,
                        volumes: r.volumes,
                        secs: t0.elapsed().as_secs_f64(),
                    },
                    Err(e) => failure(Flow::Verify, &e, t0.elapsed().as_secs_f64()),
                }
            }
        };
        let _ = tx.send(Msg::Done(outcome));
    });
}

fn restore_checked(
    plan: &RestorePlan,
    confirmed: Confirmed,
    expect: &[String],
    progress: &dyn Progress,
) -> anyhow::Result<restore::RestoreReport> {
    let prepared = restore::prepare(plan)?;
    if prepared.describe() != expect {
        anyhow::bail!(
            "the image or the target changed after the summary was shown; nothing was written \
             (go through the restore again)"
        );
    }
    restore::run(&prepared, confirmed, plan.threads, progress)
}

/// Scans the disks on a new thread.
pub fn scan_disks(extra: Vec<PathBuf>, repo: Option<PathBuf>, tx: Sender<Msg>) {
    std::thread::spawn(move || {
        let disks = data::scan_disks(&extra, repo.as_deref());
        let _ = tx.send(Msg::Disks(disks));
    });
}

/// Scans a repository on a new thread.
pub fn scan_repo(dir: PathBuf, source: Option<PathBuf>, tx: Sender<Msg>) {
    std::thread::spawn(move || {
        let result = data::scan_repo(&dir, source.as_deref());
        let _ = tx.send(Msg::Repo { path: dir, result });
    });
}

/// Checks a restore plan (everything but writing) on a new thread.
pub fn prepare(plan: RestorePlan, tx: Sender<Msg>) {
    std::thread::spawn(move || {
        let result = restore::prepare(&plan)
            .map(|p| p.describe())
            .map_err(|e| format!("{e:#}"));
        let _ = tx.send(Msg::Prepared(result));
    });
}
