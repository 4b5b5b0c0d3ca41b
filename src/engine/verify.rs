//! Verify: check an image's whole structure, read every block, check every CRC and every
//! volume's checksum; optionally compare with the source disk.

use std::path::Path;

use anyhow::{Context, Result};

use crate::disk::{BlockDev, FileDisk};
use crate::engine::blocks::for_each_block;
use crate::engine::progress::{Progress, ProgressEvent};
use crate::image::reader::Image;

/// The image differs from the disk it is compared with.
#[derive(Debug, thiserror::Error)]
#[error("{disk} differs from the image at byte {offset:#x} (stream {stream}, block {block})")]
pub struct Mismatch {
    /// The disk compared against.
    pub disk: String,
    /// First differing byte.
    pub offset: u64,
    /// Stream name.
    pub stream: String,
    /// Block number.
    pub block: u64,
}

/// What verify checked.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Blocks checked.
    pub blocks: u64,
    /// Uncompressed bytes checked.
    pub bytes: u64,
    /// Volumes checked.
    pub volumes: usize,
    /// Ranges that were unreadable when the image was saved.
    pub bad_ranges: Vec<crate::image::manifest::BadRange>,
}

/// Verifies the image in `dir`; with `against`, also compares every stored byte with that disk.
pub fn verify(
    dir: &Path,
    against: Option<&Path>,
    threads: usize,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    if crate::import::clonezilla::is_clonezilla_dir(dir) {
        let cz = crate::import::clonezilla::CzImage::open(dir)?;
        for w in &cz.warnings {
            progress.event(ProgressEvent::Warning(w.clone()));
        }
        return crate::engine::clonezilla::verify(&cz, against, progress)
            .with_context(|| format!("verifying the Clonezilla image {}", dir.display()));
    }
    let image = Image::open(dir)?;
    let streams = image.load_all()?;
    let source = match against {
        Some(p) => Some(FileDisk::open(p).with_context(|| format!("opening {}", p.display()))?),
        None => None,
    };
    let total: u64 = streams.iter().map(|s| s.map.total()).sum();
    progress.event(ProgressEvent::Job {
        op: "verify",
        total,
    });
    let mut report = VerifyReport {
        bad_ranges: image.manifest.bad_ranges.clone(),
        ..VerifyReport::default()
    };
    for s in &streams {
        progress.event(ProgressEvent::Step {
            label: format!("verifying {}", s.info.name),
            total: s.map.total(),
        });
        for_each_block(&image.dir, s, threads, |b| {
            if let Some(src) = &source {
                let mut buf = Vec::new();
                for &(disk_off, at, n) in b.pieces {
                    buf.resize(n as usize, 0);
                    src.read_exact_at(&mut buf, disk_off).with_context(|| {
                        format!("reading {} at byte {disk_off:#x}", src.path().display())
                    })?;
                    let want = &b.data[at as usize..(at + n) as usize];
                    if let Some(i) = buf.iter().zip(want).position(|(a, b)| a != b) {
                        return Err(Mismatch {
                            disk: src.path().display().to_string(),
                            offset: disk_off + i as u64,
                            stream: s.info.name.clone(),
                            block: b.block,
                        }
                        .into());
                    }
                }
            }
            progress.event(ProgressEvent::Advance {
                bytes: b.data.len() as u64,
            });
            Ok(())
        })
        .with_context(|| format!("verifying stream {} of {}", s.info.name, dir.display()))?;
        report.blocks += s.index.len() as u64;
        report.bytes += s.map.total();
        report.volumes += s.info.volumes.len();
    }
    Ok(report)
}
