//! Clone: a disk straight onto another disk (or into a file), no image in between. The source
//! is inspected like a save would (table, filesystems, used maps); the used extents are read
//! in large reads on one thread and written at their (possibly fitted) place on the others
//! (`engine::fit`). The source is only ever read.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::disk::table::TableKind;
use crate::disk::{sysfs, BlockDev, FileDisk};
use crate::engine::fit::{self, copy_extents, DiskSource, FitJob, Target};
use crate::engine::inspect::Inspected;
use crate::engine::layout::{self, Fit, SrcLayout, SrcPart};
use crate::engine::progress::{Progress, ProgressEvent};
use crate::engine::restore::{new_ids_line, Confirmed};
use crate::engine::save::human_bytes;
use crate::engine::verify::Mismatch;
use crate::engine::{resize, tables};
use crate::fs::{Extents, FsKind};

/// A clone job as asked for.
#[derive(Debug, Clone)]
pub struct ClonePlan {
    /// Disk (or disk file) to read.
    pub source: PathBuf,
    /// Disk or file to write (created when missing).
    pub target: PathBuf,
    /// Layout fitting.
    pub fit: Fit,
    /// New disk and partition IDs.
    pub new_ids: bool,
    /// Only these partitions (with `into`).
    pub parts: Option<Vec<u32>>,
    /// Write `parts` into these partitions of the target, keeping its table.
    pub into: Option<Vec<u32>>,
    /// Directory for the scratch file of a shrink (default: the temporary directory).
    pub scratch: Option<PathBuf>,
    /// Read back and compare every partition copied unchanged.
    pub verify: bool,
    /// Discard the free space of every partition written (BLKDISCARD; a hole in a file).
    pub discard: bool,
    /// Worker threads.
    pub threads: usize,
}

impl ClonePlan {
    /// A plan with defaults.
    pub fn new(source: &Path, target: &Path) -> ClonePlan {
        ClonePlan {
            source: source.to_path_buf(),
            target: target.to_path_buf(),
            fit: Fit::None,
            new_ids: false,
            parts: None,
            into: None,
            scratch: None,
            verify: false,
            discard: false,
            threads: crate::engine::save::default_threads(),
        }
    }
}

/// A checked clone, ready to run.
pub struct PreparedClone {
    ins: Inspected,
    source: DiskSourceParts,
    target: PathBuf,
    /// Size of the target (existing) or of the file to create.
    pub target_len: u64,
    /// The target exists and will be overwritten.
    pub target_exists: bool,
    /// Smallest target that holds the layout as fitted.
    pub required: u64,
    /// Things the user should know (mounted source, partitions copied whole).
    pub warnings: Vec<String>,
    new_ids: bool,
    verify: bool,
    into: Option<Vec<u32>>,
    job: FitJob,
}

/// What the disk source reads: the boot area and tables, and each partition's used map.
struct DiskSourceParts {
    disk_map: Extents,
    parts: Vec<(u32, u64, Extents)>,
}

impl PreparedClone {
    fn source(&self) -> DiskSource<'_> {
        DiskSource {
            disk: &self.ins.disk,
            disk_map: self.source.disk_map.clone(),
            parts: self.source.parts.clone(),
        }
    }

    /// What will happen, in plain lines, for the confirmation prompt and `--dry-run`.
    pub fn describe(&self) -> Vec<String> {
        let s = &self.ins;
        let mut out = vec![format!(
            "source {} ({}, {} table)",
            s.disk.path().display(),
            human_bytes(s.disk.len()),
            s.table.kind
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
        if self.job.write_table {
            out.push(format!(
                "write the boot area and the {} partition table{}",
                s.table.kind,
                if self.job.tables.is_some() {
                    " (rebuilt for the target)"
                } else {
                    ""
                }
            ));
        }
        let into: Vec<(u32, u32)> = match &self.into {
            Some(into) => self
                .job
                .parts
                .iter()
                .copied()
                .zip(into.iter().copied())
                .collect(),
            None => Vec::new(),
        };
        for (n, m) in &into {
            out.push(format!(
                "partition {n} of the source goes into partition {m} of the target (its table is kept)"
            ));
        }
        for (n, start, map) in &self.source.parts {
            if !self.job.parts.contains(n) {
                continue;
            }
            let (fs, label) = s
                .table
                .partitions
                .iter()
                .position(|p| p.number == *n)
                .and_then(|i| s.fs.get(i))
                .and_then(|f| f.as_ref().ok())
                .map(|f| (f.kind.to_string(), f.label.clone()))
                .unwrap_or_else(|| ("unknown".into(), String::new()));
            out.push(format!(
                "partition {n}: {fs} {} at byte {start:#x} ({} to copy)",
                sysfs::sanitize(&label),
                human_bytes(map.total())
            ));
        }
        out.extend(self.job.describe());
        if self.job.move_gpt_backup.is_some() {
            out.push("move the backup GPT to the end of the target".into());
        }
        if self.new_ids {
            out.push(new_ids_line(&s.table.kind.to_string()));
        }
        if self.verify {
            out.push("read back and compare the partitions copied unchanged".into());
        }
        out
    }

    /// The target path.
    pub fn target(&self) -> &Path {
        &self.target
    }
}

/// Opens and checks everything a clone needs, touching nothing.
pub fn prepare(plan: &ClonePlan) -> Result<PreparedClone> {
    if !plan.source.exists() {
        bail!("the source {} does not exist", plan.source.display());
    }
    if let Some(why) = sysfs::same_storage(&plan.source, &plan.target) {
        bail!("refusing to clone a disk onto itself: {why}");
    }
    if let Some(parent) = plan.target.parent().filter(|p| !p.as_os_str().is_empty()) {
        if sysfs::dir_on_disk(parent, &plan.source) {
            bail!(
                "refusing to write {}: it is on the source disk {}",
                plan.target.display(),
                plan.source.display()
            );
        }
    }
    if let Some(reason) = sysfs::target_in_use(&plan.target, None) {
        bail!("refusing to write: {reason}");
    }
    let mut warnings = Vec::new();
    let (mounted, _) = sysfs::source_conflicts(&plan.source, Path::new("/nonexistent"));
    warnings.extend(mounted);
    let ins = Inspected::open(&plan.source)?;
    let table = &ins.table;
    warnings.extend(table.warnings.iter().cloned());
    let ss = ins.disk.logical_sector();
    let source_len = ins.disk.len();
    let (target_exists, target_len) = if plan.target.exists() {
        let t = FileDisk::open(&plan.target)
            .with_context(|| format!("opening the target {}", plan.target.display()))?;
        if t.is_block_device() && t.logical_sector() != ss {
            bail!(
                "{} has {ss}-byte sectors but {} has {}-byte sectors; converting between sector \
                 sizes is not supported",
                plan.source.display(),
                plan.target.display(),
                t.logical_sector()
            );
        }
        (true, t.len())
    } else {
        (false, source_len)
    };
    // What each partition holds and what of it is copied.
    let shrinking = plan.fit != Fit::None && (target_len < source_len || plan.into.is_some());
    let mut src_parts = Vec::new();
    let mut maps = Vec::new();
    for (p, probe) in table.partitions.iter().zip(&ins.fs) {
        let (fs, map, min) = match probe {
            Ok(info) => {
                for w in &info.warnings {
                    warnings.push(format!("partition {}: {w}", p.number));
                }
                let map = match &info.used {
                    Some(u) => u.clone(),
                    None => Extents::single(0, p.size),
                };
                let measured = if shrinking && info.used.is_some() {
                    resize::measure_min(
                        ins.disk.path(),
                        p.start,
                        p.size,
                        info.kind,
                        info.block_size,
                        ss,
                    )
                } else {
                    None
                };
                (info.kind, map, measured.or(info.min_size))
            }
            Err(e) => {
                warnings.push(format!(
                    "partition {}: {e}; it is copied whole and cannot be resized",
                    p.number
                ));
                (FsKind::Unknown, Extents::single(0, p.size), None)
            }
        };
        src_parts.push(SrcPart {
            number: p.number,
            start: p.start,
            size: p.size,
            fs,
            min_size: min,
            logical: table.kind == TableKind::Mbr && p.number >= 5,
        });
        maps.push((p.number, p.start, map));
    }
    let boot_area = table.boot_area();
    let disk_map = if table.kind == TableKind::None {
        Extents::new()
    } else {
        let mut m = Extents::single(boot_area.0, boot_area.1);
        for &(s, l) in &table.table_areas {
            m.add(s, l);
        }
        Extents::from_unsorted(m.runs().to_vec())
    };
    let src = SrcLayout {
        table: table.kind,
        sector_size: u64::from(ss),
        disk_size: source_len,
        parts: src_parts,
        extended: table.extended,
        gpt_array_bytes: table
            .gpt
            .as_ref()
            .map(|g| u64::from(g.num_entries) * u64::from(g.entry_size))
            .unwrap_or(0),
        boot_area_end: boot_area.1,
    };
    if plan.parts.is_some() && plan.into.is_none() {
        bail!("clone --parts needs --into: the target partitions to write them into");
    }
    let layout = match &plan.into {
        Some(into) => {
            if plan.new_ids {
                bail!("--new-ids makes new IDs in a partition table that --into does not write");
            }
            fit::into_layout(&src, plan.parts.as_deref(), into, &plan.target, plan.fit)?
        }
        None => layout::plan(&src, target_len, plan.fit)
            .map_err(|e| anyhow!("{}: {e}", plan.target.display()))?,
    };
    let write_table = table.kind != TableKind::None && plan.into.is_none();
    let tables = if write_table && (!layout.identity || plan.new_ids) {
        Some(
            tables::build(&ins.disk, table, &layout, plan.new_ids)
                .context("building the partition table for the target")?,
        )
    } else {
        None
    };
    let move_gpt_backup = match (&table.gpt, &tables) {
        (Some(g), None) if write_table && target_len != source_len => {
            Some((g.last_usable + 1) * u64::from(ss))
        }
        _ => None,
    };
    let required = layout.required;
    let job = FitJob {
        parts: match &plan.parts {
            Some(p) if plan.into.is_some() => p.clone(),
            _ => layout.parts.iter().map(|p| p.number).collect(),
        },
        layout,
        write_table,
        tables,
        move_gpt_backup,
        boot_area_end: boot_area.1,
        scratch: plan.scratch.clone().unwrap_or_else(std::env::temp_dir),
        discard: plan.discard,
    };
    let source = DiskSourceParts {
        disk_map,
        parts: maps,
    };
    let prepared = PreparedClone {
        ins,
        source,
        target: plan.target.clone(),
        target_len,
        target_exists,
        required,
        warnings,
        new_ids: plan.new_ids,
        verify: plan.verify,
        into: plan.into.clone(),
        job,
    };
    if let Some((n, _)) = prepared.job.layout.resized {
        let i = prepared
            .ins
            .table
            .partitions
            .iter()
            .position(|p| p.number == n);
        if let Some(Ok(info)) = i.and_then(|i| prepared.ins.fs.get(i)) {
            fit::check_resizable(&prepared.job, &info.warnings)?;
        }
    }
    fit::check_scratch(&prepared.job, &prepared.source(), &plan.target)?;
    Ok(prepared)
}

/// What a clone did.
#[derive(Debug, Clone, Default)]
pub struct CloneReport {
    /// Bytes written to the target.
    pub written: u64,
    /// Bytes read back and compared (`--verify`).
    pub verified: u64,
    /// What was done besides copying.
    pub notes: Vec<String>,
}

/// Runs a prepared clone.
pub fn run(
    p: &PreparedClone,
    _confirmed: Confirmed,
    threads: usize,
    progress: &dyn Progress,
) -> Result<CloneReport> {
    for w in &p.warnings {
        progress.event(ProgressEvent::Warning(w.clone()));
    }
    let src = p.source();
    let target = Target {
        path: &p.target,
        exists: p.target_exists,
        len: p.target_len,
        sector_size: p.ins.disk.logical_sector(),
    };
    let r = fit::execute(&p.job, &src, &target, "clone", threads, progress)?;
    let mut report = CloneReport {
        written: r.written,
        verified: 0,
        notes: r.notes,
    };
    if p.verify {
        report.verified = verify(p, &src, threads, progress, &mut report.notes)?;
    }
    Ok(report)
}

/// Reads back every partition that was copied unchanged (same size, same place, same
/// filesystem) and compares it with the source.
fn verify(
    p: &PreparedClone,
    src: &DiskSource<'_>,
    threads: usize,
    progress: &dyn Progress,
    notes: &mut Vec<String>,
) -> Result<u64> {
    let target = FileDisk::open(&p.target)
        .with_context(|| format!("opening {} to verify it", p.target.display()))?;
    let mut compared = 0;
    let resized = p.job.layout.resized.map(|r| r.0);
    for placed in &p.job.layout.parts {
        if placed.moved() || placed.resized() || resized == Some(placed.number) {
            notes.push(format!(
                "partition {}: not compared (it moved or changed size)",
                placed.number
            ));
            continue;
        }
        let Some((_, base, map)) = src.parts.iter().find(|x| x.0 == placed.number) else {
            continue;
        };
        progress.event(ProgressEvent::Step {
            label: format!("verifying partition {}", placed.number),
            total: map.total(),
        });
        copy_extents(src.disk, *base, map, threads, &|off, data| {
            let at = placed.start + off;
            let mut buf = vec![0u8; data.len()];
            target
                .read_exact_at(&mut buf, at)
                .with_context(|| format!("reading {} at byte {at:#x}", p.target.display()))?;
            if let Some(i) = buf.iter().zip(data).position(|(a, b)| a != b) {
                return Err(Mismatch {
                    disk: p.target.display().to_string(),
                    offset: at + i as u64,
                    stream: format!("p{}", placed.number),
                    block: 0,
                }
                .into());
            }
            progress.event(ProgressEvent::Advance {
                bytes: data.len() as u64,
            });
            Ok(())
        })?;
        compared += map.total();
    }
    Ok(compared)
}
