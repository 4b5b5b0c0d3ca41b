//! Inspecting a disk: its table and what each partition holds.

use std::path::Path;

use anyhow::{Context, Result};

use crate::disk::table::{read_table, PartitionTable};
use crate::disk::{sysfs, BlockDev, FileDisk, Region};
use crate::fs::{self, FsInfo, FsKind};
use crate::image::manifest::{DiskSummary, PartitionSummary};

/// A disk with its table and the probe of every partition.
pub struct Inspected {
    /// The opened disk.
    pub disk: FileDisk,
    /// Its table.
    pub table: PartitionTable,
    /// One probe result per partition, in table order; `Err` text when the map failed.
    pub fs: Vec<Result<FsInfo, String>>,
}

impl Inspected {
    /// Opens and inspects `path`.
    pub fn open(path: &Path) -> Result<Inspected> {
        let disk = FileDisk::open(path).with_context(|| format!("opening {}", path.display()))?;
        Self::from_disk(disk)
    }

    /// Inspects an opened disk.
    pub fn from_disk(disk: FileDisk) -> Result<Inspected> {
        let table = read_table(&Region::whole(&disk))
            .with_context(|| format!("reading the partition table of {}", disk.path().display()))?;
        let fs = table
            .partitions
            .iter()
            .map(|p| fs::probe(&Region::new(&disk, p.start, p.size)).map_err(|e| e.to_string()))
            .collect();
        Ok(Inspected { disk, table, fs })
    }

    /// The contract's `inspect --json` shape.
    pub fn summary(&self) -> DiskSummary {
        let (model, serial) = sysfs::model_serial(self.disk.path());
        DiskSummary {
            path: self.disk.path().display().to_string(),
            size_bytes: self.disk.len(),
            logical_sector_size: self.disk.logical_sector(),
            physical_sector_size: self.disk.physical_sector(),
            model,
            serial,
            table: self.table.kind.to_string(),
            disk_id: self.table.disk_id.clone(),
            partitions: self
                .table
                .partitions
                .iter()
                .zip(&self.fs)
                .map(|(p, f)| {
                    let (kind, label, uuid, used) = match f {
                        Ok(i) => (
                            i.kind,
                            i.label.clone(),
                            i.uuid.clone(),
                            i.used.as_ref().map(|u| u.total()).unwrap_or(p.size),
                        ),
                        Err(_) => (FsKind::Unknown, String::new(), String::new(), p.size),
                    };
                    PartitionSummary {
                        number: p.number,
                        start_bytes: p.start,
                        size_bytes: p.size,
                        type_id: p.type_id.clone(),
                        name: sysfs::sanitize(&p.name),
                        fs: kind,
                        label: sysfs::sanitize(&label),
                        uuid,
                        used_bytes: used,
                    }
                })
                .collect(),
        }
    }
}
