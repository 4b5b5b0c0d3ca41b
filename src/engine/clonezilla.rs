//! Jobs on Clonezilla image directories (`import::clonezilla`): check every piece and checksum
//! (verify), write a disk from one (restore, called by `engine::restore`), and convert one into
//! a native image (convert). A partition's data is decompressed and parsed on a reader thread
//! while the calling thread writes, compares or re-encodes it.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use crossbeam_channel::bounded;

use crate::disk::{BlockDev, FileDisk};
use crate::engine::progress::{cancelled, Progress, ProgressEvent};
use crate::engine::save::{check_new_image, human_bytes, new_id, partial_path, rfc3339_now};
use crate::engine::verify::{Mismatch, VerifyReport};
use crate::engine::Interrupted;
use crate::fs::Extents;
use crate::image::format::{BLOCK_SIZE, DEFAULT_VOLUME_SIZE};
use crate::image::manifest::{Manifest, Mode, PartEntry, StreamInfo, FORMAT_NAME};
use crate::image::writer::{encode_block_owned, write_manifest, StreamWriter};
use crate::import::clonezilla::{CzImage, CzPart, Placed};
use crate::import::source;

/// Runs `f(partition offset, bytes)` on every chunk of partition `p`'s data, in order; the
/// data is read, decompressed and checked on another thread.
pub fn for_each_chunk(
    p: &CzPart,
    check: bool,
    mut f: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let mut reader = source::open(p, check)?;
    let (tx, rx) = bounded::<Result<(u64, Vec<u8>)>>(4);
    let (back_tx, back_rx) = bounded::<Vec<u8>>(8);
    std::thread::scope(|s| -> Result<()> {
        s.spawn(move || loop {
            if cancelled() {
                let _ = tx.send(Err(anyhow!(Interrupted)));
                return;
            }
            let mut buf = back_rx.try_recv().unwrap_or_default();
            match reader.next_chunk(&mut buf) {
                Ok(Some(off)) => {
                    if tx.send(Ok((off, buf))).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Err(e.into()));
                    return;
                }
            }
        });
        for msg in rx.iter() {
            let (off, buf) = msg?;
            f(off, &buf)?;
            let _ = back_tx.try_send(buf);
        }
        Ok(())
    })
}

/// Checks every partition's data: every piece, the decompression, every partclone checksum,
/// and that each stream ends where it should. With `against`, also compares every stored
/// byte with that disk.
pub fn verify(
    cz: &CzImage,
    against: Option<&Path>,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let source = match against {
        Some(p) => Some(FileDisk::open(p).with_context(|| format!("opening {}", p.display()))?),
        None => None,
    };
    let parts: Vec<&CzPart> = cz.parts.iter().filter(|p| p.data.is_some()).collect();
    let total: u64 = parts.iter().map(|p| CzImage::stored_bytes(p)).sum();
    progress.event(ProgressEvent::Job {
        op: "verify",
        total,
    });
    let mut report = VerifyReport::default();
    for p in parts {
        progress.event(ProgressEvent::Step {
            label: format!("checking {}", source::describe(p)),
            total: CzImage::stored_bytes(p),
        });
        let mut cmp = Vec::new();
        for_each_chunk(p, true, |off, data| {
            if let Some(src) = &source {
                cmp.resize(data.len(), 0);
                let at = p.start + off;
                src.read_exact_at(&mut cmp, at)
                    .with_context(|| format!("reading {} at byte {at:#x}", src.path().display()))?;
                if let Some(i) = cmp.iter().zip(data).position(|(a, b)| a != b) {
                    return Err(Mismatch {
                        disk: src.path().display().to_string(),
                        offset: at + i as u64,
                        stream: p.name.clone(),
                        block: off,
                    }
                    .into());
                }
            }
            report.blocks += 1;
            report.bytes += data.len() as u64;
            progress.event(ProgressEvent::Advance {
                bytes: data.len() as u64,
            });
            Ok(())
        })
        .with_context(|| format!("checking partition {} ({})", p.number, p.name))?;
        report.volumes += p.data.as_ref().map(|d| d.pieces.files.len()).unwrap_or(0);
    }
    Ok(report)
}

/// Reads a table write's bytes (a file range is read whole; callers bound it).
fn placed_bytes(w: &Placed) -> Result<Vec<u8>> {
    match w {
        Placed::Bytes(b) => Ok(b.clone()),
        Placed::File(path, off, len) => {
            use std::io::{Seek, SeekFrom};
            let mut f =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            f.seek(SeekFrom::Start(*off))
                .with_context(|| format!("reading {}", path.display()))?;
            let mut out = Vec::new();
            f.take(*len)
                .read_to_end(&mut out)
                .with_context(|| format!("reading {}", path.display()))?;
            if out.len() as u64 != *len {
                bail!(
                    "{} is shorter than when the image was opened",
                    path.display()
                );
            }
            Ok(out)
        }
    }
}

/// Calls `f(disk offset, bytes)` for each table and boot-area write, in 1 MiB pieces;
/// `skip` leaves out the write at that offset (the GPT backup on a target of another size).
pub fn for_each_table_write(
    cz: &CzImage,
    skip: Option<u64>,
    mut f: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    for (at, w) in &cz.writes {
        if Some(*at) == skip {
            continue;
        }
        match w {
            Placed::Bytes(b) => f(*at, b)?,
            Placed::File(path, off, len) => {
                let mut done = 0u64;
                while done < *len {
                    let n = (*len - done).min(u64::from(BLOCK_SIZE));
                    let piece = placed_bytes(&Placed::File(path.clone(), off + done, n))?;
                    f(at + done, &piece)?;
                    done += n;
                }
            }
        }
    }
    Ok(())
}

/// A convert job.
#[derive(Debug, Clone)]
pub struct ConvertPlan {
    /// The Clonezilla image directory.
    pub source: PathBuf,
    /// The native image directory to create.
    pub image: PathBuf,
    /// Volume size limit.
    pub volume_size: u64,
    /// Verify the new image afterwards.
    pub verify: bool,
    /// Worker threads for the verification.
    pub threads: usize,
}

impl ConvertPlan {
    /// A plan with defaults.
    pub fn new(source: &Path, image: &Path) -> ConvertPlan {
        ConvertPlan {
            source: source.to_path_buf(),
            image: image.to_path_buf(),
            volume_size: DEFAULT_VOLUME_SIZE,
            verify: true,
            threads: crate::engine::save::default_threads(),
        }
    }
}

/// Cuts a stream's bytes, given as (offset, bytes) in ascending order, into 1 MiB blocks and
/// writes them, building the map.
struct StreamBuilder {
    writer: StreamWriter,
    map: Extents,
    block: Vec<u8>,
    scratch: Vec<u8>,
    next: u64,
    end: u64,
    length: u64,
}

impl StreamBuilder {
    fn new(dir: &Path, name: &str, volume_size: u64, length: u64) -> StreamBuilder {
        StreamBuilder {
            writer: StreamWriter::new(dir, name, volume_size),
            map: Extents::new(),
            block: Vec::with_capacity(BLOCK_SIZE as usize),
            scratch: Vec::new(),
            next: 0,
            end: 0,
            length,
        }
    }

    fn push(&mut self, off: u64, mut data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if off < self.end {
            bail!("internal: data at {off:#x} comes before {:#x}", self.end);
        }
        let end = off + data.len() as u64;
        if end > self.length {
            bail!(
                "data at bytes {off:#x}..{end:#x} lies beyond the {}-byte region",
                self.length
            );
        }
        self.map.add(off, data.len() as u64);
        self.end = end;
        while !data.is_empty() {
            let room = BLOCK_SIZE as usize - self.block.len();
            let n = room.min(data.len());
            self.block.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.block.len() == BLOCK_SIZE as usize {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.block);
        let (enc, spare) = encode_block_owned(data, std::mem::take(&mut self.scratch));
        self.writer.push(self.next, &enc, 0)?;
        self.next += 1;
        self.scratch = spare;
        self.block = enc.payload;
        self.block.clear();
        if self.block.capacity() < BLOCK_SIZE as usize {
            self.block.reserve(BLOCK_SIZE as usize);
        }
        Ok(())
    }

    fn finish(mut self, base: u64) -> Result<StreamInfo> {
        self.flush()?;
        Ok(self
            .writer
            .finish(&self.map, base, self.length, BLOCK_SIZE)?)
    }
}

/// Converts a Clonezilla image directory into a native image: the boot area and table sectors
/// become the `disk` stream, each partition's used blocks a `p<N>` stream; the manifest is
/// written last and `IMAGE.partial` renamed, as a save does. Every checksum of the source is
/// checked on the way; the new image is verified afterwards unless asked not to.
pub fn convert(
    plan: &ConvertPlan,
    progress: &dyn Progress,
) -> Result<(Manifest, Option<VerifyReport>)> {
    let cz = CzImage::open(&plan.source)?;
    for w in &cz.warnings {
        progress.event(ProgressEvent::Warning(w.clone()));
    }
    check_new_image(&plan.image)?;
    let partial = partial_path(&plan.image);
    std::fs::create_dir(&partial).with_context(|| format!("creating {}", partial.display()))?;
    match convert_into(&cz, plan, &partial, progress) {
        Ok(m) => {
            std::fs::rename(&partial, &plan.image).with_context(|| {
                format!("renaming {} to {}", partial.display(), plan.image.display())
            })?;
            let v = if plan.verify {
                Some(
                    crate::engine::verify::verify(&plan.image, None, plan.threads, progress)
                        .context("verifying the new image")?,
                )
            } else {
                None
            };
            Ok((m, v))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

fn convert_into(
    cz: &CzImage,
    plan: &ConvertPlan,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<Manifest> {
    let mut m = cz.manifest();
    let table_bytes: u64 = cz.writes.iter().map(|w| w.1.len()).sum();
    let total = table_bytes + cz.restorable().map(CzImage::stored_bytes).sum::<u64>();
    progress.event(ProgressEvent::Job {
        op: "convert",
        total,
    });
    progress.event(ProgressEvent::Step {
        label: "boot area and partition tables".into(),
        total: table_bytes,
    });
    let mut streams = Vec::new();
    let mut disk = StreamBuilder::new(dir, "disk", plan.volume_size, cz.disk_size);
    for_each_table_write(cz, None, |at, data| {
        progress.event(ProgressEvent::Advance {
            bytes: data.len() as u64,
        });
        disk.push(at, data)
    })
    .context("storing the boot area and partition tables")?;
    streams.push(disk.finish(0)?);
    let mut parts = Vec::new();
    for p in cz.restorable() {
        let Some(entry) = m.partitions.iter().find(|e| e.number == p.number) else {
            continue;
        };
        progress.event(ProgressEvent::Step {
            label: format!(
                "partition {} ({}, {}) from {}",
                p.number,
                p.fs,
                human_bytes(CzImage::stored_bytes(p)),
                source::describe(p)
            ),
            total: CzImage::stored_bytes(p),
        });
        let name = format!("p{}", p.number);
        let mut b = StreamBuilder::new(dir, &name, plan.volume_size, p.size);
        for_each_chunk(p, true, |off, data| {
            progress.event(ProgressEvent::Advance {
                bytes: data.len() as u64,
            });
            b.push(off, data)
        })
        .with_context(|| format!("converting partition {} ({})", p.number, p.name))?;
        let s = b.finish(p.start)?;
        parts.push(PartEntry {
            stored_bytes: s.stored_bytes,
            image_bytes: s.image_bytes,
            stream: name,
            ..entry.clone()
        });
        streams.push(s);
    }
    m.format = FORMAT_NAME.into();
    m.version = crate::image::format::VERSION;
    m.id = new_id();
    m.created = rfc3339_now();
    m.tool = format!(
        "ferroclone {} (converted from {}, made {})",
        env!("CARGO_PKG_VERSION"),
        cz.tool,
        cz.created
    );
    m.volume_size = plan.volume_size;
    m.source.path = format!("{} ({})", cz.dir.display(), cz.disk);
    for sp in &mut m.source.partitions {
        if let Some(pe) = parts.iter().find(|e| e.number == sp.number) {
            sp.used_bytes = pe.stored_bytes;
        }
    }
    m.partitions = parts;
    m.streams = streams;
    for e in &m.partitions {
        if e.mode == Mode::Raw {
            progress.event(ProgressEvent::Note(format!(
                "partition {}: raw data (dd), all-zero blocks are holes",
                e.number
            )));
        }
    }
    write_manifest(dir, &m)?;
    Ok(m)
}
