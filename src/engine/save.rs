//! Save: read the used bytes of each partition, compress and checksum them on every core,
//! write them in order into volumes, then the manifest, then rename `IMAGE.partial` to `IMAGE`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};
use crossbeam_channel::bounded;

use crate::disk::table::TableKind;
use crate::disk::{sysfs, BlockDev, FileDisk};
use crate::engine::inspect::Inspected;
use crate::engine::progress::{cancelled, Progress, ProgressEvent};
use crate::engine::{resize, verify, Interrupted};
use crate::fs::{Extents, FsInfo, FsKind};
use crate::image::format::{StreamCursor, BLOCK_SIZE, DEFAULT_VOLUME_SIZE};
use crate::image::manifest::{
    BadRange, GptInfo, Manifest, Mode, PartEntry, StreamInfo, TableInfo, FORMAT_NAME,
};
use crate::image::writer::{encode_block_owned, sync_dir, write_manifest, StreamWriter};

/// A validated save job.
#[derive(Debug, Clone)]
pub struct SavePlan {
    /// Disk or disk file to read.
    pub source: PathBuf,
    /// Image directory to create.
    pub image: PathBuf,
    /// Partitions to save (all when `None`).
    pub parts: Option<Vec<u32>>,
    /// Store partitions raw, ignoring filesystems.
    pub raw: bool,
    /// Volume size limit.
    pub volume_size: u64,
    /// Verify the image after writing it.
    pub verify: bool,
    /// Worker threads for compression.
    pub threads: usize,
    /// Go on past unreadable sectors: zero-fill them and record them in the image.
    pub rescue: bool,
}

impl SavePlan {
    /// A plan with defaults.
    pub fn new(source: &Path, image: &Path) -> SavePlan {
        SavePlan {
            source: source.to_path_buf(),
            image: image.to_path_buf(),
            parts: None,
            raw: false,
            volume_size: DEFAULT_VOLUME_SIZE,
            verify: true,
            threads: default_threads(),
            rescue: false,
        }
    }
}

/// Worker threads: one per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// What a save did.
#[derive(Debug, Clone)]
pub struct SaveReport {
    /// The manifest written.
    pub manifest: Manifest,
    /// Bytes read from the source.
    pub read_bytes: u64,
    /// Bytes written into the image.
    pub image_bytes: u64,
    /// The verification done after the save, if any.
    pub verified: Option<verify::VerifyReport>,
}

/// Refuses an image path that exists, or whose `.partial` directory exists (an earlier save or
/// convert that did not finish).
pub fn check_new_image(image: &Path) -> Result<()> {
    if image.exists() {
        bail!(
            "{} already exists; choose a new image name or remove the old image",
            image.display()
        );
    }
    let partial = partial_path(image);
    if partial.exists() {
        bail!(
            "{} exists: an earlier save into it did not finish; remove it first",
            partial.display()
        );
    }
    Ok(())
}

/// The directory a save writes into until it is complete.
pub fn partial_path(image: &Path) -> PathBuf {
    PathBuf::from(format!("{}.partial", image.display()))
}

/// Runs a save. On any error or interruption the partial image is removed.
pub fn save(plan: &SavePlan, progress: &dyn Progress) -> Result<SaveReport> {
    check_new_image(&plan.image)?;
    let partial = partial_path(&plan.image);
    let (mounted, conflict) = sysfs::source_conflicts(&plan.source, &plan.image);
    if let Some(c) = conflict {
        bail!("refusing to save: {c}");
    }
    for w in mounted {
        progress.event(ProgressEvent::Warning(w));
    }
    let inspected = Inspected::open(&plan.source)?;
    if let Some(parent) = plan.image.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            bail!(
                "the repository directory {} does not exist",
                parent.display()
            );
        }
    }
    std::fs::create_dir(&partial).with_context(|| format!("creating {}", partial.display()))?;
    match save_into(plan, &inspected, &partial, progress) {
        Ok(mut report) => {
            std::fs::rename(&partial, &plan.image).with_context(|| {
                format!("renaming {} to {}", partial.display(), plan.image.display())
            })?;
            let parent = plan.image.parent().filter(|p| !p.as_os_str().is_empty());
            sync_dir(parent.unwrap_or(Path::new(".")));
            if plan.verify {
                let v = verify::verify(&plan.image, None, plan.threads, progress)
                    .context("verifying the new image")?;
                report.verified = Some(v);
            }
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

struct Job {
    number: u32,
    fs: FsInfo,
    mode: Mode,
    map: Extents,
}

fn save_into(
    plan: &SavePlan,
    ins: &Inspected,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<SaveReport> {
    let disk = &ins.disk;
    let table = &ins.table;
    for w in &table.warnings {
        progress.event(ProgressEvent::Warning(w.clone()));
    }
    if let Some(parts) = &plan.parts {
        for n in parts {
            if table.partition(*n).is_none() {
                bail!(
                    "{} has no partition {n} (it has {})",
                    disk.path().display(),
                    list_numbers(table.partitions.iter().map(|p| p.number))
                );
            }
        }
    }
    let mut jobs = Vec::new();
    for (p, probe) in table.partitions.iter().zip(&ins.fs) {
        if plan.parts.as_ref().is_some_and(|l| !l.contains(&p.number)) {
            continue;
        }
        let mut fs = match probe {
            Ok(f) => f.clone(),
            Err(e) => {
                if plan.raw {
                    FsInfo::raw(FsKind::Unknown)
                } else {
                    bail!(
                        "partition {}: {e}\n  hint: fix the filesystem first, or save it with --raw",
                        p.number
                    );
                }
            }
        };
        for w in &fs.warnings {
            progress.event(ProgressEvent::Warning(format!(
                "partition {}: {w}",
                p.number
            )));
        }
        let (mode, map) = match (&fs.used, plan.raw) {
            (Some(used), false) => (Mode::Used, used.clone()),
            _ => (Mode::Raw, Extents::single(0, p.size)),
        };
        if plan.raw {
            fs.used = None;
        }
        // The smallest size a restore may shrink it to, as its own resize tool computes it
        // (read-only); the map's estimate stays when the tool is not there.
        if mode == Mode::Used {
            if let Some(min) = resize::measure_min(
                disk.path(),
                p.start,
                p.size,
                fs.kind,
                fs.block_size,
                disk.logical_sector(),
            ) {
                fs.min_size = Some(min);
            }
        }
        jobs.push(Job {
            number: p.number,
            fs,
            mode,
            map,
        });
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
    let total: u64 = disk_map.total() + jobs.iter().map(|j| j.map.total()).sum::<u64>();
    progress.event(ProgressEvent::Job { op: "save", total });

    let mut streams = Vec::new();
    let mut bad_ranges = Vec::new();
    let mut remaining = total;
    if table.kind != TableKind::None {
        progress.event(ProgressEvent::Step {
            label: "boot area and partition tables".into(),
            total: disk_map.total(),
        });
        let (s, bad) = save_stream(
            disk,
            "disk",
            0,
            disk.len(),
            &disk_map,
            dir,
            plan,
            remaining,
            progress,
        )?;
        remaining -= disk_map.total();
        note_bad(&mut bad_ranges, "disk", &bad, progress);
        streams.push(s);
    }
    let mut parts = Vec::new();
    for job in &jobs {
        let Some(p) = table.partition(job.number) else {
            continue;
        };
        let label = format!(
            "partition {} ({}{}, {})",
            job.number,
            job.fs.kind,
            if job.mode == Mode::Raw { ", raw" } else { "" },
            human_bytes(job.map.total())
        );
        progress.event(ProgressEvent::Step {
            label,
            total: job.map.total(),
        });
        let name = format!("p{}", job.number);
        let (s, bad) = save_stream(
            disk, &name, p.start, p.size, &job.map, dir, plan, remaining, progress,
        )
        .with_context(|| format!("saving partition {}", job.number))?;
        remaining -= job.map.total();
        note_bad(&mut bad_ranges, &name, &bad, progress);
        parts.push(PartEntry {
            number: job.number,
            fs: job.fs.kind,
            mode: job.mode,
            stream: name,
            stored_bytes: s.stored_bytes,
            image_bytes: s.image_bytes,
            block_size: job.fs.block_size,
            min_size_bytes: job.fs.min_size,
            warnings: job.fs.warnings.clone(),
        });
        streams.push(s);
    }
    let mut source = ins.summary();
    source.path = disk.path().display().to_string();
    let manifest = Manifest {
        format: FORMAT_NAME.into(),
        version: crate::image::format::VERSION,
        id: new_id(),
        created: rfc3339_now(),
        tool: format!("ferroclone {}", env!("CARGO_PKG_VERSION")),
        volume_size: plan.volume_size,
        source,
        table: TableInfo {
            kind: table.kind.to_string(),
            sector_size: table.sector_size,
            gpt: table.gpt.as_ref().map(GptInfo::from),
            extended: table.extended,
            boot_area_end: boot_area.1,
        },
        partitions: parts,
        streams,
        parent: None,
        bad_ranges,
    };
    // Every volume, map and index is synced; the manifest comes last and makes it complete.
    write_manifest(dir, &manifest)?;
    let image_bytes = manifest.streams.iter().map(|s| s.image_bytes).sum();
    Ok(SaveReport {
        read_bytes: total,
        image_bytes,
        manifest,
        verified: None,
    })
}

fn note_bad(out: &mut Vec<BadRange>, stream: &str, bad: &[(u64, u64)], progress: &dyn Progress) {
    for &(offset, length) in bad {
        progress.event(ProgressEvent::Warning(format!(
            "unreadable: {length} bytes at byte {offset:#x} ({stream}); stored as zeros"
        )));
        out.push(BadRange {
            stream: stream.to_string(),
            offset,
            length,
        });
    }
}

fn list_numbers(it: impl Iterator<Item = u32>) -> String {
    let v: Vec<String> = it.map(|n| n.to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Reads the bytes of `map` (relative to `base`) from `disk` and writes them as stream `name`.
#[allow(clippy::too_many_arguments)]
fn save_stream(
    disk: &FileDisk,
    name: &str,
    base: u64,
    length: u64,
    map: &Extents,
    dir: &Path,
    plan: &SavePlan,
    remaining: u64,
    progress: &dyn Progress,
) -> Result<(StreamInfo, Vec<(u64, u64)>)> {
    let bs = u64::from(BLOCK_SIZE);
    let blocks = map.total().div_ceil(bs);
    let threads = plan.threads.max(1);
    let (raw_tx, raw_rx) = bounded::<Result<(u64, Vec<u8>)>>(threads * 2);
    let (enc_tx, enc_rx) = bounded(threads * 2);
    // Spent buffers go back to the reader and the workers: no allocation or zeroing per block.
    // Their number is bounded by what the channels and threads hold at once.
    let (pool_tx, pool_rx) = crossbeam_channel::unbounded::<Vec<u8>>();
    let abort = AtomicBool::new(false);
    let mut writer = StreamWriter::new(dir, name, plan.volume_size);
    disk.advise_sequential();
    let bad_ranges = std::thread::scope(|s| -> Result<Vec<(u64, u64)>> {
        let abort = &abort;
        // Reader: one thread, large positional reads of the used runs, in stream order.
        let reader_pool = pool_rx.clone();
        let reader = s.spawn(move || -> Vec<(u64, u64)> {
            let mut bad = Vec::new();
            let mut cursor = StreamCursor::new(map);
            let mut pieces = Vec::new();
            for k in 0..blocks {
                if abort.load(Ordering::Relaxed) {
                    return bad;
                }
                if cancelled() {
                    let _ = raw_tx.send(Err(anyhow!(Interrupted)));
                    return bad;
                }
                let len = bs.min(map.total() - k * bs);
                cursor.take(len, &mut pieces);
                let mut buf = reader_pool.try_recv().unwrap_or_default();
                buf.resize(len as usize, 0);
                let mut at = 0usize;
                let mut failed = None;
                for &(off, n) in &pieces {
                    let pos = base + off;
                    let dst = &mut buf[at..at + n as usize];
                    if let Err(e) = disk.read_exact_at(dst, pos) {
                        if plan.rescue {
                            rescue_read(disk, dst, pos, &mut bad);
                        } else {
                            failed = Some(anyhow!(
                                "reading {} at byte {pos:#x} ({} bytes): {e}\n  hint: \
                                 --rescue goes on past unreadable sectors",
                                disk.path().display(),
                                n
                            ));
                            break;
                        }
                    }
                    at += n as usize;
                }
                let msg = match failed {
                    Some(e) => Err(e),
                    None => Ok((k, buf)),
                };
                let stop = msg.is_err();
                if raw_tx.send(msg).is_err() || stop {
                    return bad;
                }
            }
            bad
        });
        // Workers: compress and checksum on every core.
        for _ in 0..threads {
            let raw_rx = raw_rx.clone();
            let enc_tx = enc_tx.clone();
            let pool_rx = pool_rx.clone();
            let pool_tx = pool_tx.clone();
            s.spawn(move || {
                for msg in raw_rx.iter() {
                    let out = msg.map(|(k, buf)| {
                        let scratch = pool_rx.try_recv().unwrap_or_default();
                        let (enc, spare) = encode_block_owned(buf, scratch);
                        let _ = pool_tx.send(spare);
                        (k, enc)
                    });
                    if enc_tx.send(out).is_err() {
                        return;
                    }
                }
            });
        }
        drop(enc_tx);
        drop(raw_rx);
        // Writer: this thread, in block order.
        let mut pending = BTreeMap::new();
        let mut next = 0u64;
        let mut written = 0u64;
        let result = (|| -> Result<()> {
            for msg in enc_rx.iter() {
                let (k, enc) = msg?;
                pending.insert(k, enc);
                while let Some(enc) = pending.remove(&next) {
                    writer.push(next, &enc, remaining.saturating_sub(written))?;
                    written += u64::from(enc.len);
                    progress.event(ProgressEvent::Advance {
                        bytes: u64::from(enc.len),
                    });
                    next += 1;
                    let _ = pool_tx.send(enc.payload);
                }
            }
            if next != blocks {
                bail!("internal: {next} of {blocks} blocks written");
            }
            Ok(())
        })();
        if result.is_err() {
            abort.store(true, Ordering::Relaxed);
            // Drain so the other threads can finish.
            drop(enc_rx);
        }
        let found = reader.join().unwrap_or_default();
        result.map(|()| found)
    })?;
    let info = writer.finish(map, base, length, BLOCK_SIZE)?;
    Ok((info, bad_ranges))
}

/// Reads what can be read of `[pos, pos + buf.len())`: one retry, then halves down to single
/// sectors; unreadable sectors are zero-filled and recorded in `bad` as (disk offset, length).
fn rescue_read(disk: &FileDisk, buf: &mut [u8], pos: u64, bad: &mut Vec<(u64, u64)>) {
    if disk.read_exact_at(buf, pos).is_ok() {
        return;
    }
    let sector = u64::from(disk.logical_sector().max(512));
    let len = buf.len() as u64;
    if len <= sector {
        buf.fill(0);
        match bad.last_mut() {
            Some(last) if last.0 + last.1 == pos => last.1 += len,
            _ => bad.push((pos, len)),
        }
        return;
    }
    // Split at a sector boundary near the middle.
    let half = (len / 2).div_ceil(sector) * sector;
    let half = half.min(len - 1).max(1) as usize;
    let (a, b) = buf.split_at_mut(half);
    rescue_read(disk, a, pos, bad);
    rescue_read(disk, b, pos + half as u64, bad);
}

/// A random 128-bit identifier, as hex.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    if let Ok(f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = (&f).read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The current UTC time as RFC 3339, without external crates.
pub fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Formats Unix seconds as RFC 3339 UTC.
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86400;
    let rem = secs % 86400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Bytes in binary units, one decimal.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
    }
}
