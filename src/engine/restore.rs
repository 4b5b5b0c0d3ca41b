//! Restore: check the whole image, check the target, fit the layout to the target's size,
//! then write every block at its place on every core, write the boot area and tables (moved
//! or rebuilt for the target), and resize the main filesystem when asked (`engine::fit`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::disk::table::{read_table, TableKind};
use crate::disk::{sysfs, BlockDev, FileDisk, Region};
use crate::engine::fit::{self, FitJob, ImageSource, Target};
pub use crate::engine::layout::Fit;
use crate::engine::layout::{self, SrcLayout, SrcPart};
use crate::engine::progress::{Progress, ProgressEvent};
use crate::engine::save::human_bytes;
use crate::engine::tables;
use crate::engine::{clonezilla, gpt};
use crate::image::manifest::Manifest;
use crate::image::reader::{Image, LoadedStream};
use crate::import::clonezilla::{is_clonezilla_dir, CzImage};

/// Writeback of the target is started every this many bytes (see `BlockDev::start_writeback`).
const WRITEBACK_EVERY: u64 = 64 << 20;

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
    /// New disk and partition IDs.
    pub new_ids: bool,
    /// Write `parts` into these partitions of the target, keeping its table.
    pub into: Option<Vec<u32>>,
    /// Directory for the scratch file of a shrink (default: the image's repository).
    pub scratch: Option<PathBuf>,
    /// Discard the free space of every partition written (BLKDISCARD; a hole in a file).
    pub discard: bool,
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
    /// A Clonezilla image directory instead of a native image (`image.manifest` then
    /// describes it, with no streams).
    clonezilla: Option<Box<CzImage>>,
    /// Clonezilla images: skip the full check of every piece and checksum before writing.
    skip_check: bool,
    target: PathBuf,
    /// Size of the target (existing) or of the file to create.
    pub target_len: u64,
    /// The target exists and will be overwritten.
    pub target_exists: bool,
    /// Smallest target that holds the layout as fitted.
    pub required: u64,
    new_ids: bool,
    into: Vec<(u32, u32)>,
    job: FitJob,
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
        if self.job.write_table {
            out.push(format!(
                "write the boot area and the {} partition table{}",
                m.table.kind,
                if self.job.tables.is_some() {
                    " (rebuilt for the target)"
                } else {
                    ""
                }
            ));
        } else if m.table.kind != "none" {
            out.push("keep the target's partition table".into());
        }
        for (n, m) in &self.into {
            out.push(format!(
                "partition {n} of the image goes into partition {m} of the target"
            ));
        }
        for n in &self.job.parts {
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
        out.extend(self.job.describe());
        if self.job.move_gpt_backup.is_some() {
            out.push("move the backup GPT to the end of the target".into());
        }
        if let Some(cz) = &self.clonezilla {
            for w in &cz.warnings {
                out.push(format!("warning: {w}"));
            }
        }
        if self.new_ids {
            out.push(new_ids_line(&m.table.kind));
        }
        out
    }

    /// The target path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Clonezilla images carry no index, so by default `run` reads and checks the whole image
    /// before it writes anything (as Clonezilla's own restore does); this skips that pass.
    /// Damage is then found while writing, and the restore stops there.
    pub fn set_skip_check(&mut self, skip: bool) {
        self.skip_check = skip;
    }

    /// True when the image is a Clonezilla image directory.
    pub fn is_clonezilla(&self) -> bool {
        self.clonezilla.is_some()
    }
}

/// The plan line for `--new-ids`.
pub fn new_ids_line(kind: &str) -> String {
    if kind == "gpt" {
        "new disk GUID and partition GUIDs (filesystem UUIDs are kept)".into()
    } else {
        "new MBR disk signature (filesystem UUIDs are kept)".into()
    }
}

/// The source layout an image records.
pub fn src_layout(m: &Manifest) -> SrcLayout {
    let table = match m.table.kind.as_str() {
        "gpt" => TableKind::Gpt,
        "mbr" => TableKind::Mbr,
        _ => TableKind::None,
    };
    SrcLayout {
        table,
        sector_size: u64::from(m.table.sector_size),
        disk_size: m.source.size_bytes,
        parts: m
            .source
            .partitions
            .iter()
            .map(|p| {
                let e = m.partitions.iter().find(|e| e.number == p.number);
                SrcPart {
                    number: p.number,
                    start: p.start_bytes,
                    size: p.size_bytes,
                    fs: e.map(|e| e.fs).unwrap_or(p.fs),
                    min_size: e.and_then(|e| e.min_size_bytes),
                    logical: table == TableKind::Mbr && p.number >= 5,
                }
            })
            .collect(),
        extended: m.table.extended,
        gpt_array_bytes: m
            .table
            .gpt
            .as_ref()
            .map(|g| u64::from(g.num_entries) * u64::from(g.entry_size))
            .unwrap_or(0),
        boot_area_end: m.table.boot_area_end,
    }
}

/// Opens and checks everything a restore needs, touching nothing.
pub fn prepare(plan: &RestorePlan) -> Result<Prepared> {
    let (image, streams, clonezilla) = if is_clonezilla_dir(&plan.image) {
        if plan.fit != Fit::None || plan.new_ids || plan.into.is_some() {
            bail!(
                "--fit, --new-ids and --into are not available for Clonezilla images yet; \
                 `ferroclone convert` it into a native image first"
            );
        }
        let cz = CzImage::open(&plan.image)
            .context("checking the Clonezilla image before writing anything")?;
        let image = Image {
            dir: plan.image.clone(),
            manifest: cz.manifest(),
        };
        (image, Vec::new(), Some(Box::new(cz)))
    } else {
        let image = Image::open(&plan.image)?;
        let streams = image
            .load_all()
            .context("checking the image before writing anything")?;
        (image, streams, None)
    };
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
    let ss = m.table.sector_size;
    if let Some(reason) = sysfs::target_in_use(&plan.target, Some(&plan.image)) {
        bail!("refusing to write: {reason}");
    }
    let (target_exists, target_len, target_table) = if plan.target.exists() {
        let t = FileDisk::open(&plan.target)
            .with_context(|| format!("opening the target {}", plan.target.display()))?;
        if t.is_block_device() && t.logical_sector() != ss {
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
    let all = parts.len() == m.partitions.len();
    let write_table = plan.into.is_none()
        && m.table.kind != "none"
        && (all
            || !target_exists
            || target_table
                .as_ref()
                .is_none_or(|t| t.kind == TableKind::None));
    if plan.fit != Fit::None && !all && plan.into.is_none() {
        bail!(
            "--fit fits a whole disk: restore every partition (leave out --parts), or write \
             partitions into the target's own with --into"
        );
    }
    if plan.new_ids && !write_table {
        bail!("--new-ids makes new IDs in a partition table this restore does not write");
    }
    let src = src_layout(m);
    let layout = match &plan.into {
        Some(into) => fit::into_layout(&src, plan.parts.as_deref(), into, &plan.target, plan.fit)?,
        None => layout::plan(&src, target_len, plan.fit)
            .map_err(|e| anyhow!("{}: {e}", plan.target.display()))?,
    };
    if !write_table && m.table.kind != "none" && plan.into.is_none() {
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
    let tables = if write_table && (!layout.identity || plan.new_ids) {
        let isrc = ImageSource {
            dir: &image.dir,
            manifest: m,
            streams: &streams,
        };
        let primary_end = m
            .table
            .gpt
            .as_ref()
            .map(|g| {
                g.primary_entries_lba * u64::from(ss)
                    + u64::from(g.num_entries) * u64::from(g.entry_size)
            })
            .unwrap_or(0);
        let (mem, table) = fit::table_from_source(
            &isrc,
            m.source.size_bytes,
            ss,
            primary_end,
            m.table.boot_area_end,
        )?;
        Some(
            tables::build(&mem, &table, &layout, plan.new_ids)
                .context("building the partition table for the target")?,
        )
    } else {
        None
    };
    let move_gpt_backup = match (&m.table.gpt, &tables) {
        (Some(g), None) if write_table && target_len != m.source.size_bytes => {
            Some((g.last_usable + 1) * u64::from(ss))
        }
        _ => None,
    };
    let scratch = plan.scratch.clone().unwrap_or_else(|| {
        plan.image
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    });
    let required = layout.required;
    let job = FitJob {
        layout,
        parts,
        write_table,
        tables,
        move_gpt_backup,
        boot_area_end: m.table.boot_area_end,
        scratch,
        discard: plan.discard,
    };
    if let Some((n, _)) = job.layout.resized {
        if let Some(e) = m.partitions.iter().find(|e| e.number == n) {
            fit::check_resizable(&job, &e.warnings)?;
        }
    }
    fit::check_scratch(
        &job,
        &ImageSource {
            dir: &image.dir,
            manifest: &image.manifest,
            streams: &streams,
        },
        &plan.target,
    )?;
    Ok(Prepared {
        image,
        streams,
        clonezilla,
        skip_check: false,
        target: plan.target.clone(),
        target_len,
        target_exists,
        required,
        new_ids: plan.new_ids,
        into: match &plan.into {
            Some(into) => job
                .parts
                .iter()
                .copied()
                .zip(into.iter().copied())
                .collect(),
            None => Vec::new(),
        },
        job,
    })
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    /// Bytes written to the target.
    pub written: u64,
    /// Zero blocks skipped on a fresh target.
    pub skipped_zero: u64,
    /// What was done besides copying (tables rebuilt, filesystem resized…).
    pub notes: Vec<String>,
}

/// Runs a prepared restore.
pub fn run(
    p: &Prepared,
    _confirmed: Confirmed,
    threads: usize,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let m = &p.image.manifest;
    if let Some(cz) = &p.clonezilla {
        if !p.skip_check {
            progress.event(ProgressEvent::Note(
                "checking every piece and checksum of the Clonezilla image before writing \
                 (--skip-check skips this)"
                    .into(),
            ));
            clonezilla::verify(cz, None, progress).with_context(|| {
                format!(
                    "the image is damaged; nothing was written to {}",
                    p.target.display()
                )
            })?;
        }
        let target = if p.target_exists {
            FileDisk::open_rw(&p.target).with_context(|| {
                format!("opening {} for writing (is it in use?)", p.target.display())
            })?
        } else {
            FileDisk::create(&p.target, p.target_len, m.table.sector_size)
                .with_context(|| format!("creating {}", p.target.display()))?
        };
        return run_clonezilla(p, cz, &target, progress);
    }
    let src = ImageSource {
        dir: &p.image.dir,
        manifest: m,
        streams: &p.streams,
    };
    let target = Target {
        path: &p.target,
        exists: p.target_exists,
        len: p.target_len,
        sector_size: m.table.sector_size,
    };
    let r = fit::execute(&p.job, &src, &target, "restore", threads, progress)?;
    Ok(RestoreReport {
        written: r.written,
        skipped_zero: r.skipped_zero,
        notes: r.notes,
    })
}

/// Writes a Clonezilla image: each partition's used blocks at its place (zero chunks skipped on
/// a new, sparse file), swap headers, then the boot area and table sectors; the GPT backup is
/// rebuilt at the end of a target of another size.
fn run_clonezilla(
    p: &Prepared,
    cz: &CzImage,
    target: &FileDisk,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let fresh = !p.target_exists;
    let mut report = RestoreReport::default();
    let parts: Vec<_> = p.job.parts.iter().filter_map(|n| cz.part(*n)).collect();
    let table_bytes: u64 = if p.job.write_table {
        cz.writes.iter().map(|w| w.1.len()).sum()
    } else {
        0
    };
    progress.event(ProgressEvent::Job {
        op: "restore",
        total: parts.iter().map(|x| CzImage::stored_bytes(x)).sum::<u64>() + table_bytes,
    });
    let mut written_since = 0u64;
    for part in parts {
        progress.event(ProgressEvent::Step {
            label: format!(
                "partition {} ({}) from {}",
                part.number,
                part.fs,
                crate::import::source::describe(part)
            ),
            total: CzImage::stored_bytes(part),
        });
        clonezilla::for_each_chunk(part, true, |off, data| {
            let at = part.start + off;
            if fresh && crate::image::writer::is_zero(data) {
                report.skipped_zero += data.len() as u64;
            } else {
                target.write_all_at(data, at).with_context(|| {
                    format!(
                        "writing {} at byte {at:#x} ({} bytes); the target is now inconsistent \
                         from byte {:#x} on",
                        p.target.display(),
                        data.len(),
                        part.start
                    )
                })?;
                report.written += data.len() as u64;
                written_since += data.len() as u64;
                if written_since >= WRITEBACK_EVERY {
                    target.start_writeback();
                    written_since = 0;
                }
            }
            progress.event(ProgressEvent::Advance {
                bytes: data.len() as u64,
            });
            Ok(())
        })
        .with_context(|| format!("restoring partition {} ({})", part.number, part.name))?;
    }
    if p.job.write_table {
        progress.event(ProgressEvent::Step {
            label: "boot area and partition tables".into(),
            total: table_bytes,
        });
        let skip = if p.job.move_gpt_backup.is_some() {
            cz.gpt_backup_at
        } else {
            None
        };
        clonezilla::for_each_table_write(cz, skip, |at, data| {
            target
                .write_all_at(data, at)
                .with_context(|| format!("writing {} at byte {at:#x}", p.target.display()))?;
            report.written += data.len() as u64;
            progress.event(ProgressEvent::Advance {
                bytes: data.len() as u64,
            });
            Ok(())
        })
        .context("restoring the boot area and partition tables")?;
        if p.job.move_gpt_backup.is_some() {
            gpt::relocate_backup(target)
                .context("moving the backup GPT to the end of the target")?;
            progress.event(ProgressEvent::Note(
                "backup GPT moved to the end of the target".into(),
            ));
        }
    }
    target
        .sync()
        .with_context(|| format!("flushing {}", p.target.display()))?;
    Ok(report)
}
