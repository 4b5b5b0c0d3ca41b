//! The wizard's state and its transitions. Plain data, no I/O: [`App::update`] takes a
//! message (a key, a tick, a scan result, a progress event, a job's outcome) and returns the
//! effects the runtime must carry out (scan, check, run, cancel). The screens render from this
//! state alone, so every screen and every transition is testable without a terminal.

use std::path::PathBuf;
use std::time::Instant;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::cli::parse_size;
use crate::engine::progress::ProgressEvent;
use crate::engine::restore::{Confirmed, Fit, RestorePlan};
use crate::engine::save::{human_bytes, SavePlan};
use crate::image::format::MIN_VOLUME_SIZE;
use crate::tui::data::{DiskInfo, ImageEntry, RepoInfo};
use crate::tui::job::Job;

/// What the user is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Save a disk into an image.
    Save,
    /// Restore an image onto a disk.
    Restore,
    /// Check an image.
    Verify,
}

impl Flow {
    /// Title of the flow.
    pub fn title(self) -> &'static str {
        match self {
            Flow::Save => "Save a disk",
            Flow::Restore => "Restore an image",
            Flow::Verify => "Verify an image",
        }
    }

    /// The noun for messages: "save", "restore", "verification".
    pub fn noun(self) -> &'static str {
        match self {
            Flow::Save => "save",
            Flow::Restore => "restore",
            Flow::Verify => "verification",
        }
    }
}

/// The screens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// The start menu.
    Start,
    /// Choose a disk (the source of a save, the target of a restore).
    Disks,
    /// Choose the image repository.
    Repo,
    /// Choose an image.
    Images,
    /// Partitions, split size, verification.
    Options,
    /// What will happen.
    Summary,
    /// Type the target's name.
    Confirm,
    /// The job runs.
    Progress,
    /// How it went.
    Result,
}

/// The start menu's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MenuItem {
    /// Save.
    Save,
    /// Restore.
    Restore,
    /// Clone (not available yet).
    Clone,
    /// Verify.
    Verify,
    /// A shell.
    Shell,
    /// Reboot.
    Reboot,
    /// Power off.
    PowerOff,
    /// Leave.
    Quit,
}

/// The start menu, in order.
pub const MENU: [MenuItem; 8] = [
    MenuItem::Save,
    MenuItem::Restore,
    MenuItem::Clone,
    MenuItem::Verify,
    MenuItem::Shell,
    MenuItem::Reboot,
    MenuItem::PowerOff,
    MenuItem::Quit,
];

impl MenuItem {
    /// The entry's text.
    pub fn label(self) -> &'static str {
        match self {
            MenuItem::Save => "Save a disk to an image",
            MenuItem::Restore => "Restore an image to a disk",
            MenuItem::Clone => "Clone a disk to a disk",
            MenuItem::Verify => "Verify an image",
            MenuItem::Shell => "Shell",
            MenuItem::Reboot => "Reboot",
            MenuItem::PowerOff => "Power off",
            MenuItem::Quit => "Quit",
        }
    }

    /// One line about it.
    pub fn about(self) -> &'static str {
        match self {
            MenuItem::Save => {
                "Copy a whole disk, or chosen partitions, into an image directory. Only used \
                 blocks are stored, compressed and checksummed."
            }
            MenuItem::Restore => {
                "Write an image back onto a disk (the same one or another of at least the same \
                 size), or only chosen partitions."
            }
            MenuItem::Clone => "Not available yet: save the disk, then restore the image.",
            MenuItem::Verify => "Read every block of an image and check its checksums.",
            MenuItem::Shell => "A command shell; type exit to come back here.",
            MenuItem::Reboot => "Restart the machine.",
            MenuItem::PowerOff => "Turn the machine off.",
            MenuItem::Quit => "Leave ferroclone.",
        }
    }
}

/// A message shown under the screen until the next key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The text.
    pub text: String,
    /// An error (red) rather than a note.
    pub error: bool,
}

/// A yes/no question over the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Popup {
    /// Stop the running job?
    CancelJob,
    /// Reboot now?
    Reboot,
    /// Power off now?
    PowerOff,
}

/// An option field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The new image's name.
    Name,
    /// Partition (index into `Options::parts`).
    Part(usize),
    /// Volume size.
    Split,
    /// Verify after saving.
    Verify,
}

/// A partition that can be included or left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartChoice {
    /// Its number.
    pub number: u32,
    /// What it is, in words.
    pub about: String,
    /// Included.
    pub chosen: bool,
}

/// The options screen's values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// The focused field (index into `App::fields()`).
    pub focus: usize,
    /// New image name (save).
    pub name: String,
    /// Partitions.
    pub parts: Vec<PartChoice>,
    /// Volume size as typed.
    pub split: String,
    /// Verify after saving.
    pub verify: bool,
}

/// One line of the plan summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryLine {
    /// The text.
    pub text: String,
    /// Something is destroyed or at risk: shown in red.
    pub danger: bool,
}

/// Kinds of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// A step started.
    Step,
    /// A note.
    Note,
    /// A warning.
    Warning,
    /// The error that ended the job.
    Error,
}

/// One line of the job's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Kind.
    pub kind: LogKind,
    /// Text.
    pub text: String,
}

/// A running job's progress, from its events.
#[derive(Debug, Clone, Default)]
pub struct ProgressState {
    /// `save`, `verify`, `restore` (a save is followed by a verify).
    pub op: String,
    /// Bytes of work in the current phase.
    pub total: u64,
    /// Done in the current phase.
    pub done: u64,
    /// Current step.
    pub step: String,
    /// Bytes in the current step.
    pub step_total: u64,
    /// Done in the current step.
    pub step_done: u64,
    /// When the whole run started.
    pub run_started: Option<Instant>,
    /// When the current phase started.
    pub phase_started: Option<Instant>,
    /// The latest tick.
    pub now: Option<Instant>,
    /// Steps, warnings and notes.
    pub log: Vec<LogLine>,
    /// A stop was asked for.
    pub cancelling: bool,
}

impl ProgressState {
    /// Seconds since the run started.
    pub fn elapsed(&self) -> f64 {
        match (self.run_started, self.now) {
            (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
            _ => 0.0,
        }
    }

    /// Bytes per second in the current phase.
    pub fn rate(&self) -> f64 {
        match (self.phase_started, self.now) {
            (Some(a), Some(b)) => {
                let s = b.saturating_duration_since(a).as_secs_f64();
                if s > 0.05 {
                    self.done as f64 / s
                } else {
                    0.0
                }
            }
            _ => 0.0,
        }
    }

    /// Seconds left in the current phase, when it can be told.
    pub fn eta(&self) -> Option<f64> {
        let r = self.rate();
        (r > 0.0 && self.total >= self.done).then(|| (self.total - self.done) as f64 / r)
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A save (and its verification) finished.
    Saved {
        /// The disk read.
        source: PathBuf,
        /// The image written.
        image: PathBuf,
        /// Bytes read from the disk.
        read: u64,
        /// Bytes written into the image.
        written: u64,
        /// Seconds taken.
        secs: f64,
        /// Blocks and bytes verified, if verified.
        verified: Option<(u64, u64)>,
    },
    /// A restore finished.
    Restored {
        /// The image read.
        image: PathBuf,
        /// The disk written.
        target: PathBuf,
        /// Bytes written.
        written: u64,
        /// Seconds taken.
        secs: f64,
    },
    /// A verification found everything sound.
    Verified {
        /// The image.
        image: PathBuf,
        /// Blocks checked.
        blocks: u64,
        /// Bytes checked.
        bytes: u64,
        /// Volumes checked.
        volumes: usize,
        /// Seconds taken.
        secs: f64,
    },
    /// The job failed or was stopped.
    Failed {
        /// Which job.
        op: Flow,
        /// The error, in plain words (never empty).
        error: String,
        /// Stopped by the user.
        interrupted: bool,
        /// The image is damaged or differs.
        damaged: bool,
        /// Seconds taken.
        secs: f64,
    },
}

impl Outcome {
    /// The outcome in one line, for the log file.
    pub fn line(&self) -> String {
        match self {
            Outcome::Saved {
                source,
                image,
                read,
                written,
                secs,
                verified,
            } => format!(
                "saved {} into {}: {} read, {} written, {secs:.1} s{}",
                source.display(),
                image.display(),
                human_bytes(*read),
                human_bytes(*written),
                if verified.is_some() { ", verified" } else { "" }
            ),
            Outcome::Restored {
                image,
                target,
                written,
                secs,
            } => format!(
                "restored {} onto {}: {} written, {secs:.1} s",
                image.display(),
                target.display(),
                human_bytes(*written)
            ),
            Outcome::Verified {
                image,
                blocks,
                bytes,
                secs,
                ..
            } => format!(
                "{} is sound: {blocks} blocks, {} checked, {secs:.1} s",
                image.display(),
                human_bytes(*bytes)
            ),
            Outcome::Failed {
                op,
                error,
                interrupted,
                ..
            } => {
                if *interrupted {
                    format!("the {} was stopped", op.noun())
                } else {
                    format!("the {} failed: {error}", op.noun())
                }
            }
        }
    }
}

/// Input to [`App::update`].
#[derive(Debug)]
pub enum Msg {
    /// A key was pressed.
    Key(KeyEvent),
    /// Time passed (about 5 times a second).
    Tick(Instant),
    /// The disks were scanned.
    Disks(Vec<DiskInfo>),
    /// A repository was scanned.
    Repo {
        /// The directory scanned.
        path: PathBuf,
        /// What was found, or why not.
        result: Result<RepoInfo, String>,
    },
    /// A restore was checked: the plan's lines, or why it cannot be done.
    Prepared(Result<Vec<String>, String>),
    /// The running job reported progress.
    Progress(ProgressEvent),
    /// The running job ended.
    Done(Outcome),
}

/// What the runtime must do for the state machine.
#[derive(Debug)]
pub enum Effect {
    /// Scan the disks, marking the one holding `repo`.
    ScanDisks {
        /// The repository, if chosen.
        repo: Option<PathBuf>,
    },
    /// Scan a repository.
    ScanRepo {
        /// The directory.
        dir: PathBuf,
        /// The disk about to be saved.
        source: Option<PathBuf>,
    },
    /// Check a restore without writing.
    Prepare(RestorePlan),
    /// Start a job.
    Run(Job),
    /// Ask the running job to stop.
    Cancel,
    /// Suspend the wizard and run a shell.
    Shell,
    /// Reboot the machine (rescue system only).
    Reboot,
    /// Power the machine off (rescue system only).
    PowerOff,
}

/// How the wizard was started.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// `--disk` files.
    pub extra_disks: Vec<PathBuf>,
    /// `--repo`.
    pub repo: Option<PathBuf>,
    /// Worker threads.
    pub threads: usize,
    /// Running as the rescue system (may reboot and power off).
    pub rescue: bool,
    /// Today's date, `YYYY-MM-DD`, for default image names.
    pub today: String,
}

/// The whole state.
#[derive(Debug)]
pub struct App {
    /// How it was started.
    pub setup: Setup,
    /// The screen shown.
    pub screen: Screen,
    /// The flow under way.
    pub flow: Flow,
    /// Start menu cursor.
    pub menu: usize,
    /// A note or error under the screen.
    pub notice: Option<Notice>,
    /// A yes/no question.
    pub popup: Option<Popup>,
    /// Work under way that the user waits for ("Scanning disks").
    pub busy: Option<String>,
    /// The disks, once scanned.
    pub disks: Vec<DiskInfo>,
    /// Disk picker cursor.
    pub disk_cursor: usize,
    /// The disk to save.
    pub source: Option<DiskInfo>,
    /// The disk to write.
    pub target: Option<DiskInfo>,
    /// The repository path as typed.
    pub repo_input: String,
    /// The last repository scan (for `repo.path`).
    pub repo: Option<RepoInfo>,
    /// Why the last repository scan failed.
    pub repo_error: Option<String>,
    /// Go on once the repository scan succeeds.
    pub repo_proceed: bool,
    /// Image picker cursor.
    pub image_cursor: usize,
    /// The image chosen.
    pub image: Option<ImageEntry>,
    /// Options.
    pub options: Options,
    /// The plan summary.
    pub summary: Vec<SummaryLine>,
    /// The restore plan's lines as checked (what the user confirms).
    pub prepared: Vec<String>,
    /// Typed confirmation.
    pub confirm_input: String,
    /// The job's progress.
    pub progress: ProgressState,
    /// How the last job ended.
    pub outcome: Option<Outcome>,
    /// Where the job's log is written (set by the runtime).
    pub log_path: Option<PathBuf>,
    /// Leave the wizard.
    pub quit: bool,
    /// Printed after leaving.
    pub farewell: Option<String>,
}

fn ctrl(k: &KeyEvent, c: char) -> bool {
    k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char(c)
}

/// Edits a text field with a key; true when the key was used.
fn edit(s: &mut String, k: &KeyEvent) -> bool {
    if ctrl(k, 'u') {
        s.clear();
        return true;
    }
    match k.code {
        KeyCode::Backspace => {
            s.pop();
            true
        }
        KeyCode::Char(c)
            if !k.modifiers.contains(KeyModifiers::CONTROL)
                && !k.modifiers.contains(KeyModifiers::ALT)
                && !c.is_control() =>
        {
            if s.chars().count() < 255 {
                s.push(c);
            }
            true
        }
        _ => false,
    }
}

fn up_down(cursor: &mut usize, len: usize, k: &KeyEvent) -> bool {
    if len == 0 {
        return false;
    }
    match k.code {
        KeyCode::Up | KeyCode::Char('k') => *cursor = cursor.checked_sub(1).unwrap_or(len - 1),
        KeyCode::Down | KeyCode::Char('j') => *cursor = (*cursor + 1) % len,
        KeyCode::Home => *cursor = 0,
        KeyCode::End => *cursor = len - 1,
        KeyCode::PageUp => *cursor = cursor.saturating_sub(10),
        KeyCode::PageDown => *cursor = (*cursor + 10).min(len - 1),
        _ => return false,
    }
    true
}

/// A partition in one aligned line: `ntfs    Windows         168.0 MiB,   73.7 MiB used`.
fn part_about(fs: &str, label: &str, size: u64, bytes: u64, what: &str) -> String {
    let label: String = label.chars().take(16).collect();
    format!(
        "{fs:<7} {label:<16} {:>10}, {:>10} {what}",
        human_bytes(size),
        human_bytes(bytes)
    )
}

/// The default name of a new image: the disk's name without `.img`, and the date.
pub fn default_image_name(disk: &DiskInfo, today: &str, taken: &[String]) -> String {
    let mut stem = disk.name.clone();
    for ext in [".img", ".raw", ".bin"] {
        if let Some(s) = stem.strip_suffix(ext) {
            stem = s.to_string();
        }
    }
    let base = format!("{stem}-{today}");
    let mut name = base.clone();
    let mut n = 2;
    while taken
        .iter()
        .any(|t| t == &name || *t == format!("{name}.partial"))
    {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

impl App {
    /// A wizard on its start menu.
    pub fn new(setup: Setup) -> App {
        let repo_input = setup
            .repo
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        App {
            setup,
            screen: Screen::Start,
            flow: Flow::Save,
            menu: 0,
            notice: None,
            popup: None,
            busy: None,
            disks: Vec::new(),
            disk_cursor: 0,
            source: None,
            target: None,
            repo_input,
            repo: None,
            repo_error: None,
            repo_proceed: false,
            image_cursor: 0,
            image: None,
            options: Options::default(),
            summary: Vec::new(),
            prepared: Vec::new(),
            confirm_input: String::new(),
            progress: ProgressState::default(),
            outcome: None,
            log_path: None,
            quit: false,
            farewell: None,
        }
    }

    /// The repository scan, if it is for the path now typed.
    pub fn current_repo(&self) -> Option<&RepoInfo> {
        self.repo
            .as_ref()
            .filter(|r| r.path.as_os_str() == self.repo_input.as_str())
    }

    /// A warning when the repository has less free space than the save reads.
    pub fn space_warning(&self) -> Option<String> {
        if self.flow != Flow::Save {
            return None;
        }
        let repo = self.current_repo()?;
        let src = self.source.as_ref()?;
        let need = if self.screen == Screen::Summary || self.screen == Screen::Options {
            self.chosen_used(src)
        } else {
            src.used()
        };
        (repo.free < need).then(|| {
            format!(
                "only {} free in {}, and the save reads up to {} (compression usually makes \
                 the image smaller, but it may not fit)",
                human_bytes(repo.free),
                repo.path.display(),
                human_bytes(need)
            )
        })
    }

    fn chosen_used(&self, src: &DiskInfo) -> u64 {
        if src.partitions.is_empty() || self.options.parts.is_empty() {
            return src.used();
        }
        src.partitions
            .iter()
            .filter(|p| {
                self.options
                    .parts
                    .iter()
                    .any(|c| c.number == p.number && c.chosen)
            })
            .map(|p| p.used)
            .sum()
    }

    /// The option fields of the current flow, in order.
    pub fn fields(&self) -> Vec<Field> {
        let parts = (0..self.options.parts.len()).map(Field::Part);
        match self.flow {
            Flow::Save => std::iter::once(Field::Name)
                .chain(parts)
                .chain([Field::Split, Field::Verify])
                .collect(),
            _ => parts.collect(),
        }
    }

    /// The keys of the current screen and what they do, for the help line.
    pub fn help(&self) -> Vec<(&'static str, &'static str)> {
        if self.busy.is_some() {
            return vec![("Ctrl-C", "quit")];
        }
        match self.popup {
            Some(Popup::CancelJob) => return vec![("y", "stop the job"), ("n/Esc", "go on")],
            Some(_) => return vec![("y", "yes"), ("n/Esc", "no")],
            None => {}
        }
        match self.screen {
            Screen::Start => vec![("Up/Down", "move"), ("Enter", "choose"), ("q", "quit")],
            Screen::Disks => vec![
                ("Up/Down", "move"),
                ("Enter", "choose"),
                ("r", "rescan"),
                ("Esc", "back"),
            ],
            Screen::Repo => vec![
                ("type", "path"),
                ("Ctrl-U", "clear"),
                ("Enter", "use it"),
                ("Esc", "back"),
            ],
            Screen::Images => vec![
                ("Up/Down", "move"),
                ("Enter", "choose"),
                ("r", "rescan"),
                ("Esc", "back"),
            ],
            Screen::Options => vec![
                ("Up/Down", "field"),
                ("Space", "toggle"),
                ("type", "edit"),
                ("Enter", "go on"),
                ("Esc", "back"),
            ],
            Screen::Summary => match self.flow {
                Flow::Restore => vec![("Enter", "go on to confirm"), ("Esc", "back")],
                _ => vec![("Enter", "start"), ("Esc", "back")],
            },
            Screen::Confirm => vec![
                ("type", "the name"),
                ("Enter", "overwrite"),
                ("Esc", "back"),
            ],
            Screen::Progress => vec![("Esc/Ctrl-C", "stop")],
            Screen::Result => vec![("Enter", "start menu"), ("q", "quit")],
        }
    }

    fn note(&mut self, text: impl Into<String>) {
        self.notice = Some(Notice {
            text: text.into(),
            error: false,
        });
    }

    fn error(&mut self, text: impl Into<String>) {
        self.notice = Some(Notice {
            text: text.into(),
            error: true,
        });
    }

    fn scan_disks(&mut self) -> Vec<Effect> {
        self.busy = Some("Scanning the disks...".into());
        // Never show (or let anyone pick from) a list that may be out of date.
        self.disks.clear();
        let repo = match self.flow {
            Flow::Save => (!self.repo_input.is_empty()).then(|| PathBuf::from(&self.repo_input)),
            _ => self.current_repo().map(|r| r.path.clone()),
        };
        vec![Effect::ScanDisks { repo }]
    }

    fn scan_repo(&mut self, proceed: bool) -> Vec<Effect> {
        if self.repo_input.trim().is_empty() {
            self.error("type the path of a mounted directory to keep the images in");
            return Vec::new();
        }
        self.busy = Some("Reading the repository...".into());
        self.repo_proceed = proceed;
        vec![Effect::ScanRepo {
            dir: PathBuf::from(&self.repo_input),
            source: match self.flow {
                Flow::Save => self.source.as_ref().map(|d| d.path.clone()),
                _ => None,
            },
        }]
    }

    /// Back to the start menu, forgetting the flow's choices (not the repository).
    fn back_to_start(&mut self) {
        self.screen = Screen::Start;
        self.source = None;
        self.target = None;
        self.image = None;
        self.options = Options::default();
        self.summary.clear();
        self.prepared.clear();
        self.confirm_input.clear();
        self.popup = None;
    }

    /// Handles one message.
    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Key(k) => {
                if k.kind == crossterm::event::KeyEventKind::Release {
                    return Vec::new();
                }
                self.key(k)
            }
            Msg::Tick(now) => {
                self.progress.now = Some(now);
                Vec::new()
            }
            Msg::Disks(d) => {
                self.busy = None;
                self.disks = d;
                self.disk_cursor = self.disk_cursor.min(self.disks.len().saturating_sub(1));
                if self.disks.is_empty() {
                    self.error("no disks found; plug one in and press r to scan again");
                }
                Vec::new()
            }
            Msg::Repo { path, result } => {
                self.busy = None;
                match result {
                    Ok(info) => {
                        self.repo_error = None;
                        self.repo = Some(info);
                        let ok = path.as_os_str() == self.repo_input.as_str()
                            && self.repo.as_ref().is_some_and(|r| r.conflict.is_none())
                            && self.space_warning().is_none();
                        if self.repo_proceed && ok && self.screen == Screen::Repo {
                            self.repo_proceed = false;
                            return self.repo_next();
                        }
                    }
                    Err(e) => {
                        self.repo = None;
                        self.repo_error = Some(e);
                    }
                }
                self.repo_proceed = false;
                Vec::new()
            }
            Msg::Prepared(result) => {
                self.busy = None;
                match result {
                    Ok(lines) => {
                        self.summary = self.restore_summary(&lines);
                        self.prepared = lines;
                        self.screen = Screen::Summary;
                    }
                    Err(e) => self.error(format!("cannot restore: {e}")),
                }
                Vec::new()
            }
            Msg::Progress(ev) => {
                self.on_progress(ev);
                Vec::new()
            }
            Msg::Done(outcome) => {
                if let Outcome::Failed { error, .. } = &outcome {
                    self.progress.log.push(LogLine {
                        kind: LogKind::Error,
                        text: error.clone(),
                    });
                }
                self.outcome = Some(outcome);
                self.popup = None;
                self.screen = Screen::Result;
                Vec::new()
            }
        }
    }

    fn on_progress(&mut self, ev: ProgressEvent) {
        let p = &mut self.progress;
        match ev {
            ProgressEvent::Job { op, total } => {
                p.op = op.to_string();
                p.total = total;
                p.done = 0;
                p.step.clear();
                p.step_total = 0;
                p.step_done = 0;
                p.phase_started = p.now;
                if p.run_started.is_none() {
                    p.run_started = p.now;
                }
            }
            ProgressEvent::Step { label, total } => {
                p.log.push(LogLine {
                    kind: LogKind::Step,
                    text: format!("{}: {label}", p.op),
                });
                p.step = label;
                p.step_total = total;
                p.step_done = 0;
            }
            ProgressEvent::Advance { bytes } => {
                p.done = p.done.saturating_add(bytes);
                p.step_done = p.step_done.saturating_add(bytes);
            }
            ProgressEvent::Warning(w) => p.log.push(LogLine {
                kind: LogKind::Warning,
                text: w,
            }),
            ProgressEvent::Note(n) => p.log.push(LogLine {
                kind: LogKind::Note,
                text: n,
            }),
        }
    }

    fn key(&mut self, k: KeyEvent) -> Vec<Effect> {
        if self.busy.is_some() {
            if ctrl(&k, 'c') {
                self.quit = true;
            }
            return Vec::new();
        }
        if let Some(p) = self.popup {
            return self.popup_key(p, k);
        }
        if self.screen == Screen::Progress {
            if (k.code == KeyCode::Esc || ctrl(&k, 'c')) && !self.progress.cancelling {
                self.popup = Some(Popup::CancelJob);
            }
            return Vec::new();
        }
        if ctrl(&k, 'c') {
            self.quit = true;
            return Vec::new();
        }
        self.notice = None;
        match self.screen {
            Screen::Start => self.start_key(k),
            Screen::Disks => self.disks_key(k),
            Screen::Repo => self.repo_key(k),
            Screen::Images => self.images_key(k),
            Screen::Options => self.options_key(k),
            Screen::Summary => self.summary_key(k),
            Screen::Confirm => self.confirm_key(k),
            Screen::Progress => Vec::new(),
            Screen::Result => {
                match k.code {
                    KeyCode::Enter | KeyCode::Esc => self.back_to_start(),
                    KeyCode::Char('q') => self.quit = true,
                    _ => {}
                }
                Vec::new()
            }
        }
    }

    fn popup_key(&mut self, p: Popup, k: KeyEvent) -> Vec<Effect> {
        let yes = matches!(k.code, KeyCode::Char('y') | KeyCode::Char('Y'))
            || (p == Popup::CancelJob && ctrl(&k, 'c'));
        let no = matches!(
            k.code,
            KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc
        );
        if no {
            self.popup = None;
            return Vec::new();
        }
        if !yes {
            return Vec::new();
        }
        self.popup = None;
        match p {
            Popup::CancelJob => {
                self.progress.cancelling = true;
                self.progress.log.push(LogLine {
                    kind: LogKind::Note,
                    text: "stopping at the next block...".into(),
                });
                vec![Effect::Cancel]
            }
            Popup::Reboot => vec![Effect::Reboot],
            Popup::PowerOff => vec![Effect::PowerOff],
        }
    }

    fn start_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        if up_down(&mut self.menu, MENU.len(), &k) {
            return Vec::new();
        }
        match k.code {
            KeyCode::Char('q') | KeyCode::Esc => {
                self.quit = true;
                Vec::new()
            }
            KeyCode::Char(c @ '1'..='8') => {
                self.menu = (c as usize) - ('1' as usize);
                Vec::new()
            }
            KeyCode::Enter => self.choose(MENU[self.menu.min(MENU.len() - 1)]),
            _ => Vec::new(),
        }
    }

    fn choose(&mut self, item: MenuItem) -> Vec<Effect> {
        match item {
            MenuItem::Save => {
                self.back_to_start();
                self.flow = Flow::Save;
                self.screen = Screen::Disks;
                self.disk_cursor = 0;
                self.scan_disks()
            }
            MenuItem::Restore | MenuItem::Verify => {
                self.back_to_start();
                self.flow = if item == MenuItem::Restore {
                    Flow::Restore
                } else {
                    Flow::Verify
                };
                self.screen = Screen::Repo;
                if self.repo_input.is_empty() {
                    Vec::new()
                } else {
                    self.scan_repo(false)
                }
            }
            MenuItem::Clone => {
                self.note(
                    "Clone is not available yet: save the disk to an image, then restore the \
                     image onto the other disk.",
                );
                Vec::new()
            }
            MenuItem::Shell => vec![Effect::Shell],
            MenuItem::Reboot | MenuItem::PowerOff => {
                if self.setup.rescue {
                    self.popup = Some(if item == MenuItem::Reboot {
                        Popup::Reboot
                    } else {
                        Popup::PowerOff
                    });
                } else {
                    self.quit = true;
                    self.farewell = Some(format!(
                        "ferroclone: not running as the rescue system, so it does not {} this \
                         machine; use the system's own command.",
                        if item == MenuItem::Reboot {
                            "reboot"
                        } else {
                            "power off"
                        }
                    ));
                }
                Vec::new()
            }
            MenuItem::Quit => {
                self.quit = true;
                Vec::new()
            }
        }
    }

    fn disks_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        if up_down(&mut self.disk_cursor, self.disks.len(), &k) {
            return Vec::new();
        }
        match k.code {
            KeyCode::Esc => {
                self.screen = match self.flow {
                    Flow::Save => Screen::Start,
                    _ => Screen::Images,
                };
                Vec::new()
            }
            KeyCode::Char('r') => self.scan_disks(),
            KeyCode::Enter => {
                let Some(d) = self.disks.get(self.disk_cursor).cloned() else {
                    self.error("no disk to choose; press r to scan again");
                    return Vec::new();
                };
                if self.flow == Flow::Save {
                    if let Some(why) = d.not_a_source() {
                        self.error(why);
                        return Vec::new();
                    }
                    self.source = Some(d);
                    self.screen = Screen::Repo;
                    if self.repo_input.is_empty() {
                        Vec::new()
                    } else {
                        self.scan_repo(false)
                    }
                } else {
                    if let Some(why) = d.not_a_target() {
                        self.error(why);
                        return Vec::new();
                    }
                    self.options = self.restore_options();
                    self.target = Some(d);
                    self.screen = Screen::Options;
                    Vec::new()
                }
            }
            _ => Vec::new(),
        }
    }

    fn repo_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        match k.code {
            KeyCode::Esc => {
                self.screen = match self.flow {
                    Flow::Save => Screen::Disks,
                    _ => Screen::Start,
                };
                Vec::new()
            }
            KeyCode::Enter => {
                let ready = self.current_repo().is_some_and(|r| r.conflict.is_none());
                if ready {
                    self.repo_next()
                } else if let Some(c) = self.current_repo().and_then(|r| r.conflict.clone()) {
                    self.error(c);
                    Vec::new()
                } else {
                    self.scan_repo(true)
                }
            }
            _ => {
                edit(&mut self.repo_input, &k);
                Vec::new()
            }
        }
    }

    /// From the repository screen to the next one.
    fn repo_next(&mut self) -> Vec<Effect> {
        match self.flow {
            Flow::Save => {
                self.options = self.save_options();
                self.screen = Screen::Options;
            }
            _ => {
                self.image_cursor = 0;
                self.screen = Screen::Images;
                if self.current_repo().is_some_and(|r| r.images.is_empty()) {
                    self.note("there are no images in this repository");
                }
            }
        }
        Vec::new()
    }

    fn images(&self) -> &[ImageEntry] {
        self.current_repo()
            .map(|r| r.images.as_slice())
            .unwrap_or(&[])
    }

    fn images_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        let n = self.images().len();
        if up_down(&mut self.image_cursor, n, &k) {
            return Vec::new();
        }
        match k.code {
            KeyCode::Esc => {
                self.screen = Screen::Repo;
                Vec::new()
            }
            KeyCode::Char('r') => self.scan_repo(false),
            KeyCode::Enter => {
                let Some(img) = self.images().get(self.image_cursor).cloned() else {
                    self.error("there is no image to choose in this repository");
                    return Vec::new();
                };
                if !img.complete {
                    self.error(format!(
                        "{} is {}; it cannot be {}",
                        img.name,
                        img.problem.as_deref().unwrap_or("incomplete"),
                        if self.flow == Flow::Restore {
                            "restored"
                        } else {
                            "verified"
                        }
                    ));
                    return Vec::new();
                }
                self.image = Some(img);
                if self.flow == Flow::Restore {
                    self.screen = Screen::Disks;
                    self.disk_cursor = 0;
                    self.scan_disks()
                } else {
                    self.summary = self.verify_summary();
                    self.screen = Screen::Summary;
                    Vec::new()
                }
            }
            _ => Vec::new(),
        }
    }

    fn save_options(&self) -> Options {
        let taken: Vec<String> = self
            .current_repo()
            .map(|r| r.images.iter().map(|i| i.name.clone()).collect())
            .unwrap_or_default();
        let (name, parts) = match &self.source {
            Some(d) => (
                default_image_name(d, &self.setup.today, &taken),
                d.partitions
                    .iter()
                    .map(|p| PartChoice {
                        number: p.number,
                        about: part_about(&p.fs, &p.label, p.size, p.used, "used"),
                        chosen: true,
                    })
                    .collect(),
            ),
            None => (String::new(), Vec::new()),
        };
        Options {
            focus: 0,
            name,
            parts,
            split: "4GB".into(),
            verify: true,
        }
    }

    fn restore_options(&self) -> Options {
        let parts = self
            .image
            .as_ref()
            .map(|i| {
                i.partitions
                    .iter()
                    .map(|p| PartChoice {
                        number: p.number,
                        about: part_about(&p.fs, &p.label, p.size, p.stored, "stored"),
                        chosen: true,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Options {
            focus: 0,
            name: String::new(),
            parts,
            split: String::new(),
            verify: false,
        }
    }

    fn options_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        let fields = self.fields();
        let focused = fields.get(self.options.focus).copied();
        match k.code {
            KeyCode::Esc => {
                self.screen = match self.flow {
                    Flow::Save => Screen::Repo,
                    _ => Screen::Disks,
                };
                return Vec::new();
            }
            KeyCode::Up | KeyCode::BackTab => {
                if !fields.is_empty() {
                    self.options.focus = self
                        .options
                        .focus
                        .checked_sub(1)
                        .unwrap_or(fields.len() - 1);
                }
                return Vec::new();
            }
            KeyCode::Down | KeyCode::Tab => {
                if !fields.is_empty() {
                    self.options.focus = (self.options.focus + 1) % fields.len();
                }
                return Vec::new();
            }
            KeyCode::Enter => return self.options_done(),
            _ => {}
        }
        match focused {
            Some(Field::Name) => {
                edit(&mut self.options.name, &k);
            }
            Some(Field::Split) => {
                edit(&mut self.options.split, &k);
            }
            Some(Field::Part(i)) => {
                if k.code == KeyCode::Char(' ') {
                    if let Some(p) = self.options.parts.get_mut(i) {
                        p.chosen = !p.chosen;
                    }
                } else if k.code == KeyCode::Char('a') {
                    let all = self.options.parts.iter().all(|p| p.chosen);
                    for p in &mut self.options.parts {
                        p.chosen = !all;
                    }
                }
            }
            Some(Field::Verify) if k.code == KeyCode::Char(' ') => {
                self.options.verify = !self.options.verify;
            }
            Some(Field::Verify) | None => {}
        }
        Vec::new()
    }

    fn chosen_parts(&self) -> Option<Vec<u32>> {
        let o = &self.options;
        if o.parts.iter().all(|p| p.chosen) {
            None
        } else {
            Some(
                o.parts
                    .iter()
                    .filter(|p| p.chosen)
                    .map(|p| p.number)
                    .collect(),
            )
        }
    }

    /// The save plan the options describe, or what is wrong with them.
    pub fn save_plan(&self) -> Result<SavePlan, String> {
        let src = self.source.as_ref().ok_or("no disk chosen")?;
        let repo = self.current_repo().ok_or("no repository chosen")?;
        let name = self.options.name.trim();
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err("the image name must be a plain name, without a slash".into());
        }
        if name.ends_with(".partial") {
            return Err("the image name must not end with .partial".into());
        }
        if repo.images.iter().any(|i| i.name == name) || repo.path.join(name).exists() {
            return Err(format!(
                "{name} already exists in {}; choose another name",
                repo.path.display()
            ));
        }
        let volume_size = parse_size(&self.options.split)?;
        if volume_size < MIN_VOLUME_SIZE {
            return Err(format!(
                "the split size must be at least {}",
                human_bytes(MIN_VOLUME_SIZE)
            ));
        }
        let parts = self.chosen_parts();
        if parts.as_ref().is_some_and(|p| p.is_empty()) {
            return Err("choose at least one partition (Space)".into());
        }
        Ok(SavePlan {
            parts,
            volume_size,
            verify: self.options.verify,
            threads: self.setup.threads.max(1),
            ..SavePlan::new(&src.path, &repo.path.join(name))
        })
    }

    /// The restore plan the choices describe.
    pub fn restore_plan(&self) -> Result<RestorePlan, String> {
        let image = self.image.as_ref().ok_or("no image chosen")?;
        let target = self.target.as_ref().ok_or("no target disk chosen")?;
        let parts = self.chosen_parts();
        if parts.as_ref().is_some_and(|p| p.is_empty()) {
            return Err("choose at least one partition (Space)".into());
        }
        Ok(RestorePlan {
            image: image.path.clone(),
            target: target.path.clone(),
            parts,
            fit: Fit::None,
            new_ids: false,
            into: None,
            scratch: None,
            discard: false,
            threads: self.setup.threads.max(1),
        })
    }

    fn options_done(&mut self) -> Vec<Effect> {
        match self.flow {
            Flow::Save => match self.save_plan() {
                Ok(plan) => {
                    self.summary = self.save_summary(&plan);
                    self.screen = Screen::Summary;
                    Vec::new()
                }
                Err(e) => {
                    self.error(e);
                    Vec::new()
                }
            },
            _ => match self.restore_plan() {
                Ok(plan) => {
                    self.busy = Some("Checking the image and the target...".into());
                    vec![Effect::Prepare(plan)]
                }
                Err(e) => {
                    self.error(e);
                    Vec::new()
                }
            },
        }
    }

    fn save_summary(&self, plan: &SavePlan) -> Vec<SummaryLine> {
        let mut out = Vec::new();
        let line = |text: String| SummaryLine {
            text,
            danger: false,
        };
        if let Some(d) = &self.source {
            out.push(line(format!(
                "Read {} ({}{}, {} table)",
                d.path.display(),
                if d.model.is_empty() {
                    String::new()
                } else {
                    format!("{}, ", d.model)
                },
                human_bytes(d.size),
                if d.table.is_empty() { "no" } else { &d.table }
            )));
            for p in &d.partitions {
                if plan.parts.as_ref().is_none_or(|l| l.contains(&p.number)) {
                    out.push(line(format!(
                        "  partition {}: {} {}, {} of {} used",
                        p.number,
                        p.fs,
                        p.label,
                        human_bytes(p.used),
                        human_bytes(p.size)
                    )));
                }
                if let Some(m) = &p.mountpoint {
                    out.push(SummaryLine {
                        text: format!(
                            "  partition {} is mounted on {m}: if it changes during the save, \
                             its image may be inconsistent",
                            p.number
                        ),
                        danger: true,
                    });
                }
            }
        }
        out.push(line(format!(
            "Write the new image {} (volumes of at most {})",
            plan.image.display(),
            human_bytes(plan.volume_size)
        )));
        out.push(line(if plan.verify {
            "Then read the whole image back and check every block".into()
        } else {
            "Do not verify the image afterwards".into()
        }));
        if let Some(r) = self.current_repo() {
            out.push(line(format!(
                "Free in the repository: {}",
                human_bytes(r.free)
            )));
        }
        if let Some(w) = self.space_warning() {
            out.push(SummaryLine {
                text: format!("Warning: {w}"),
                danger: true,
            });
        }
        out.push(line(
            "Nothing on any disk is overwritten: only the new image directory is written.".into(),
        ));
        out
    }

    fn verify_summary(&self) -> Vec<SummaryLine> {
        let mut out = Vec::new();
        if let Some(i) = &self.image {
            out.push(SummaryLine {
                text: format!(
                    "Check every block and volume of {} ({}, saved {} from {})",
                    i.path.display(),
                    human_bytes(i.size),
                    i.created,
                    i.source
                ),
                danger: false,
            });
        }
        out.push(SummaryLine {
            text: "Nothing is written.".into(),
            danger: false,
        });
        out
    }

    fn restore_summary(&self, lines: &[String]) -> Vec<SummaryLine> {
        let mut out: Vec<SummaryLine> = lines
            .iter()
            .map(|l| SummaryLine {
                text: l.clone(),
                danger: l.contains("OVERWRITTEN"),
            })
            .collect();
        if let Some(t) = &self.target {
            if t.exists && !t.partitions.is_empty() {
                let chosen = self.chosen_parts();
                let whole = chosen.is_none();
                out.push(SummaryLine {
                    text: if whole {
                        format!("Lost: everything now on {}:", t.path.display())
                    } else {
                        format!("Replaced on {}:", t.path.display())
                    },
                    danger: true,
                });
                for p in &t.partitions {
                    if t.table == "none" {
                        out.push(SummaryLine {
                            text: format!(
                                "  the whole disk: {} {} ({})",
                                p.fs,
                                p.label,
                                human_bytes(p.size)
                            ),
                            danger: true,
                        });
                    } else if chosen.as_ref().is_none_or(|c| c.contains(&p.number)) {
                        out.push(SummaryLine {
                            text: format!(
                                "  partition {}: {} {} ({}, {} used)",
                                p.number,
                                p.fs,
                                p.label,
                                human_bytes(p.size),
                                human_bytes(p.used)
                            ),
                            danger: true,
                        });
                    }
                }
            }
        }
        out
    }

    fn summary_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        match k.code {
            KeyCode::Esc => {
                self.screen = match self.flow {
                    Flow::Verify => Screen::Images,
                    _ => Screen::Options,
                };
                Vec::new()
            }
            KeyCode::Enter => match self.flow {
                Flow::Save => match self.save_plan() {
                    Ok(plan) => self.start(Job::Save(plan)),
                    Err(e) => {
                        self.error(e);
                        Vec::new()
                    }
                },
                Flow::Restore => {
                    self.confirm_input.clear();
                    self.screen = Screen::Confirm;
                    Vec::new()
                }
                Flow::Verify => match &self.image {
                    Some(i) => {
                        let job = Job::Verify {
                            image: i.path.clone(),
                            threads: self.setup.threads.max(1),
                        };
                        self.start(job)
                    }
                    None => Vec::new(),
                },
            },
            _ => Vec::new(),
        }
    }

    /// The one place where the user's agreement to overwrite a disk becomes a [`Confirmed`]:
    /// the typed name must be exactly the target's.
    fn confirm_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        match k.code {
            KeyCode::Esc => {
                self.screen = Screen::Summary;
                Vec::new()
            }
            KeyCode::Enter => {
                let Some(target) = &self.target else {
                    return Vec::new();
                };
                if self.confirm_input != target.name {
                    let typed = std::mem::take(&mut self.confirm_input);
                    self.error(format!(
                        "you typed {typed:?}; type {} exactly to overwrite it, or press Esc",
                        target.name
                    ));
                    return Vec::new();
                }
                match self.restore_plan() {
                    Ok(plan) => self.start(Job::Restore {
                        plan,
                        confirmed: Confirmed::by_user(),
                        expect: self.prepared.clone(),
                    }),
                    Err(e) => {
                        self.error(e);
                        Vec::new()
                    }
                }
            }
            _ => {
                edit(&mut self.confirm_input, &k);
                Vec::new()
            }
        }
    }

    fn start(&mut self, job: Job) -> Vec<Effect> {
        self.progress = ProgressState {
            now: self.progress.now,
            ..ProgressState::default()
        };
        self.progress.run_started = self.progress.now;
        self.outcome = None;
        self.screen = Screen::Progress;
        vec![Effect::Run(job)]
    }
}
