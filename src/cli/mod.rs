//! The command line: clap arguments become a validated plan, the engine runs it, progress goes
//! to stderr, results to stdout.

pub mod progress;

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

use crate::disk::sysfs;
use crate::engine::clone::{self, ClonePlan};
use crate::engine::clonezilla::ConvertPlan;
use crate::engine::inspect::Inspected;
use crate::engine::restore::{self, Confirmed, Fit, RestorePlan};
use crate::engine::save::{self, default_threads, human_bytes, SavePlan};
use crate::engine::verify;
use crate::image::format::MIN_VOLUME_SIZE;
use crate::image::reader::Image;
use crate::import::clonezilla::{is_clonezilla_dir, CzImage};
use progress::Printer;

/// Exit codes (DESIGN §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// The operation failed.
    Failed = 1,
    /// Bad usage.
    Usage = 2,
    /// Verification found a mismatch or damage.
    Mismatch = 3,
    /// Finished, but unreadable source sectors were skipped.
    Rescued = 4,
    /// Stopped by Ctrl-C.
    Interrupted = 130,
}

/// A usage error found after parsing (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// ferroclone: save, restore and clone whole disks, storing only the blocks filesystems use.
#[derive(Debug, Parser)]
#[command(name = "ferroclone", version, about, long_about = None)]
pub struct Cli {
    /// Worker threads for compression and checks (default: one per core).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// No progress output.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the disks of this machine.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show a disk's partition table, filesystems and used bytes.
    Inspect {
        /// Block device or raw disk file.
        source: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Save a disk into an image directory.
    Save(SaveArgs),
    /// Restore an image onto a disk or into a file.
    Restore(RestoreArgs),
    /// Clone a disk onto another disk.
    Clone(CloneArgs),
    /// Check every block of an image.
    Verify {
        /// Image directory.
        image: PathBuf,
        /// Also compare every stored byte with this disk.
        #[arg(long)]
        against: Option<PathBuf>,
    },
    /// Convert a Clonezilla image directory into a native image.
    Convert(ConvertArgs),
    /// Describe an image.
    Info {
        /// Image directory.
        image: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// The interactive wizard.
    Tui {
        /// Add a file-backed disk to the pickers.
        #[arg(long)]
        disk: Vec<PathBuf>,
        /// Image repository directory.
        #[arg(long)]
        repo: Option<PathBuf>,
    },
    /// The rescue environment's unattended mode (run by the ISO's /init).
    #[command(hide = true)]
    Boot(crate::boot::BootArgs),
}

/// `save` arguments.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Block device or raw disk file.
    pub source: PathBuf,
    /// Image directory to create.
    pub image: PathBuf,
    /// Only these partitions (e.g. 1,3).
    #[arg(long, value_delimiter = ',')]
    pub parts: Option<Vec<u32>>,
    /// Store every partition raw (all-zero blocks still skipped).
    #[arg(long)]
    pub raw: bool,
    /// Volume size, e.g. 2G, 700M (default just under 4 GB, for FAT32 sticks).
    #[arg(long, value_parser = parse_size)]
    pub split: Option<u64>,
    /// Go on past unreadable sectors.
    #[arg(long)]
    pub rescue: bool,
    /// Do not verify the image after saving.
    #[arg(long)]
    pub no_verify: bool,
}

/// `restore` arguments.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Image directory.
    pub image: PathBuf,
    /// Block device or file (created when missing).
    pub target: PathBuf,
    /// Only these partitions.
    #[arg(long, value_delimiter = ',')]
    pub parts: Option<Vec<u32>>,
    /// Fit the layout to a target of another size: none, auto or a partition number.
    #[arg(long, default_value = "none", value_parser = parse_fit)]
    pub fit: Fit,
    /// New disk and partition GUIDs (GPT) or a new disk signature (MBR); by default the IDs
    /// Windows' boot configuration refers to are kept.
    #[arg(long)]
    pub new_ids: bool,
    /// Write the --parts into these partitions of the target, one for each, keeping the
    /// target's partition table (e.g. --parts 3 --into 2).
    #[arg(long, value_delimiter = ',')]
    pub into: Option<Vec<u32>>,
    /// Directory for the scratch file when a filesystem is shrunk (default: the image's
    /// repository).
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Discard (TRIM) the free space of the partitions written instead of leaving old data
    /// there (BLKDISCARD on a block device, holes in a file).
    #[arg(long)]
    pub discard: bool,
    /// Do not ask: overwrite the target.
    #[arg(long)]
    pub yes: bool,
    /// Show what would be done and touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Clonezilla images: do not read and check the whole image before writing (damage is then
    /// found while writing, and the restore stops there).
    #[arg(long)]
    pub skip_check: bool,
}

/// `convert` arguments.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Clonezilla (or Rescuezilla) image directory.
    pub source: PathBuf,
    /// Native image directory to create.
    pub image: PathBuf,
    /// Volume size, e.g. 2G, 700M (default just under 4 GB, for FAT32 sticks).
    #[arg(long, value_parser = parse_size)]
    pub split: Option<u64>,
    /// Do not verify the new image.
    #[arg(long)]
    pub no_verify: bool,
}

/// `clone` arguments.
#[derive(Debug, Args)]
pub struct CloneArgs {
    /// Source disk (block device or raw disk file); only read.
    pub source: PathBuf,
    /// Target disk or file (created when missing).
    pub target: PathBuf,
    /// Fit the layout to a target of another size: none, auto or a partition number.
    #[arg(long, default_value = "none", value_parser = parse_fit)]
    pub fit: Fit,
    /// New disk and partition GUIDs (GPT) or a new disk signature (MBR), for when both disks
    /// stay in one machine.
    #[arg(long)]
    pub new_ids: bool,
    /// Only these partitions, written into the target's partitions given by --into.
    #[arg(long, value_delimiter = ',')]
    pub parts: Option<Vec<u32>>,
    /// Write the --parts into these partitions of the target, one for each, keeping the
    /// target's partition table (e.g. --parts 3 --into 2).
    #[arg(long, value_delimiter = ',')]
    pub into: Option<Vec<u32>>,
    /// Directory for the scratch file when a filesystem is shrunk (default: $TMPDIR or /tmp).
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Read back every partition copied unchanged and compare it with the source.
    #[arg(long)]
    pub verify: bool,
    /// Discard (TRIM) the free space of the partitions written instead of leaving old data
    /// there (BLKDISCARD on a block device, holes in a file).
    #[arg(long)]
    pub discard: bool,
    /// Do not ask: overwrite the target.
    #[arg(long)]
    pub yes: bool,
    /// Show what would be done and touch nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Parses `700M`, `2G`, `1.5G`, `4000000000` (K/M/G/T are powers of 1024; KB/MB/GB/TB of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 700M or 2G"))?;
    let mult: f64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "K" | "KIB" => 1024.0,
        "M" | "MIB" => 1024.0 * 1024.0,
        "G" | "GIB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TIB" => 1024.0f64.powi(4),
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => return Err(format!("unknown unit in {s:?}; use K, M, G, T")),
    };
    let v = n * mult;
    if !(v.is_finite() && (1.0..1.8e19).contains(&v)) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(v as u64)
}

fn parse_fit(s: &str) -> Result<Fit, String> {
    match s {
        "none" => Ok(Fit::None),
        "auto" => Ok(Fit::Auto),
        n => n
            .parse::<u32>()
            .map(Fit::Part)
            .map_err(|_| format!("--fit takes none, auto or a partition number, not {s:?}")),
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<Exit> {
    let threads = cli.threads.unwrap_or_else(default_threads).max(1);
    let printer = Printer::new(cli.quiet);
    let Some(command) = cli.command else {
        if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
            return crate::tui::run(crate::tui::TuiArgs {
                threads,
                ..Default::default()
            });
        }
        bail!(UsageError(
            "no command given; try `ferroclone --help` (on a terminal, `ferroclone` alone opens \
             the interactive wizard)"
                .into()
        ));
    };
    match command {
        Command::List { json } => list(json),
        Command::Inspect { source, json } => inspect(&source, json),
        Command::Save(a) => {
            let volume_size = a.split.unwrap_or(crate::image::format::DEFAULT_VOLUME_SIZE);
            if volume_size < MIN_VOLUME_SIZE {
                bail!(UsageError(format!(
                    "--split must be at least {} ({MIN_VOLUME_SIZE} bytes)",
                    human_bytes(MIN_VOLUME_SIZE)
                )));
            }
            let plan = SavePlan {
                parts: a.parts,
                raw: a.raw,
                volume_size,
                verify: !a.no_verify,
                threads,
                rescue: a.rescue,
                ..SavePlan::new(&a.source, &a.image)
            };
            let t0 = Instant::now();
            let r = save::save(&plan, &printer);
            printer.finish();
            let r = r?;
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "saved {} into {}: {} of data in {} ({:.1}x), {:.1} s, {}/s{}",
                plan.source.display(),
                plan.image.display(),
                human_bytes(r.read_bytes),
                human_bytes(r.image_bytes),
                r.read_bytes as f64 / r.image_bytes.max(1) as f64,
                secs,
                human_bytes((r.read_bytes as f64 / secs.max(0.001)) as u64),
                if plan.verify { ", verified" } else { "" }
            );
            let bad = &r.manifest.bad_ranges;
            if !bad.is_empty() {
                let bytes: u64 = bad.iter().map(|b| b.length).sum();
                println!(
                    "{} unreadable ranges ({bytes} bytes) were stored as zeros; `ferroclone info` lists them",
                    bad.len()
                );
                return Ok(Exit::Rescued);
            }
            Ok(Exit::Ok)
        }
        Command::Restore(a) => {
            let plan = RestorePlan {
                image: a.image,
                target: a.target,
                parts: a.parts,
                fit: a.fit,
                new_ids: a.new_ids,
                into: a.into,
                scratch: a.scratch,
                discard: a.discard,
                threads,
            };
            let mut prepared = restore::prepare(&plan)?;
            prepared.set_skip_check(a.skip_check);
            for l in prepared.describe() {
                eprintln!("{l}");
            }
            if a.dry_run {
                println!("dry run: nothing was written");
                return Ok(Exit::Ok);
            }
            let confirmed = if prepared.target_exists {
                confirm(prepared.target(), a.yes)?
            } else {
                Confirmed::by_user()
            };
            let t0 = Instant::now();
            let r = restore::run(&prepared, confirmed, threads, &printer);
            printer.finish();
            let r = r?;
            for n in &r.notes {
                eprintln!("{n}");
            }
            println!(
                "restored {} onto {}: {} written, {:.1} s",
                plan.image.display(),
                plan.target.display(),
                human_bytes(r.written),
                t0.elapsed().as_secs_f64()
            );
            Ok(Exit::Ok)
        }
        Command::Clone(a) => {
            let plan = ClonePlan {
                fit: a.fit,
                new_ids: a.new_ids,
                parts: a.parts,
                into: a.into,
                scratch: a.scratch,
                verify: a.verify,
                discard: a.discard,
                threads,
                ..ClonePlan::new(&a.source, &a.target)
            };
            let prepared = clone::prepare(&plan)?;
            for l in prepared.describe() {
                eprintln!("{l}");
            }
            for w in &prepared.warnings {
                eprintln!("warning: {w}");
            }
            if a.dry_run {
                println!("dry run: nothing was written");
                return Ok(Exit::Ok);
            }
            let confirmed = if prepared.target_exists {
                confirm(prepared.target(), a.yes)?
            } else {
                Confirmed::by_user()
            };
            let t0 = Instant::now();
            let r = clone::run(&prepared, confirmed, threads, &printer);
            printer.finish();
            let r = r?;
            for n in &r.notes {
                eprintln!("{n}");
            }
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "cloned {} onto {}: {} written, {:.1} s, {}/s{}",
                plan.source.display(),
                plan.target.display(),
                human_bytes(r.written),
                secs,
                human_bytes((r.written as f64 / secs.max(0.001)) as u64),
                if plan.verify {
                    format!(", {} verified", human_bytes(r.verified))
                } else {
                    String::new()
                }
            );
            Ok(Exit::Ok)
        }
        Command::Verify { image, against } => {
            let t0 = Instant::now();
            let r = verify::verify(&image, against.as_deref(), threads, &printer);
            printer.finish();
            let r = r?;
            println!(
                "{} is sound: {} blocks, {} in {} volumes checked{}, {:.1} s",
                image.display(),
                r.blocks,
                human_bytes(r.bytes),
                r.volumes,
                if against.is_some() {
                    " and equal to the disk"
                } else {
                    ""
                },
                t0.elapsed().as_secs_f64()
            );
            for b in &r.bad_ranges {
                println!(
                    "note: {} bytes at source byte {:#x} ({}) were unreadable at save and are zeros",
                    b.length, b.offset, b.stream
                );
            }
            Ok(Exit::Ok)
        }
        Command::Convert(a) => {
            let volume_size = a.split.unwrap_or(crate::image::format::DEFAULT_VOLUME_SIZE);
            if volume_size < MIN_VOLUME_SIZE {
                bail!(UsageError(format!(
                    "--split must be at least {} ({MIN_VOLUME_SIZE} bytes)",
                    human_bytes(MIN_VOLUME_SIZE)
                )));
            }
            let plan = ConvertPlan {
                volume_size,
                verify: !a.no_verify,
                threads,
                ..ConvertPlan::new(&a.source, &a.image)
            };
            let t0 = Instant::now();
            let r = crate::engine::clonezilla::convert(&plan, &printer);
            printer.finish();
            let (m, v) = r?;
            let stored: u64 = m.streams.iter().map(|s| s.stored_bytes).sum();
            let image: u64 = m.streams.iter().map(|s| s.image_bytes).sum();
            println!(
                "converted {} into {}: {} of data in {}, {:.1} s{}",
                plan.source.display(),
                plan.image.display(),
                human_bytes(stored),
                human_bytes(image),
                t0.elapsed().as_secs_f64(),
                if v.is_some() { ", verified" } else { "" }
            );
            Ok(Exit::Ok)
        }
        Command::Info { image, json } => info(&image, json),
        Command::Tui { disk, repo } => {
            if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
                bail!(UsageError(
                    "the wizard needs a terminal on stdin and stdout; use the other commands \
                     in scripts"
                        .into()
                ));
            }
            crate::tui::run(crate::tui::TuiArgs {
                disks: disk,
                repo,
                threads,
            })
        }
        Command::Boot(a) => crate::boot::main(&a),
    }
}

/// The exit code for an error (DESIGN §4): interrupted, usage, mismatch or damage, else failed.
pub fn exit_code(err: &anyhow::Error) -> Exit {
    use crate::engine::verify::Mismatch;
    use crate::engine::Interrupted;
    use crate::image::ImageError;
    for cause in err.chain() {
        if cause.downcast_ref::<Interrupted>().is_some() {
            return Exit::Interrupted;
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return Exit::Usage;
        }
        if cause.downcast_ref::<Mismatch>().is_some() {
            return Exit::Mismatch;
        }
        if let Some(e) = cause.downcast_ref::<ImageError>() {
            if e.is_damage() {
                return Exit::Mismatch;
            }
        }
        if let Some(e) = cause.downcast_ref::<crate::import::ImportError>() {
            if e.is_damage() {
                return Exit::Mismatch;
            }
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>() {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Exit::Ok;
            }
        }
    }
    Exit::Failed
}

/// The one place a user agrees to overwrite a disk: `--yes`, or typing its name on a terminal.
fn confirm(target: &Path, yes: bool) -> Result<Confirmed> {
    if yes {
        return Ok(Confirmed::by_user());
    }
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| target.display().to_string());
    if !std::io::stdin().is_terminal() {
        bail!(UsageError(format!(
            "{} exists and would be overwritten; pass --yes to confirm (stdin is not a terminal)",
            target.display()
        )));
    }
    eprint!("Type {name} to overwrite it, anything else to stop: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() == name {
        Ok(Confirmed::by_user())
    } else {
        bail!("not confirmed; nothing was written")
    }
}

fn list(json: bool) -> Result<Exit> {
    let disks = sysfs::list_disks();
    if json {
        println!("{}", serde_json::to_string_pretty(&disks)?);
        return Ok(Exit::Ok);
    }
    println!(
        "{:<14} {:>10} {:<9} {:<4} {:<24} {:<20}",
        "DISK", "SIZE", "TRANSPORT", "RM", "MODEL", "SERIAL"
    );
    for d in &disks {
        println!(
            "{:<14} {:>10} {:<9} {:<4} {:<24} {:<20}{}",
            d.path,
            human_bytes(d.size_bytes),
            d.transport,
            if d.removable { "yes" } else { "" },
            d.model,
            d.serial,
            if d.read_only { " read-only" } else { "" }
        );
        if let Some(m) = &d.mountpoint {
            println!("  (whole disk)  mounted on {m}");
        }
        for p in &d.partitions {
            println!(
                "  {:<12} {:>10}{}",
                p.name,
                human_bytes(p.size_bytes),
                p.mountpoint
                    .as_ref()
                    .map(|m| format!("  mounted on {m}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(Exit::Ok)
}

fn inspect(source: &Path, json: bool) -> Result<Exit> {
    let ins = Inspected::open(source)?;
    let s = ins.summary();
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(Exit::Ok);
    }
    println!(
        "{}: {} ({} bytes), {}-byte sectors, {} table{}",
        s.path,
        human_bytes(s.size_bytes),
        s.size_bytes,
        s.logical_sector_size,
        s.table,
        s.disk_id
            .as_ref()
            .map(|d| format!(", id {d}"))
            .unwrap_or_default()
    );
    for w in &ins.table.warnings {
        println!("warning: {w}");
    }
    println!(
        "{:>3} {:>14} {:>10} {:<9} {:<16} {:>10}  NAME",
        "#", "START", "SIZE", "FS", "LABEL", "USED"
    );
    for (p, f) in s.partitions.iter().zip(&ins.fs) {
        println!(
            "{:>3} {:>14} {:>10} {:<9} {:<16} {:>10}  {}",
            p.number,
            p.start_bytes,
            human_bytes(p.size_bytes),
            p.fs.to_string(),
            p.label,
            human_bytes(p.used_bytes),
            p.name
        );
        match f {
            Ok(i) => {
                for w in &i.warnings {
                    println!("    warning: {w}");
                }
            }
            Err(e) => println!("    error: {e}"),
        }
    }
    Ok(Exit::Ok)
}

fn info(dir: &Path, json: bool) -> Result<Exit> {
    if is_clonezilla_dir(dir) {
        return info_clonezilla(dir, json);
    }
    let image = match Image::open(dir) {
        Ok(i) => i,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "complete": false, "error": e.to_string() })
                );
            }
            return Err(e.into());
        }
    };
    let m = &image.manifest;
    if json {
        let parts: Vec<_> = m
            .partitions
            .iter()
            .map(|p| {
                serde_json::json!({
                    "number": p.number,
                    "fs": p.fs,
                    "mode": p.mode,
                    "stored_bytes": p.stored_bytes,
                    "image_bytes": p.image_bytes,
                    "min_size_bytes": p.min_size_bytes,
                    "warnings": p.warnings,
                })
            })
            .collect();
        let v = serde_json::json!({
            "version": m.version,
            "complete": true,
            "id": m.id,
            "created": m.created,
            "tool": m.tool,
            "manifest_sha256": image.manifest_sha256(),
            "source": m.source,
            "partitions": parts,
            "parent": m.parent,
            "bad_ranges": m.bad_ranges,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(Exit::Ok);
    }
    println!(
        "image:   {} (complete, format version {})",
        dir.display(),
        m.version
    );
    println!("created: {} by {}", m.created, m.tool);
    println!("sha256:  {} (manifest.json)", image.manifest_sha256());
    println!(
        "source:  {}, {}, {} table, {}-byte sectors{}{}",
        m.source.path,
        human_bytes(m.source.size_bytes),
        m.source.table,
        m.source.logical_sector_size,
        if m.source.model.is_empty() {
            String::new()
        } else {
            format!(", model {}", m.source.model)
        },
        if m.source.serial.is_empty() {
            String::new()
        } else {
            format!(", serial {}", m.source.serial)
        },
    );
    println!(
        "{:>3} {:<9} {:<5} {:>10} {:>10} {:>10}  LABEL",
        "#", "FS", "MODE", "SIZE", "STORED", "IMAGE"
    );
    for p in &m.partitions {
        let src = m.source_partition(p.number);
        println!(
            "{:>3} {:<9} {:<5} {:>10} {:>10} {:>10}  {}",
            p.number,
            p.fs.to_string(),
            if p.mode == crate::image::manifest::Mode::Used {
                "used"
            } else {
                "raw"
            },
            human_bytes(src.map(|s| s.size_bytes).unwrap_or(0)),
            human_bytes(p.stored_bytes),
            human_bytes(p.image_bytes),
            src.map(|s| s.label.as_str()).unwrap_or("")
        );
    }
    let total: u64 = m.streams.iter().map(|s| s.image_bytes).sum();
    let vols: usize = m.streams.iter().map(|s| s.volumes.len()).sum();
    println!("total:   {} in {vols} volumes", human_bytes(total));
    for b in &m.bad_ranges {
        println!(
            "unreadable at save, stored as zeros: {} bytes at source byte {:#x} ({})",
            b.length, b.offset, b.stream
        );
    }
    Ok(Exit::Ok)
}

fn info_clonezilla(dir: &Path, json: bool) -> Result<Exit> {
    let cz = match CzImage::open(dir) {
        Ok(c) => c,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "format": "clonezilla", "complete": false, "error": e.to_string() })
                );
            }
            return Err(e.into());
        }
    };
    let m = cz.manifest();
    if json {
        let parts: Vec<_> = cz
            .restorable()
            .map(|p| {
                let d = p.data.as_ref();
                serde_json::json!({
                    "number": p.number,
                    "fs": p.fs,
                    "mode": m.partitions.iter().find(|e| e.number == p.number).map(|e| e.mode),
                    "stored_bytes": CzImage::stored_bytes(p),
                    "image_bytes": d.map(|d| d.pieces.total()).unwrap_or(0),
                    "file": d.map(|d| d.name.clone()),
                    "pieces": d.map(|d| d.pieces.files.len()).unwrap_or(0),
                    "compression": d.map(|d| d.compression.name()),
                    "partclone": d.and_then(|d| d.partclone.as_ref()).map(|h| serde_json::json!({
                        "format": format!("{:?}", h.format),
                        "version": h.tool_version,
                        "fs": h.fs,
                        "block_size": h.block_size,
                        "checksum": h.checksum.name(),
                        "blocks_per_checksum": h.blocks_per_checksum,
                    })),
                    "swap": p.swap.is_some(),
                })
            })
            .collect();
        let v = serde_json::json!({
            "format": "clonezilla",
            "version": m.version,
            "complete": true,
            "created": m.created,
            "tool": m.tool,
            "source": m.source,
            "partitions": parts,
            "warnings": cz.warnings,
            "parent": null,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(Exit::Ok);
    }
    println!(
        "image:   {} (Clonezilla image of {})",
        dir.display(),
        cz.disk
    );
    println!("created: {} by {}", m.created, m.tool);
    println!(
        "source:  {}, {} table, {}-byte sectors",
        human_bytes(m.source.size_bytes),
        m.source.table,
        m.source.logical_sector_size
    );
    for w in &cz.warnings {
        println!("warning: {w}");
    }
    println!(
        "{:>3} {:<9} {:>10} {:>10} {:>10}  DATA",
        "#", "FS", "SIZE", "STORED", "IMAGE"
    );
    for p in &cz.parts {
        let (stored, image, what) = match (&p.data, &p.swap) {
            (Some(d), _) => (
                human_bytes(d.stored_bytes),
                human_bytes(d.pieces.total()),
                format!(
                    "{} ({}, {} piece{}{})",
                    d.name,
                    d.compression.name(),
                    d.pieces.files.len(),
                    if d.pieces.files.len() == 1 { "" } else { "s" },
                    d.partclone
                        .as_ref()
                        .map(|h| format!(", partclone {} {}", h.tool_version, h.checksum.name()))
                        .unwrap_or_default()
                ),
            ),
            (None, Some(_)) => ("4.0 KiB".into(), "-".into(), "swap, recreated".into()),
            _ => ("-".into(), "-".into(), "not imaged".into()),
        };
        println!(
            "{:>3} {:<9} {:>10} {:>10} {:>10}  {}",
            p.number,
            p.fs.to_string(),
            human_bytes(p.size),
            stored,
            image,
            what
        );
    }
    Ok(Exit::Ok)
}
