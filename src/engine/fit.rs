//! The write side shared by restore and clone: put every partition's used bytes at its place
//! in a (possibly fitted) layout, write the boot area and the tables, shrink a filesystem in a
//! scratch file before the target is touched or grow it on the target afterwards, and fix the
//! boot sectors of partitions that moved.
//!
//! Where the bytes come from is a [`DataSource`]: an image (decoded and CRC-checked on every
//! core) or a disk (one reader thread doing large reads of the used extents, writers on the
//! other cores). Either way the bytes arrive in any order at a sink that writes them with
//! `pwrite` at their place, so memory stays bounded by the channels.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, bail, ensure, Context, Result};
use crossbeam_channel::bounded;

use crate::disk::table::PartitionTable;
use crate::disk::{BlockDev, FileDisk, Region};
use crate::engine::blocks::for_each_block;
use crate::engine::layout::{Change, Layout, Placed};
use crate::engine::progress::{cancelled, Progress, ProgressEvent};
use crate::engine::save::human_bytes;
use crate::engine::tables::{self, Write};
use crate::engine::{gpt, resize, Interrupted};
use crate::fs::{self, Extents};
use crate::image::manifest::Manifest;
use crate::image::reader::LoadedStream;

/// Writeback of the target is started every this many bytes written.
const WRITEBACK_EVERY: u64 = 64 << 20;

/// Which bytes of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// The boot area and table structures, at their disk offsets.
    Disk,
    /// A partition, relative to its start.
    Part(u32),
}

/// Receives bytes at an offset relative to the area (the partition's start, or the disk's).
/// Called from several threads, in any order.
pub type Sink<'a> = dyn Fn(u64, &[u8]) -> Result<()> + Sync + 'a;

/// Where the bytes of a restore or clone come from.
pub trait DataSource: Sync {
    /// The used map of an area, if the source has it.
    fn map(&self, area: Area) -> Option<&Extents>;
    /// Hands every used byte of `area` to `sink`.
    fn copy(&self, area: Area, threads: usize, sink: &Sink<'_>) -> Result<()>;
}

/// An image's streams.
pub struct ImageSource<'a> {
    /// The image directory.
    pub dir: &'a Path,
    /// Its manifest.
    pub manifest: &'a Manifest,
    /// Its loaded streams.
    pub streams: &'a [LoadedStream],
}

impl ImageSource<'_> {
    fn stream(&self, area: Area) -> Option<&LoadedStream> {
        let name = match area {
            Area::Disk => "disk",
            Area::Part(n) => {
                &self
                    .manifest
                    .partitions
                    .iter()
                    .find(|p| p.number == n)?
                    .stream
            }
        };
        self.streams.iter().find(|s| s.info.name == name)
    }
}

impl DataSource for ImageSource<'_> {
    fn map(&self, area: Area) -> Option<&Extents> {
        self.stream(area).map(|s| &s.map)
    }

    fn copy(&self, area: Area, threads: usize, sink: &Sink<'_>) -> Result<()> {
        let s = self
            .stream(area)
            .with_context(|| format!("the image has no data for {area:?}"))?;
        let base = s.info.base;
        for_each_block(self.dir, s, threads, |b| {
            for &(off, at, n) in b.pieces {
                sink(off - base, &b.data[at as usize..(at + n) as usize])?;
            }
            Ok(())
        })
    }
}

/// A disk read directly: the used extents of each partition and the boot area.
pub struct DiskSource<'a> {
    /// The disk.
    pub disk: &'a FileDisk,
    /// Boot area and table structures.
    pub disk_map: Extents,
    /// (number, start, used map relative to the start) per partition.
    pub parts: Vec<(u32, u64, Extents)>,
}

impl DataSource for DiskSource<'_> {
    fn map(&self, area: Area) -> Option<&Extents> {
        match area {
            Area::Disk => Some(&self.disk_map),
            Area::Part(n) => self.parts.iter().find(|p| p.0 == n).map(|p| &p.2),
        }
    }

    fn copy(&self, area: Area, threads: usize, sink: &Sink<'_>) -> Result<()> {
        let (base, map) = match area {
            Area::Disk => (0, &self.disk_map),
            Area::Part(n) => self
                .parts
                .iter()
                .find(|p| p.0 == n)
                .map(|p| (p.1, &p.2))
                .with_context(|| format!("the source has no partition {n}"))?,
        };
        copy_extents(self.disk, base, map, threads, sink)
    }
}

/// Largest single read of the disk reader.
const READ_CHUNK: u64 = 4 << 20;
/// Runs closer than this are read with one `pread` (the gap is read, never written).
const READ_GAP: u64 = 256 << 10;

/// Reads the runs of `map` (relative to `base`) from `disk` on one thread, in large reads, and
/// hands them to `sink` on `threads` others. The first error stops everything.
pub fn copy_extents(
    disk: &FileDisk,
    base: u64,
    map: &Extents,
    threads: usize,
    sink: &Sink<'_>,
) -> Result<()> {
    type Msg = (u64, Vec<u8>, Vec<(u64, u64)>);
    let threads = threads.max(1);
    let (tx, rx) = bounded::<Msg>(threads * 2);
    let abort = AtomicBool::new(false);
    let first_err: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let fail = |e: anyhow::Error| {
        abort.store(true, Ordering::Relaxed);
        let mut slot = first_err.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
    };
    disk.advise_sequential();
    std::thread::scope(|s| {
        let abort = &abort;
        let fail = &fail;
        s.spawn(move || {
            let send = |span: u64, runs: Vec<(u64, u64)>| -> bool {
                let end = runs.last().map(|r| r.0 + r.1).unwrap_or(span);
                let mut buf = vec![0u8; (end - span) as usize];
                let pos = base + span;
                if let Err(e) = disk.read_exact_at(&mut buf, pos) {
                    fail(anyhow!(
                        "reading {} at byte {pos:#x} ({} bytes): {e}",
                        disk.path().display(),
                        buf.len()
                    ));
                    return false;
                }
                tx.send((span, buf, runs)).is_ok()
            };
            let mut span = 0u64;
            let mut runs: Vec<(u64, u64)> = Vec::new();
            for &(start, len) in map.runs() {
                let mut at = start;
                let end = start + len;
                while at < end {
                    if abort.load(Ordering::Relaxed) {
                        return;
                    }
                    if cancelled() {
                        fail(anyhow!(Interrupted));
                        return;
                    }
                    let cur_end = runs.last().map(|r| r.0 + r.1);
                    let fits =
                        cur_end.is_some_and(|ce| at - ce <= READ_GAP && at < span + READ_CHUNK);
                    if !fits {
                        if !runs.is_empty() && !send(span, std::mem::take(&mut runs)) {
                            return;
                        }
                        span = at;
                    }
                    let n = (end - at).min(span + READ_CHUNK - at);
                    runs.push((at, n));
                    at += n;
                }
            }
            if !runs.is_empty() {
                send(span, runs);
            }
        });
        for _ in 0..threads {
            let rx = rx.clone();
            s.spawn(move || {
                for (span, buf, runs) in rx.iter() {
                    if abort.load(Ordering::Relaxed) {
                        return;
                    }
                    for (start, len) in runs {
                        let from = (start - span) as usize;
                        if let Err(e) = sink(start, &buf[from..from + len as usize]) {
                            fail(e);
                            return;
                        }
                    }
                }
            });
        }
        drop(rx);
    });
    match first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A read-only disk in memory made of the pieces of a source's `disk` area (boot area and
/// table structures); reads elsewhere give zeros. Used to read an image's tables.
pub struct SparseMem {
    len: u64,
    logical: u32,
    pieces: Vec<(u64, Vec<u8>)>,
}

/// Most bytes of table structures kept in memory.
const MAX_TABLE_BYTES: u64 = 64 << 20;

impl SparseMem {
    /// Collects the `disk` area of `src` for a disk of `len` bytes, keeping `[0, head)` and
    /// everything from `tail_from` on (the boot area's middle is not needed to read tables).
    pub fn collect(
        src: &dyn DataSource,
        len: u64,
        logical: u32,
        head: u64,
        tail_from: u64,
    ) -> Result<SparseMem> {
        let pieces = Mutex::new(Vec::new());
        let kept = AtomicU64::new(0);
        src.copy(Area::Disk, 1, &|off, data| {
            let end = off + data.len() as u64;
            let keep = |from: u64, to: u64| -> Result<()> {
                let (from, to) = (from.max(off), to.min(end));
                if from < to {
                    let n = to - from;
                    if kept.fetch_add(n, Ordering::Relaxed) + n > MAX_TABLE_BYTES {
                        bail!("the partition tables take more than {MAX_TABLE_BYTES} bytes");
                    }
                    let slice = &data[(from - off) as usize..(to - off) as usize];
                    pieces
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((from, slice.to_vec()));
                }
                Ok(())
            };
            keep(0, head)?;
            keep(tail_from.max(head), u64::MAX)
        })?;
        let mut pieces = pieces.into_inner().unwrap_or_else(|p| p.into_inner());
        pieces.sort_by_key(|p| p.0);
        Ok(SparseMem {
            len,
            logical,
            pieces,
        })
    }
}

impl BlockDev for SparseMem {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "beyond the end")
            })?;
        buf.fill(0);
        for (at, data) in &self.pieces {
            let pend = at + data.len() as u64;
            let (from, to) = ((*at).max(offset), pend.min(end));
            if from < to {
                buf[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&data[(from - at) as usize..(to - at) as usize]);
            }
        }
        Ok(())
    }

    fn write_all_at(&self, _buf: &[u8], _offset: u64) -> std::io::Result<()> {
        Err(std::io::Error::other("read-only"))
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn logical_sector(&self) -> u32 {
        self.logical
    }

    fn physical_sector(&self) -> u32 {
        self.logical
    }

    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What to write, decided and checked before anything is written.
#[derive(Debug, Clone)]
pub struct FitJob {
    /// Where every partition goes.
    pub layout: Layout,
    /// Partitions whose data is written.
    pub parts: Vec<u32>,
    /// Write the boot area and the tables (a whole-disk job).
    pub write_table: bool,
    /// Tables built for the layout (`None`: the source's table structures are copied as they
    /// are, which keeps them byte for byte when nothing moves).
    pub tables: Option<Vec<Write>>,
    /// With copied tables: the source's backup GPT is not copied (it starts at this byte) and a
    /// new one is built at the target's end.
    pub move_gpt_backup: Option<u64>,
    /// End of the boot area.
    pub boot_area_end: u64,
    /// Directory for the scratch file of a shrink.
    pub scratch: PathBuf,
    /// Discard (TRIM) the free space of every partition written instead of leaving old data.
    pub discard: bool,
}

impl FitJob {
    /// The partition to shrink before writing, if any.
    pub fn shrinking(&self) -> Option<&Placed> {
        match self.layout.resized {
            Some((n, Change::Shrink)) if self.parts.contains(&n) => self.layout.part(n),
            _ => None,
        }
    }

    /// The partition to grow after writing, if any.
    pub fn growing(&self) -> Option<&Placed> {
        match self.layout.resized {
            Some((n, Change::Grow)) if self.parts.contains(&n) => self.layout.part(n),
            _ => None,
        }
    }

    /// Scratch space a shrink needs: the partition's used bytes, plus what the resize tool may
    /// move below the new end, plus some room.
    pub fn scratch_needed(&self, src: &dyn DataSource) -> u64 {
        let Some(p) = self.shrinking() else {
            return 0;
        };
        let Some(map) = src.map(Area::Part(p.number)) else {
            return 0;
        };
        let beyond: u64 = map
            .runs()
            .iter()
            .map(|&(s, l)| (s + l).saturating_sub(s.max(p.size)))
            .sum();
        map.total() + beyond + (64 << 20)
    }

    /// Plain lines saying what changes, for the plan shown before confirmation.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.layout.parts {
            let what = match self.layout.resized {
                Some((n, Change::Grow)) if n == p.number => " (filesystem grown)",
                Some((n, Change::Shrink)) if n == p.number => " (filesystem shrunk first)",
                _ => "",
            };
            if p.moved() || p.resized() {
                out.push(format!(
                    "partition {}: byte {:#x}, {} -> byte {:#x}, {}{what}",
                    p.number,
                    p.src_start,
                    human_bytes(p.src_size),
                    p.start,
                    human_bytes(p.size)
                ));
            }
        }
        if let Some(p) = self.shrinking() {
            out.push(format!(
                "partition {} is shrunk in a scratch file in {} before the target is written",
                p.number,
                self.scratch.display()
            ));
        }
        if self.discard {
            out.push("discard the free space of the partitions written (TRIM)".into());
        }
        out.extend(self.layout.notes.iter().cloned());
        out
    }
}

/// Refuses to resize an NTFS volume that Windows left hibernated or in a Fast Startup session
/// (ntfsresize refuses it too, and resuming that session after a resize would corrupt it), or
/// whose journal was not written back. `warnings` are the partition's probe warnings.
pub fn check_resizable(job: &FitJob, warnings: &[String]) -> Result<()> {
    let Some((n, change)) = job.layout.resized else {
        return Ok(());
    };
    let Some(p) = job.layout.part(n) else {
        return Ok(());
    };
    if change == Change::None || p.fs != crate::fs::FsKind::Ntfs || !job.parts.contains(&n) {
        return Ok(());
    }
    if let Some(w) = warnings
        .iter()
        .find(|w| w.contains("hibernat") || w.contains("not written back"))
    {
        bail!("partition {n} cannot be resized: {w}\n  hint: --fit none copies it unchanged");
    }
    Ok(())
}

/// Refuses a shrink whose scratch directory is missing, lies on the target, or lacks space.
pub fn check_scratch(job: &FitJob, src: &dyn DataSource, target: &Path) -> Result<()> {
    let Some(p) = job.shrinking() else {
        return Ok(());
    };
    let dir = &job.scratch;
    if !dir.is_dir() {
        bail!(
            "shrinking partition {} needs a scratch directory; {} is not one (use --scratch DIR)",
            p.number,
            dir.display()
        );
    }
    if crate::disk::sysfs::dir_on_disk(dir, target) {
        bail!(
            "the scratch directory {} is on the target {}; use --scratch on another disk",
            dir.display(),
            target.display()
        );
    }
    let need = job.scratch_needed(src);
    let free = resize::free_bytes(dir)?;
    if free < need {
        bail!(
            "shrinking partition {} needs about {} of scratch space in {}, which has {} free; \
             choose another directory with --scratch",
            p.number,
            human_bytes(need),
            dir.display(),
            human_bytes(free)
        );
    }
    Ok(())
}

/// The target of a job.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// Its path.
    pub path: &'a Path,
    /// It exists (else it is created as a sparse file of `len` bytes).
    pub exists: bool,
    /// Its size.
    pub len: u64,
    /// Sector size of the layout.
    pub sector_size: u32,
}

/// What a job did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Bytes written to the target.
    pub written: u64,
    /// All-zero bytes not written to a new, sparse target.
    pub skipped_zero: u64,
    /// Things done that the user should know.
    pub notes: Vec<String>,
}

/// A filesystem shrunk in a scratch file, ready to be copied.
struct Shrunk {
    number: u32,
    _file: resize::ScratchFile,
    disk: FileDisk,
    used: Extents,
}

/// Copies partition `p` of `src` into a scratch file, shrinks its filesystem to `p.size` there
/// and maps what it now uses. The source and the target are not touched.
fn shrink_in_scratch(
    job: &FitJob,
    p: &Placed,
    src: &dyn DataSource,
    sector_size: u32,
    threads: usize,
    progress: &dyn Progress,
) -> Result<Shrunk> {
    let file = resize::ScratchFile::name(&job.scratch, &format!("p{}", p.number));
    let used = src
        .map(Area::Part(p.number))
        .map(Extents::total)
        .unwrap_or(0);
    progress.event(ProgressEvent::Step {
        label: format!(
            "partition {}: copying into {} to shrink it",
            p.number,
            file.path().display()
        ),
        total: used,
    });
    {
        let disk = FileDisk::create(file.path(), p.src_size, sector_size)
            .with_context(|| format!("creating {}", file.path().display()))?;
        src.copy(Area::Part(p.number), threads, &|off, data| {
            disk.write_all_at(data, off)
                .with_context(|| format!("writing {} at byte {off:#x}", file.path().display()))?;
            progress.event(ProgressEvent::Advance {
                bytes: data.len() as u64,
            });
            Ok(())
        })?;
        disk.sync()
            .with_context(|| format!("flushing {}", file.path().display()))?;
    }
    progress.event(ProgressEvent::Note(format!(
        "partition {}: shrinking {} from {} to {}",
        p.number,
        p.fs,
        human_bytes(p.src_size),
        human_bytes(p.size)
    )));
    resize::shrink(file.path(), p.size, p.fs).with_context(|| {
        format!(
            "shrinking partition {} to {} bytes; nothing was written to the target",
            p.number, p.size
        )
    })?;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(file.path())
        .with_context(|| format!("opening {}", file.path().display()))?;
    f.set_len(p.size)
        .with_context(|| format!("truncating {}", file.path().display()))?;
    drop(f);
    let disk = FileDisk::open(file.path())?;
    let info = fs::probe(&Region::whole(&disk)).map_err(|e| {
        anyhow!(
            "partition {} after shrinking: {e}; nothing was written to the target",
            p.number
        )
    })?;
    let used = info.used.with_context(|| {
        format!(
            "partition {} after shrinking: no used map; nothing was written to the target",
            p.number
        )
    })?;
    ensure!(
        used.end() <= p.size,
        "partition {} after shrinking still uses bytes up to {:#x}, beyond its new size {:#x}",
        p.number,
        used.end(),
        p.size
    );
    Ok(Shrunk {
        number: p.number,
        _file: file,
        disk,
        used,
    })
}

/// Runs a checked job: shrink (scratch only), then write partitions, boot area and tables to
/// the target, then grow and fix boot sectors. `op` names the job in progress events.
pub fn execute(
    job: &FitJob,
    src: &dyn DataSource,
    target: &Target<'_>,
    op: &'static str,
    threads: usize,
    progress: &dyn Progress,
) -> Result<Report> {
    let ss = target.sector_size;
    let shrink_total = job
        .shrinking()
        .and_then(|p| src.map(Area::Part(p.number)))
        .map(Extents::total)
        .unwrap_or(0);
    let total: u64 = job
        .parts
        .iter()
        .filter_map(|n| src.map(Area::Part(*n)).map(Extents::total))
        .sum::<u64>()
        + shrink_total
        + if job.write_table {
            src.map(Area::Disk).map(Extents::total).unwrap_or(0)
        } else {
            0
        };
    progress.event(ProgressEvent::Job { op, total });

    // 1. Shrink in scratch space: the target is still untouched if this fails.
    let shrunk = match job.shrinking() {
        Some(p) => Some(shrink_in_scratch(job, p, src, ss, threads, progress)?),
        None => None,
    };

    // 2. Partitions.
    let dev = if target.exists {
        FileDisk::open_rw(target.path).with_context(|| {
            format!(
                "opening {} for writing (is it in use?)",
                target.path.display()
            )
        })?
    } else {
        FileDisk::create(target.path, target.len, ss)
            .with_context(|| format!("creating {}", target.path.display()))?
    };
    let fresh = !target.exists;
    let written = AtomicU64::new(0);
    let skipped = AtomicU64::new(0);
    let mut notes = Vec::new();
    let place = |p: &Placed, off: u64, data: &[u8]| -> Result<()> {
        let len = data.len() as u64;
        if off + len > p.size {
            bail!(
                "partition {}: data at byte {off:#x} lies beyond its new size {:#x}",
                p.number,
                p.size
            );
        }
        progress.event(ProgressEvent::Advance { bytes: len });
        if fresh && crate::image::writer::is_zero(data) {
            skipped.fetch_add(len, Ordering::Relaxed);
            return Ok(());
        }
        let at = p.start + off;
        dev.write_all_at(data, at).with_context(|| {
            format!(
                "writing {} at byte {at:#x} ({len} bytes); the target is now inconsistent: \
                 partition {} (from byte {:#x}) is incomplete",
                target.path.display(),
                p.number,
                p.start
            )
        })?;
        let before = written.fetch_add(len, Ordering::Relaxed);
        if (before + len) / WRITEBACK_EVERY != before / WRITEBACK_EVERY {
            // Start flushing what is written so the final sync is short (advice only).
            dev.start_writeback();
        }
        Ok(())
    };
    if job.discard {
        let mut discarded = 0u64;
        let mut failed = None;
        'parts: for n in &job.parts {
            let (Some(p), Some(map)) = (
                job.layout.part(*n),
                match &shrunk {
                    Some(s) if s.number == *n => Some(&s.used),
                    _ => src.map(Area::Part(*n)),
                },
            ) else {
                continue;
            };
            for (off, len) in free_ranges(map, p.size) {
                if let Err(e) = dev.discard(p.start + off, len) {
                    failed = Some(e);
                    break 'parts;
                }
                discarded += len;
            }
        }
        notes.push(match failed {
            None => format!(
                "{} of free space discarded on {}",
                human_bytes(discarded),
                target.path.display()
            ),
            Some(e) => format!(
                "discarding free space stopped after {}: {e}",
                human_bytes(discarded)
            ),
        });
    }
    for n in &job.parts {
        let p = job
            .layout
            .part(*n)
            .with_context(|| format!("partition {n} has no place in the layout"))?;
        match &shrunk {
            Some(s) if s.number == *n => {
                progress.event(ProgressEvent::Step {
                    label: format!("partition {n} ({}, shrunk)", p.fs),
                    total: s.used.total(),
                });
                copy_extents(&s.disk, 0, &s.used, threads, &|off, data| {
                    place(p, off, data)
                })
                .with_context(|| format!("writing partition {n}"))?;
            }
            _ => {
                let total = src.map(Area::Part(*n)).map(Extents::total).unwrap_or(0);
                progress.event(ProgressEvent::Step {
                    label: format!("partition {n} ({})", p.fs),
                    total,
                });
                src.copy(Area::Part(*n), threads, &|off, data| place(p, off, data))
                    .with_context(|| format!("writing partition {n}"))?;
            }
        }
    }
    drop(shrunk);

    // 3. Boot area and tables.
    if job.write_table {
        let total = src.map(Area::Disk).map(Extents::total).unwrap_or(0);
        progress.event(ProgressEvent::Step {
            label: "boot area and partition tables".into(),
            total,
        });
        let limit = match (&job.tables, job.move_gpt_backup) {
            (Some(_), _) => job.boot_area_end,
            (None, Some(b)) => b,
            (None, None) => u64::MAX,
        }
        .min(target.len);
        src.copy(Area::Disk, threads, &|off, data| {
            progress.event(ProgressEvent::Advance {
                bytes: data.len() as u64,
            });
            let end = (off + data.len() as u64).min(limit);
            if off >= end {
                return Ok(());
            }
            let data = &data[..(end - off) as usize];
            dev.write_all_at(data, off).with_context(|| {
                format!(
                    "writing {} at byte {off:#x} (boot area and tables)",
                    target.path.display()
                )
            })?;
            written.fetch_add(data.len() as u64, Ordering::Relaxed);
            Ok(())
        })
        .context("writing the boot area and partition tables")?;
        match &job.tables {
            Some(ws) => {
                for w in ws {
                    dev.write_all_at(&w.data, w.offset).with_context(|| {
                        format!(
                            "writing the partition table at byte {:#x} of {}",
                            w.offset,
                            target.path.display()
                        )
                    })?;
                }
                notes.push("partition table written for the new layout".into());
            }
            None if job.move_gpt_backup.is_some() => {
                gpt::relocate_backup(&dev)
                    .context("moving the backup GPT to the end of the target")?;
                notes.push("backup GPT moved to the end of the target".into());
            }
            None => {}
        }
    }
    dev.sync()
        .with_context(|| format!("flushing {}", target.path.display()))?;

    // 4. Grow on the target.
    if let Some(p) = job.growing() {
        progress.event(ProgressEvent::Note(format!(
            "partition {}: growing {} to {}",
            p.number,
            p.fs,
            human_bytes(p.size)
        )));
        let note = resize::grow(target.path, p.start, p.size, p.fs, ss)
            .with_context(|| format!("growing the filesystem of partition {}", p.number))?;
        notes.push(format!("partition {}: {note}", p.number));
    }

    // 5. Boot sectors of partitions that moved or changed size without their filesystem.
    let resized = job.layout.resized.map(|r| r.0);
    for p in &job.layout.parts {
        if job.parts.contains(&p.number)
            && (p.moved() || (p.resized() && resized != Some(p.number)))
        {
            if let Some(note) = tables::fix_boot_sectors(&dev, p)? {
                notes.push(note);
            }
        }
    }
    dev.sync()
        .with_context(|| format!("flushing {}", target.path.display()))?;
    for n in &notes {
        progress.event(ProgressEvent::Note(n.clone()));
    }
    Ok(Report {
        written: written.into_inner(),
        skipped_zero: skipped.into_inner(),
        notes,
    })
}

/// The layout of a partition job (`--parts N,… --into M,…`): source partitions written into
/// existing partitions of the target, whose table is read here and never written.
pub fn into_layout(
    src: &crate::engine::layout::SrcLayout,
    parts: Option<&[u32]>,
    into: &[u32],
    target: &Path,
    fit: crate::engine::layout::Fit,
) -> Result<Layout> {
    use crate::engine::layout::{self, TargetPart};
    let parts = parts.context("--into needs --parts: which partitions go into which")?;
    if parts.len() != into.len() {
        bail!(
            "--parts names {} partitions and --into {}: give one target partition for each",
            parts.len(),
            into.len()
        );
    }
    let mut seen = into.to_vec();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != into.len() {
        bail!("--into names a target partition twice");
    }
    if !target.exists() {
        bail!(
            "--into writes into partitions of an existing disk; {} does not exist",
            target.display()
        );
    }
    let t = FileDisk::open(target).with_context(|| format!("opening {}", target.display()))?;
    let table = crate::disk::table::read_table(&Region::whole(&t))
        .with_context(|| format!("reading the partition table of {}", target.display()))?;
    if table.kind == crate::disk::table::TableKind::None {
        bail!("{} has no partition table to write into", target.display());
    }
    if u64::from(table.sector_size) != src.sector_size {
        bail!(
            "the source has {}-byte sectors, {} {}-byte sectors; converting is not supported",
            src.sector_size,
            target.display(),
            table.sector_size
        );
    }
    let mut pairs = Vec::new();
    for (n, m) in parts.iter().zip(into) {
        let p = table.partition(*m).with_context(|| {
            format!(
                "{} has no partition {m} (it has {})",
                target.display(),
                table
                    .partitions
                    .iter()
                    .map(|p| p.number.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        pairs.push((
            *n,
            TargetPart {
                number: *m,
                start: p.start,
                size: p.size,
            },
        ));
    }
    layout::into(src, &pairs, t.len(), fit).map_err(|e| anyhow!("{}: {e}", target.display()))
}

/// The ranges of `[0, size)` that `map` does not cover.
pub fn free_ranges(map: &Extents, size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for &(s, l) in map.runs() {
        if s > at {
            out.push((at, s.min(size) - at));
        }
        at = at.max(s + l);
        if at >= size {
            return out;
        }
    }
    if at < size {
        out.push((at, size - at));
    }
    out
}

/// The source's table read back from its `disk` area (an image), for rebuilding.
pub fn table_from_source(
    src: &dyn DataSource,
    len: u64,
    logical: u32,
    primary_array_end: u64,
    boot_area_end: u64,
) -> Result<(SparseMem, PartitionTable)> {
    let head = primary_array_end.max(1 << 20);
    let mem = SparseMem::collect(src, len, logical, head, boot_area_end)?;
    let table = crate::disk::table::read_table(&Region::whole(&mem))
        .context("reading the source's partition table back from the image")?;
    Ok((mem, table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hibernated_windows_is_not_resized() {
        use crate::disk::table::TableKind;
        use crate::engine::layout::{plan, Fit, SrcLayout, SrcPart};
        use crate::fs::FsKind;
        let src = SrcLayout {
            table: TableKind::Gpt,
            sector_size: 512,
            disk_size: 64 << 20,
            parts: vec![SrcPart {
                number: 1,
                start: 1 << 20,
                size: 32 << 20,
                fs: FsKind::Ntfs,
                min_size: None,
                logical: false,
            }],
            extended: None,
            gpt_array_bytes: 16384,
            boot_area_end: 1 << 20,
        };
        let job = |fit| FitJob {
            layout: plan(&src, 128 << 20, fit).unwrap(),
            parts: vec![1],
            write_table: true,
            tables: None,
            move_gpt_backup: None,
            boot_area_end: 1 << 20,
            scratch: PathBuf::from("/tmp"),
            discard: false,
        };
        let w = vec!["Windows is hibernated on this volume (hiberfil.sys ...)".to_string()];
        let e = check_resizable(&job(Fit::Auto), &w).unwrap_err();
        assert!(e.to_string().contains("--fit none"), "{e}");
        assert!(check_resizable(&job(Fit::None), &w).is_ok());
        assert!(check_resizable(&job(Fit::Auto), &["dirty".to_string()]).is_ok());
    }

    #[test]
    fn free_ranges_complement_the_map() {
        let m = Extents::from_unsorted(vec![(0, 10), (20, 5), (40, 100)]);
        assert_eq!(free_ranges(&m, 100), vec![(10, 10), (25, 15)]);
        assert_eq!(free_ranges(&m, 200), vec![(10, 10), (25, 15), (140, 60)]);
        assert_eq!(free_ranges(&Extents::new(), 8), vec![(0, 8)]);
        assert_eq!(free_ranges(&Extents::single(4, 4), 8), vec![(0, 4)]);
    }
}
