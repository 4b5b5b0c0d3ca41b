//! Restore: check the whole image, check the target, then write every block at its place on
//! every core, write the boot area and tables, and move the backup GPT to the target's end.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};

use crate::disk::table::{read_table, TableKind};
use crate::disk::{sysfs, BlockDev, FileDisk, Region};
use crate::engine::blocks::for_each_block;
use crate::engine::gpt;
use crate::engine::progress::{Progress, ProgressEvent};
use crate::engine::save::human_bytes;
use crate::image::reader::{Image, LoadedStream};

/// Writeback of the target is started every this many bytes (see `BlockDev::start_writeback`).
const WRITEBACK_EVERY: u64 = 64 << 20;

/// How to fit the layout onto a target of another size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Every partition where it was.
    None,
    /// Resize the main data partition.
    Auto,
    /// Resize partition N.
    Part(u32),
}

/// A restore job as asked for.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    /// Image directory.
    pub image: PathBuf,
    /// Disk or file to write.
    pub target: PathBuf,
    /// Partitions to restore (all when `None`).
    pub parts: Option<Vec<u32>>,
    /// Layout fitting.
    pub fit: Fit,
    /// Worker threads.
    pub threads: usize,
}

/// Proof that the user agreed to overwrite the target; only front ends make one, after
/// `--yes` or a typed confirmation.
#[derive(Debug)]
pub struct Confirmed(());

impl Confirmed {
    /// The user confirmed (the front end's choke point calls this).
    pub fn by_user() -> Confirmed {
        Confirmed(())
    }
}

/// A checked restore, ready to run: the image's structure is sound and the target is fit.
pub struct Prepared {
    image: Image,
    streams: Vec<LoadedStream>,
    target: PathBuf,
    /// Size of the target (existing) or of the file to create.
    pub target_len: u64,
    /// The target exists and will be overwritten.
    pub target_exists: bool,
    /// Smallest target that holds the layout.
    pub required: u64,
    parts: Vec<u32>,
    write_table: bool,
    move_gpt_backup: bool,
}

impl Prepared {
    /// What will happen, in plain lines, for the confirmation prompt and `--dry-run`.
    pub fn describe(&self) -> Vec<String> {
        let m = &self.image.manifest;
        let mut out = vec![format!(
            "image {} ({} table, source {} of {})",
            self.image.dir.display(),
            m.table.kind,
            m.source.path,
            human_bytes(m.source.size_bytes)
        )];
        if self.target_exists {
            out.push(format!(
                "target {} ({}) WILL BE OVERWRITTEN",
                self.target.display(),
                human_bytes(self.target_len)
            ));
        } else {
            out.push(format!(
                "target {} will be created ({})",
                self.target.display(),
                human_bytes(self.target_len)
            ));
        }
        if self.write_table {
            out.push(format!(
                "write the boot area and the {} partition table",
                m.table.kind
            ));
        } else {
            out.push("keep the target's partition table".into());
        }
        for n in &self.parts {
            if let (Some(p), Some(src)) = (
                m.partitions.iter().find(|p| p.number == *n),
                m.source_partition(*n),
            ) {
                out.push(format!(
                    "partition {n}: {} {} at byte {:#x} ({}, {} stored)",
                    p.fs,
                    src.label,
                    src.start_bytes,
                    human_bytes(src.size_bytes),
                    human_bytes(p.stored_bytes)
                ));
            }
        }
        if self.move_gpt_backup {
            out.push("move the backup GPT to the end of the target".into());
        }
        out
    }

    /// The target path.
    pub fn target(&self) -> &Path {
        &self.target
    }
}

/// Opens and checks everything a restore needs, touching nothing.
pub fn prepare(plan: &RestorePlan) -> Result<Prepared> {
    if plan.fit != Fit::None {
        bail!("--fit auto and --fit N are not available yet; use --fit none (the default)");
    }
    let image = Image::open(&plan.image)?;
    let streams = image
        .load_all()
        .context("checking the image before writing anything")?;
    let m = &image.manifest;
    let parts: Vec<u32> = match &plan.parts {
        Some(list) => {
            for n in list {
                if !m.partitions.iter().any(|p| p.number == *n) {
                    bail!(
                        "the image has no partition {n} (it has {})",
                        m.partitions
                            .iter()
                            .map(|p| p.number.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
            list.clone()
        }
        None => m.partitions.iter().map(|p| p.number).collect(),
    };
    let ss = u64::from(m.table.sector_size);
    let required = required_size(&image);
    if let Some(reason) = sysfs::target_in_use(&plan.target, Some(&plan.image)) {
        bail!("refusing to write: {reason}");
    }
    if same_file(&plan.target, Path::new(&m.source.path)) && m.source.path.starts_with("/dev/") {
        // Restoring onto the disk the image came from is a normal repair; nothing to refuse.
    }
    let (target_exists, target_len, target_table) = if plan.target.exists() {
        let t = FileDisk::open(&plan.target)
            .with_context(|| format!("opening the target {}", plan.target.display()))?;
        if t.is_block_device() && u64::from(t.logical_sector()) != ss {
            bail!(
                "the image has {ss}-byte sectors but {} has {}-byte sectors; converting between \
                 sector sizes is not supported",
                plan.target.display(),
                t.logical_sector()
            );
        }
        let table = read_table(&Region::whole(&t)).ok();
        (true, t.len(), table)
    } else {
        (false, m.source.size_bytes, None)
    };
    if target_len < required {
        bail!(
            "the target {} is too small: {} bytes ({}), the image's layout needs at least {} bytes ({}){}",
            plan.target.display(),
            target_len,
            human_bytes(target_len),
            required,
            human_bytes(required),
            if m.table.kind == "none" { "" } else { "\n  hint: a smaller target will be possible with --fit (not available yet)" }
        );
    }
    let all = parts.len() == m.partitions.len();
    let write_table = m.table.kind != "none"
        && (all
            || !target_exists
            || target_table
                .as_ref()
                .is_none_or(|t| t.kind == TableKind::None));
    if !write_table && m.table.kind != "none" {
        // Partial restore into an existing table: each partition must be where it was.
        let Some(t) = &target_table else {
            bail!("cannot read the target's partition table");
        };
        for n in &parts {
            let src = m
                .source_partition(*n)
                .context("partition missing from the manifest")?;
            match t.partition(*n) {
                Some(p) if p.start == src.start_bytes && p.size == src.size_bytes => {}
                _ => bail!(
                    "the target's partition {n} is not at byte {:#x} with {} bytes as in the image; \
                     restoring single partitions needs the same layout",
                    src.start_bytes,
                    src.size_bytes
                ),
            }
        }
    }
    let move_gpt_backup = write_table && m.table.kind == "gpt" && target_len != m.source.size_bytes;
    Ok(Prepared {
        image,
        streams,
        target: plan.target.clone(),
        target_len,
        target_exists,
        required,
        parts,
        write_table,
        move_gpt_backup,
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The smallest target that holds the image's layout unchanged.
pub fn required_size(image: &Image) -> u64 {
    let m = &image.manifest;
    if m.table.kind == "none" {
        return m.source.size_bytes;
    }
    let ss = u64::from(m.table.sector_size);
    let mut end = m
        .source
        .partitions
        .iter()
        .map(|p| p.start_bytes + p.size_bytes)
        .chain(m.table.extended.map(|(s, l)| s + l))
        .chain([m.table.boot_area_end])
        .max()
        .unwrap_or(0);
    if let Some(g) = &m.table.gpt {
        // The backup array and header follow the last partition.
        let array = (u64::from(g.num_entries) * u64::from(g.entry_size)).div_ceil(ss);
        end = (end.div_ceil(ss) + array + 1) * ss;
    }
    end
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    /// Bytes written to the target.
    pub written: u64,
    /// Zero blocks skipped on a fresh target.
    pub skipped_zero: u64,
}

/// Runs a prepared restore.
pub fn run(
    p: &Prepared,
    _confirmed: Confirmed,
    threads: usize,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let m = &p.image.manifest;
    let target = if p.target_exists {
        FileDisk::open_rw(&p.target).with_context(|| {
            format!("opening {} for writing (is it in use?)", p.target.display())
        })?
    } else {
        FileDisk::create(&p.target, p.target_len, m.table.sector_size)
            .with_context(|| format!("creating {}", p.target.display()))?
    };
    let fresh = !p.target_exists;
    let mut jobs: Vec<&LoadedStream> = Vec::new();
    for n in &p.parts {
        let e = m
            .partitions
            .iter()
            .find(|e| e.number == *n)
            .context("partition missing")?;
        let s = p
            .streams
            .iter()
            .find(|s| s.info.name == e.stream)
            .context("stream missing")?;
        jobs.push(s);
    }
    let disk_stream = p.streams.iter().find(|s| s.info.name == "disk");
    let total: u64 = jobs.iter().map(|s| s.map.total()).sum::<u64>()
        + if p.write_table {
            disk_stream.map(|s| s.map.total()).unwrap_or(0)
        } else {
            0
        };
    progress.event(ProgressEvent::Job {
        op: "restore",
        total,
    });
    let written = AtomicU64::new(0);
    let skipped = AtomicU64::new(0);
    let write_stream = |s: &LoadedStream, limit: u64| -> Result<()> {
        for_each_block(&p.image.dir, s, threads, |b| {
            if !(b.zero && fresh) {
                for &(off, at, n) in b.pieces {
                    if off >= limit {
                        continue;
                    }
                    let data = &b.data[at as usize..(at + n) as usize];
                    target.write_all_at(data, off).with_context(|| {
                        format!(
                            "writing {} at byte {off:#x} ({n} bytes); the target is now \
                             inconsistent from byte {:#x} on",
                            p.target.display(),
                            s.info.base
                        )
                    })?;
                }
                let before = written.fetch_add(b.data.len() as u64, Ordering::Relaxed);
                if (before + b.data.len() as u64) / WRITEBACK_EVERY != before / WRITEBACK_EVERY {
                    target.start_writeback();
                }
            } else {
                skipped.fetch_add(b.data.len() as u64, Ordering::Relaxed);
            }
            progress.event(ProgressEvent::Advance {
                bytes: b.data.len() as u64,
            });
            Ok(())
        })
    };
    for s in &jobs {
        let e = m.partitions.iter().find(|e| e.stream == s.info.name);
        progress.event(ProgressEvent::Step {
            label: format!(
                "partition {} ({})",
                e.map(|e| e.number).unwrap_or(0),
                e.map(|e| e.fs.to_string()).unwrap_or_default()
            ),
            total: s.map.total(),
        });
        write_stream(s, u64::MAX).with_context(|| format!("restoring {}", s.info.name))?;
    }
    if p.write_table {
        if let Some(ds) = disk_stream {
            progress.event(ProgressEvent::Step {
                label: "boot area and partition tables".into(),
                total: ds.map.total(),
            });
            // On a target of another size the source's backup GPT would land in the wrong
            // place: write everything before it, then rebuild the backup at the new end.
            let limit = match (&m.table.gpt, p.move_gpt_backup) {
                (Some(g), true) => (g.last_usable + 1) * u64::from(m.table.sector_size),
                _ => u64::MAX,
            };
            write_stream(ds, limit).context("restoring the boot area and partition tables")?;
        }
        if p.move_gpt_backup {
            gpt::relocate_backup(&target)
                .context("moving the backup GPT to the end of the target")?;
            progress.event(ProgressEvent::Note(
                "backup GPT moved to the end of the target".into(),
            ));
        }
    }
    target
        .sync()
        .with_context(|| format!("flushing {}", p.target.display()))?;
    Ok(RestoreReport {
        written: written.into_inner(),
        skipped_zero: skipped.into_inner(),
    })
}
