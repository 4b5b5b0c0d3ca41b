//! A Clonezilla (or Rescuezilla) image directory: which disk it holds, its partition table
//! (`<disk>-pt.sf`, the raw sectors in `-mbr`, `-hidden-data-after-mbr`, `-gpt-1st`, `-gpt-2nd`,
//! `<part>-ebr`), and where each partition's data is (`<part>.<fs>-ptcl-img.<z>[.aa…]`,
//! `<part>.dd-img…`, `<part>.ntfs-img…`; swap recreated from `swappt-<part>.info`).
//!
//! [`CzImage::open`] reads and checks all of it without touching any disk: every table file
//! parses and agrees with `-pt.sf` (the table sectors are assembled on a sparse in-memory disk
//! and read back with `disk::table`), every partition's pieces are present, and each data
//! file's header and bitmap are valid. Reading the data itself is `import::source`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::bytes::{le32, le64};
use crate::disk::table::{read_table, PartitionTable, TableKind};
use crate::disk::{BlockDev, Region};
use crate::fs::FsKind;
use crate::image::manifest::{
    DiskSummary, GptInfo, Manifest, Mode, PartEntry, PartitionSummary, TableInfo,
};
use crate::import::pieces::{Compression, Pieces};
use crate::import::{partclone, source, ImportError};

/// Text files read whole are at most this big.
const MAX_TEXT: u64 = 16 << 20;

/// Does `dir` look like a Clonezilla image directory (and not a ferroclone image)?
pub fn is_clonezilla_dir(dir: &Path) -> bool {
    dir.is_dir()
        && !dir.join("manifest.json").exists()
        && (dir.join("parts").is_file() || dir.join("disk").is_file())
}

/// One line of an `sfdisk -d` dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfEntry {
    /// Device node as dumped (`/dev/sda1`).
    pub device: String,
    /// Partition number (trailing digits of the device name).
    pub number: u32,
    /// First sector.
    pub start: u64,
    /// Sectors.
    pub size: u64,
    /// `type=`: a GUID (GPT) or a hex byte (MBR).
    pub type_id: String,
    /// `uuid=` (GPT).
    pub uuid: Option<String>,
    /// `name=` (GPT).
    pub name: Option<String>,
    /// `attrs=` (GPT).
    pub attrs: Option<String>,
    /// `bootable` (MBR).
    pub bootable: bool,
}

/// A parsed `sfdisk -d` dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfDump {
    /// `gpt` or `dos`.
    pub label: String,
    /// `label-id:` (disk GUID or MBR signature).
    pub label_id: Option<String>,
    /// `first-lba:` (GPT).
    pub first_lba: Option<u64>,
    /// `last-lba:` (GPT).
    pub last_lba: Option<u64>,
    /// `sector-size:` (512 when absent, as old sfdisk wrote no such line).
    pub sector_size: u32,
    /// The partitions.
    pub entries: Vec<SfEntry>,
}

fn trailing_number(dev: &str) -> Option<u32> {
    let digits: String = dev
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().ok()
}

/// Splits `start= 2048, size= 100, type=83, name="a, b", bootable` into fields.
fn split_fields(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => {
                out.push(cur.trim().to_string());
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(v)
        .to_string()
}

/// Parses an `sfdisk -d` dump (util-linux 2.26 and later: `label:`, `unit: sectors`, …).
pub fn parse_sfdisk(text: &str) -> Result<SfDump, String> {
    let mut label = None;
    let mut label_id = None;
    let mut first_lba = None;
    let mut last_lba = None;
    let mut sector_size = 512u32;
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let lineno = i + 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((dev, rest)) = line.split_once(" : ").or_else(|| {
            line.starts_with('/')
                .then(|| line.split_once(':'))
                .flatten()
        }) {
            let mut e = SfEntry {
                device: dev.trim().to_string(),
                number: trailing_number(dev.trim())
                    .ok_or_else(|| format!("line {lineno}: no partition number in {dev:?}"))?,
                start: 0,
                size: 0,
                type_id: String::new(),
                uuid: None,
                name: None,
                attrs: None,
                bootable: false,
            };
            let mut have_start = false;
            let mut have_size = false;
            for f in split_fields(rest) {
                let (k, v) = match f.split_once('=') {
                    Some((k, v)) => (k.trim(), v.trim()),
                    None => (f.as_str(), ""),
                };
                let num = |v: &str| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| format!("line {lineno}: {k}={v:?} is not a number"))
                };
                match k {
                    "start" => {
                        e.start = num(v)?;
                        have_start = true;
                    }
                    "size" => {
                        e.size = num(v)?;
                        have_size = true;
                    }
                    "type" | "Id" => e.type_id = v.to_string(),
                    "uuid" => e.uuid = Some(unquote(v)),
                    "name" => e.name = Some(unquote(v)),
                    "attrs" => e.attrs = Some(unquote(v)),
                    "bootable" => e.bootable = true,
                    _ => {}
                }
            }
            if !have_start || !have_size {
                return Err(format!(
                    "line {lineno}: a partition without start= or size="
                ));
            }
            if e.size == 0 {
                // sfdisk dumps unused MBR slots this way in old versions.
                continue;
            }
            entries.push(e);
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(format!(
                "line {lineno}: {line:?} is neither a header nor a partition"
            ));
        };
        let v = v.trim();
        match k.trim() {
            "label" => label = Some(v.to_string()),
            "label-id" => label_id = Some(v.to_string()),
            "first-lba" => first_lba = v.parse().ok(),
            "last-lba" => last_lba = v.parse().ok(),
            "sector-size" => {
                sector_size = v
                    .parse()
                    .ok()
                    .filter(|s: &u32| *s == 512 || *s == 4096)
                    .ok_or_else(|| format!("line {lineno}: sector-size {v:?}"))?
            }
            "unit" if v != "sectors" => {
                return Err(format!("line {lineno}: unit {v:?}; only sectors are read"))
            }
            _ => {}
        }
    }
    let label = label.ok_or("no label: line (util-linux before 2.26?)")?;
    if label != "gpt" && label != "dos" {
        return Err(format!("label {label:?}; only gpt and dos tables are read"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for e in &entries {
        if !seen.insert(e.number) {
            return Err(format!("partition {} listed twice", e.number));
        }
    }
    Ok(SfDump {
        label,
        label_id,
        first_lba,
        last_lba,
        sector_size,
        entries,
    })
}

/// Where a partition's data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataKind {
    /// A partclone image of filesystem `fs` (the name in the file: ext4, ntfs, vfat, …).
    Partclone {
        /// partclone's filesystem name.
        fs: String,
    },
    /// A raw stream: `partclone.dd` (`dd-ptcl-img`) or dd (`dd-img`).
    Raw,
    /// An ntfsclone image.
    Ntfsclone,
}

/// A partition's data file.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Kind.
    pub kind: DataKind,
    /// The name without the piece suffix (`sda1.ext4-ptcl-img.gz`).
    pub name: String,
    /// Its pieces.
    pub pieces: Pieces,
    /// The compression, from the first bytes.
    pub compression: Compression,
    /// Bytes of partition data it holds (partclone: used blocks; ntfsclone: clusters in use;
    /// raw: unknown until read, the partition size).
    pub stored_bytes: u64,
    /// partclone header, when it is one.
    pub partclone: Option<partclone::Header>,
}

/// One partition of the disk.
#[derive(Debug, Clone)]
pub struct CzPart {
    /// Number.
    pub number: u32,
    /// Short name (`sda1`).
    pub name: String,
    /// First byte.
    pub start: u64,
    /// Bytes.
    pub size: u64,
    /// Type (GUID or `0x83`).
    pub type_id: String,
    /// GPT name.
    pub part_name: String,
    /// Filesystem (from the data file name, `dev-fs.list`, `blkid.list`).
    pub fs: FsKind,
    /// Label from `blkid.list`.
    pub label: String,
    /// UUID from `blkid.list`.
    pub uuid: String,
    /// The data, when the partition was imaged.
    pub data: Option<DataFile>,
    /// A swap partition to recreate: (UUID, LABEL).
    pub swap: Option<(String, String)>,
}

/// Bytes to put on the disk at an offset: the table sectors and the boot area.
#[derive(Debug, Clone)]
pub enum Placed {
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// A byte range of a file: (file, offset in it, length).
    File(PathBuf, u64, u64),
}

impl Placed {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Placed::Bytes(b) => b.len() as u64,
            Placed::File(_, _, l) => *l,
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An opened and checked Clonezilla image.
#[derive(Debug, Clone)]
pub struct CzImage {
    /// The directory.
    pub dir: PathBuf,
    /// The disk's short name (`sda`).
    pub disk: String,
    /// The dump.
    pub sf: SfDump,
    /// Source disk size in bytes.
    pub disk_size: u64,
    /// Logical sector size.
    pub sector_size: u32,
    /// Every partition of the table (not the extended container).
    pub parts: Vec<CzPart>,
    /// The MBR extended container (start, size) in bytes.
    pub extended: Option<(u64, u64)>,
    /// The table as read back from the assembled sectors.
    pub table: PartitionTable,
    /// Table and boot-area writes, sorted by offset; the GPT backup last.
    pub writes: Vec<(u64, Placed)>,
    /// Where the GPT backup structures start on the source (its last 33 sectors).
    pub gpt_backup_at: Option<u64>,
    /// Things the user should know.
    pub warnings: Vec<String>,
    /// `time_of_img`/first line of `clonezilla-img`, when found.
    pub created: String,
    /// The tool line.
    pub tool: String,
}

fn read_text(path: &Path) -> Result<String, ImportError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            ImportError::Missing {
                file: path.to_path_buf(),
                detail: "the image needs this file".into(),
            }
        } else {
            ImportError::io("reading", path, e)
        }
    })?;
    if meta.len() > MAX_TEXT {
        return Err(ImportError::Corrupt {
            file: path.to_path_buf(),
            detail: format!(
                "{} bytes; a text file of the image is at most {MAX_TEXT}",
                meta.len()
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| ImportError::io("reading", path, e))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn read_small(path: &Path, len: u64) -> Result<Vec<u8>, ImportError> {
    let meta = std::fs::metadata(path).map_err(|e| ImportError::io("reading", path, e))?;
    if meta.len() != len {
        return Err(ImportError::Corrupt {
            file: path.to_path_buf(),
            detail: format!("{} bytes, expected {len}", meta.len()),
        });
    }
    std::fs::read(path).map_err(|e| ImportError::io("reading", path, e))
}

fn corrupt(file: &Path, detail: impl Into<String>) -> ImportError {
    ImportError::Corrupt {
        file: file.to_path_buf(),
        detail: detail.into(),
    }
}

/// Clonezilla's `to_filename`: `cciss/c0d0` → `cciss-c0d0`.
fn to_filename(dev: &str) -> String {
    dev.replace('/', "-")
}

/// The data-file name patterns of a partition `part`: is `name` one (without piece suffix)?
fn data_kind(part: &str, name: &str) -> Option<DataKind> {
    let rest = name.strip_prefix(part)?.strip_prefix('.')?;
    if rest == "dd-img" {
        return Some(DataKind::Raw);
    }
    if rest == "ntfs-img" {
        return Some(DataKind::Ntfsclone);
    }
    let (fs, comp) = rest.split_once("-ptcl-img.")?;
    if fs.is_empty()
        || comp.is_empty()
        || comp.contains('.')
        || !fs.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return None;
    }
    if fs == "dd" {
        Some(DataKind::Raw)
    } else {
        Some(DataKind::Partclone { fs: fs.to_string() })
    }
}

fn find_data(dir: &Path, part: &str) -> Result<Option<(String, DataKind)>, ImportError> {
    let mut found: BTreeMap<String, DataKind> = BTreeMap::new();
    let mut partimage = false;
    let entries = std::fs::read_dir(dir).map_err(|e| ImportError::io("listing", dir, e))?;
    for e in entries {
        let e = e.map_err(|e| ImportError::io("listing", dir, e))?;
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !name.starts_with(&format!("{part}.")) {
            continue;
        }
        if let Some(k) = data_kind(part, &name) {
            found.insert(name, k);
            continue;
        }
        if let Some((base, suffix)) = name.rsplit_once('.') {
            if (2..=3).contains(&suffix.len()) && suffix.bytes().all(|b| b.is_ascii_lowercase()) {
                if let Some(k) = data_kind(part, base) {
                    found.insert(base.to_string(), k);
                } else if base == part {
                    partimage = true;
                }
            }
        }
    }
    if found.is_empty() && partimage {
        return Err(ImportError::Unsupported {
            file: dir.join(format!("{part}.aa")),
            detail: "a partimage image (Clonezilla -q); partimage is not supported".into(),
        });
    }
    // Rescuezilla's order: dd, ntfsclone, partclone.
    let pick = found
        .iter()
        .find(|(_, k)| **k == DataKind::Raw)
        .or_else(|| found.iter().find(|(_, k)| **k == DataKind::Ntfsclone))
        .or_else(|| found.iter().next());
    Ok(pick.map(|(n, k)| (n.clone(), k.clone())))
}

fn fs_from_name(s: &str) -> FsKind {
    match s.to_ascii_lowercase().as_str() {
        "ntfs" => FsKind::Ntfs,
        "vfat" | "fat" | "fat12" | "fat16" | "fat32" | "msdos" => FsKind::Vfat,
        "exfat" => FsKind::Exfat,
        "ext2" => FsKind::Ext2,
        "ext3" => FsKind::Ext3,
        "ext4" | "extfs" => FsKind::Ext4,
        "xfs" => FsKind::Xfs,
        "btrfs" => FsKind::Btrfs,
        "swap" | "linux-swap" => FsKind::Swap,
        "bitlocker" => FsKind::Bitlocker,
        "crypto_luks" | "luks" => FsKind::Luks,
        _ => FsKind::Unknown,
    }
}

/// `blkid.list` lines: `/dev/sda1: LABEL="x" UUID="y" TYPE="ext4" …` → name → fields.
fn parse_blkid(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((dev, rest)) = line.split_once(':') else {
            continue;
        };
        let name = dev.trim().trim_start_matches("/dev/").to_string();
        let mut fields = BTreeMap::new();
        let mut s = rest.trim();
        while let Some(eq) = s.find("=\"") {
            let key = s[..eq].trim().to_string();
            let after = &s[eq + 2..];
            let Some(end) = after.find('"') else {
                break;
            };
            fields.insert(key, after[..end].to_string());
            s = after[end + 1..].trim_start();
        }
        out.insert(name, fields);
    }
    out
}

/// `swappt-<part>.info`: `UUID="…"` and `LABEL="…"` lines.
fn parse_swap_info(text: &str) -> (String, String) {
    let mut uuid = String::new();
    let mut label = String::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "UUID" => uuid = unquote(v),
                "LABEL" => label = unquote(v),
                _ => {}
            }
        }
    }
    (uuid, label)
}

/// A swap header page (what `mkswap -U UUID -L LABEL` writes on a partition of `size` bytes).
pub fn swap_header(size: u64, uuid: &str, label: &str) -> Result<Vec<u8>, String> {
    const PAGE: u64 = 4096;
    let pages = size / PAGE;
    if pages < 10 {
        return Err(format!("{size} bytes is too small for swap"));
    }
    let last = u32::try_from(pages - 1).map_err(|_| "swap partition too large".to_string())?;
    let mut h = vec![0u8; PAGE as usize];
    h[0x400..0x404].copy_from_slice(&1u32.to_le_bytes());
    h[0x404..0x408].copy_from_slice(&last.to_le_bytes());
    if !uuid.is_empty() {
        let hex: String = uuid.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 {
            return Err(format!("swap UUID {uuid:?} is not a UUID"));
        }
        for i in 0..16 {
            h[0x40c + i] = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("swap UUID {uuid:?} is not a UUID"))?;
        }
    }
    let l = label.as_bytes();
    let n = l.len().min(16);
    h[0x41c..0x41c + n].copy_from_slice(&l[..n]);
    h[PAGE as usize - 10..].copy_from_slice(b"SWAPSPACE2");
    Ok(h)
}

/// A disk of which only a few ranges are known (the rest reads as zeros): used to read the
/// assembled table sectors back with `disk::table`.
pub struct SparseDisk {
    len: u64,
    sector: u32,
    chunks: BTreeMap<u64, Vec<u8>>,
}

impl SparseDisk {
    /// An all-zero disk.
    pub fn new(len: u64, sector: u32) -> SparseDisk {
        SparseDisk {
            len,
            sector,
            chunks: BTreeMap::new(),
        }
    }

    /// Puts `data` at `offset` (later puts win where they overlap).
    pub fn put(&mut self, offset: u64, data: Vec<u8>) {
        self.chunks.insert(offset, data);
    }
}

impl BlockDev for SparseDisk {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= self.len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "beyond the disk"))?;
        buf.fill(0);
        for (&at, data) in &self.chunks {
            let d_end = at + data.len() as u64;
            if d_end <= offset || at >= end {
                continue;
            }
            let from = at.max(offset);
            let to = d_end.min(end);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&data[(from - at) as usize..(to - at) as usize]);
        }
        Ok(())
    }

    fn write_all_at(&self, _: &[u8], _: u64) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"))
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn logical_sector(&self) -> u32 {
        self.sector
    }

    fn physical_sector(&self) -> u32 {
        self.sector
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

/// CHS address of `lba` with `heads` × `sectors` geometry, as libfdisk writes it.
fn chs(lba: u64, heads: u64, sectors: u64) -> [u8; 3] {
    let per_cyl = heads * sectors;
    let c = lba / per_cyl;
    if c > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let rem = lba % per_cyl;
    let h = rem / sectors;
    let s = rem % sectors + 1;
    [
        h as u8,
        (s as u8) | (((c >> 8) as u8) << 6),
        (c & 0xFF) as u8,
    ]
}

#[allow(clippy::too_many_arguments)]
fn put_entry(
    sector: &mut [u8],
    slot: usize,
    boot: bool,
    ptype: u8,
    abs_start: u64,
    rel_start: u64,
    len: u64,
    geo: (u64, u64),
) -> Result<(), String> {
    let b = 446 + slot * 16;
    let rel = u32::try_from(rel_start).map_err(|_| "an EBR entry does not fit 32 bits")?;
    let n = u32::try_from(len).map_err(|_| "an EBR entry does not fit 32 bits")?;
    sector[b] = if boot { 0x80 } else { 0 };
    sector[b + 1..b + 4].copy_from_slice(&chs(abs_start, geo.0, geo.1));
    sector[b + 4] = ptype;
    sector[b + 5..b + 8].copy_from_slice(&chs(abs_start + len - 1, geo.0, geo.1));
    sector[b + 8..b + 12].copy_from_slice(&rel.to_le_bytes());
    sector[b + 12..b + 16].copy_from_slice(&n.to_le_bytes());
    Ok(())
}

fn parse_hex_type(t: &str) -> Option<u8> {
    let t = t.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    u8::from_str_radix(t, 16).ok()
}

fn is_extended_type(t: u8) -> bool {
    matches!(t, 0x05 | 0x0F | 0x85)
}

impl CzImage {
    /// Opens and checks the image directory (see the module docs). Nothing is written.
    pub fn open(dir: &Path) -> Result<CzImage, ImportError> {
        if !dir.is_dir() {
            return Err(ImportError::Missing {
                file: dir.to_path_buf(),
                detail: "not found or not a directory".into(),
            });
        }
        for enc in ["ecryptfs.info", "gocryptfs.info"] {
            if dir.join(enc).exists() {
                return Err(ImportError::Unsupported {
                    file: dir.join(enc),
                    detail: format!(
                        "this Clonezilla image is encrypted ({}); ferroclone cannot decrypt it. \
                         Decrypt it with Clonezilla first (or mount it with {} and use the \
                         decrypted directory)",
                        enc.trim_end_matches(".info"),
                        enc.trim_end_matches(".info")
                    ),
                });
            }
        }
        let disk_file = dir.join("disk");
        if !disk_file.is_file() {
            return Err(ImportError::Unsupported {
                file: disk_file,
                detail: "no `disk` file: this is a partition image (Clonezilla saveparts), not \
                         a whole-disk image; only whole-disk images can be restored or \
                         converted"
                    .into(),
            });
        }
        let disks: Vec<String> = read_text(&disk_file)?
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let disk = match disks.as_slice() {
            [one] => one.clone(),
            [] => return Err(corrupt(&disk_file, "empty: it should name the saved disk")),
            many => {
                return Err(ImportError::Unsupported {
                    file: disk_file,
                    detail: format!(
                        "the image holds {} disks ({}); only single-disk images are supported",
                        many.len(),
                        many.join(" ")
                    ),
                })
            }
        };
        if disk.contains("..") || disk.is_empty() {
            return Err(corrupt(&disk_file, format!("disk name {disk:?}")));
        }
        let dname = to_filename(&disk);
        let parts_file = dir.join("parts");
        let imaged: Vec<String> = if parts_file.is_file() {
            read_text(&parts_file)?
                .split_whitespace()
                .map(to_filename)
                .collect()
        } else {
            Vec::new()
        };
        let sf_path = dir.join(format!("{dname}-pt.sf"));
        let sf = parse_sfdisk(&read_text(&sf_path)?).map_err(|d| corrupt(&sf_path, d))?;
        let ss = sf.sector_size;
        let ss64 = u64::from(ss);
        let mut warnings = Vec::new();

        // Labels and filesystems from blkid.list and dev-fs.list, when present.
        let blkid = match read_text(&dir.join("blkid.list")) {
            Ok(t) => parse_blkid(&t),
            Err(_) => BTreeMap::new(),
        };
        let mut devfs = BTreeMap::new();
        if let Ok(t) = read_text(&dir.join("dev-fs.list")) {
            for line in t.lines().filter(|l| !l.starts_with('#')) {
                let mut w = line.split_whitespace();
                if let (Some(dev), Some(fs)) = (w.next(), w.next()) {
                    devfs.insert(dev.trim_start_matches("/dev/").to_string(), fs.to_string());
                }
            }
        }

        // Partitions: every table entry, with data for the imaged ones.
        let mut parts = Vec::new();
        let mut extended = None;
        for e in &sf.entries {
            let start = e.start.checked_mul(ss64).ok_or_else(|| {
                corrupt(&sf_path, format!("partition {} start overflows", e.number))
            })?;
            let size = e.size.checked_mul(ss64).ok_or_else(|| {
                corrupt(&sf_path, format!("partition {} size overflows", e.number))
            })?;
            if sf.label == "dos" && parse_hex_type(&e.type_id).is_some_and(is_extended_type) {
                if extended.is_some() {
                    return Err(corrupt(&sf_path, "two extended partitions"));
                }
                extended = Some((start, size));
                continue;
            }
            let short = to_filename(e.device.trim_start_matches("/dev/"));
            let mut part = CzPart {
                number: e.number,
                name: short.clone(),
                start,
                size,
                type_id: if sf.label == "dos" {
                    format!("0x{:02x}", parse_hex_type(&e.type_id).unwrap_or(0))
                } else {
                    e.type_id.to_ascii_uppercase()
                },
                part_name: e.name.clone().unwrap_or_default(),
                fs: FsKind::Unknown,
                label: String::new(),
                uuid: String::new(),
                data: None,
                swap: None,
            };
            if let Some(b) = blkid.get(&short) {
                part.fs = b
                    .get("TYPE")
                    .map(|t| fs_from_name(t))
                    .unwrap_or(FsKind::Unknown);
                part.label = b.get("LABEL").cloned().unwrap_or_default();
                part.uuid = b.get("UUID").cloned().unwrap_or_default();
            }
            if let Some(fs) = devfs.get(&short) {
                if part.fs == FsKind::Unknown {
                    part.fs = fs_from_name(fs);
                }
            }
            let swap_info = dir.join(format!("swappt-{short}.info"));
            if swap_info.is_file() {
                let (uuid, label) = parse_swap_info(&read_text(&swap_info)?);
                swap_header(size, &uuid, &label).map_err(|d| corrupt(&swap_info, d))?;
                part.fs = FsKind::Swap;
                part.uuid = uuid.clone();
                part.label = label.clone();
                part.swap = Some((uuid, label));
            }
            if imaged.contains(&short) {
                let Some((name, kind)) = find_data(dir, &short)? else {
                    return Err(ImportError::Missing {
                        file: dir.join(format!("{short}.<fs>-ptcl-img.<z>")),
                        detail: format!(
                            "`parts` lists {short} but no data file for it exists \
                             ({short}.*-ptcl-img.*, {short}.dd-img*, {short}.ntfs-img*)"
                        ),
                    });
                };
                if let DataKind::Partclone { fs } = &kind {
                    let k = fs_from_name(fs);
                    if k != FsKind::Unknown {
                        part.fs = k;
                    }
                }
                let pieces = Pieces::find(dir, &name)?;
                let head = source::check_head(&pieces, &kind, size)?;
                part.data = Some(DataFile {
                    kind,
                    name,
                    pieces,
                    compression: head.compression,
                    stored_bytes: head.stored_bytes,
                    partclone: head.partclone,
                });
            }
            parts.push(part);
        }
        for name in &imaged {
            if !parts.iter().any(|p| &p.name == name) {
                return Err(ImportError::Unsupported {
                    file: parts_file.clone(),
                    detail: format!(
                        "`parts` lists {name}, which is not a partition of {dname}-pt.sf \
                         (LVM volumes and other disks are not supported)"
                    ),
                });
            }
        }
        parts.sort_by_key(|p| p.number);

        // Disk size.
        let mut disk_size = None;
        if let Ok(t) = read_text(&dir.join(format!("{dname}-pt.parted"))) {
            for line in t.lines() {
                if let Some(rest) = line.strip_prefix("Disk /dev/") {
                    if let Some((_, v)) = rest.split_once(':') {
                        if let Some(n) = v
                            .trim()
                            .strip_suffix('s')
                            .and_then(|n| n.parse::<u64>().ok())
                        {
                            disk_size = n.checked_mul(ss64);
                        }
                    }
                }
            }
        }

        let mut writes: Vec<(u64, Placed)> = Vec::new();
        let mut gpt_backup_at = None;
        let mbr_path = dir.join(format!("{dname}-mbr"));
        let first_start = parts
            .iter()
            .map(|p| p.start)
            .chain(extended.map(|e| e.0))
            .min()
            .unwrap_or(ss64);
        if sf.label == "gpt" {
            if ss != 512 {
                return Err(ImportError::Unsupported {
                    file: sf_path,
                    detail: format!(
                        "a GPT disk with {ss}-byte sectors: Clonezilla's -gpt-1st and -gpt-2nd \
                         hold 512-byte sectors only"
                    ),
                });
            }
            let p1 = dir.join(format!("{dname}-gpt-1st"));
            let p2 = dir.join(format!("{dname}-gpt-2nd"));
            let first = read_small(&p1, 34 * 512).map_err(|e| match e {
                ImportError::Io { .. } => ImportError::Missing {
                    file: p1.clone(),
                    detail: "the primary GPT (34 sectors) is needed".into(),
                },
                e => e,
            })?;
            let second = read_small(&p2, 33 * 512).map_err(|e| match e {
                ImportError::Io { .. } => ImportError::Missing {
                    file: p2.clone(),
                    detail: "the backup GPT (33 sectors) is needed".into(),
                },
                e => e,
            })?;
            if first.get(512..520) != Some(b"EFI PART") {
                return Err(corrupt(&p1, "no GPT header at byte 0x200"));
            }
            let alt = le64(&first, 512 + 32).unwrap_or(0);
            let from_gpt = alt.checked_add(1).and_then(|n| n.checked_mul(512));
            match (disk_size, from_gpt) {
                (Some(a), Some(b)) if a != b => warnings.push(format!(
                    "{dname}-pt.parted gives a disk of {a} bytes, the GPT one of {b}; the GPT's is used"
                )),
                _ => {}
            }
            disk_size = from_gpt;
            let size = disk_size.ok_or_else(|| corrupt(&p1, "backup LBA overflows"))?;
            if size < 67 * 512 {
                return Err(corrupt(
                    &p1,
                    format!("the GPT says the disk has {size} bytes"),
                ));
            }
            let mut sector0 = first.get(..512).unwrap_or(&[]).to_vec();
            if mbr_path.is_file() {
                let mbr = read_small(&mbr_path, 512)?;
                if mbr.get(446..512) != sector0.get(446..512) {
                    warnings.push(format!(
                        "{dname}-mbr and {dname}-gpt-1st hold different protective MBRs; the one in -gpt-1st is used"
                    ));
                } else {
                    sector0 = mbr;
                }
            }
            writes.push((0, Placed::Bytes(sector0)));
            writes.push((512, Placed::Bytes(first.get(512..).unwrap_or(&[]).to_vec())));
            let at = size - 33 * 512;
            gpt_backup_at = Some(at);
            writes.push((at, Placed::Bytes(second)));
        } else {
            let mbr = read_small(&mbr_path, 512).map_err(|e| match e {
                ImportError::Io { .. } => ImportError::Missing {
                    file: mbr_path.clone(),
                    detail: "the MBR (first 512 bytes of the disk) is needed".into(),
                },
                e => e,
            })?;
            if mbr.get(510..512) != Some(&[0x55, 0xAA]) {
                return Err(corrupt(&mbr_path, "no 55AA signature"));
            }
            writes.push((0, Placed::Bytes(mbr)));
            let hidden = dir.join(format!("{dname}-hidden-data-after-mbr"));
            if hidden.is_file() {
                let len = std::fs::metadata(&hidden)
                    .map_err(|e| ImportError::io("reading", &hidden, e))?
                    .len();
                if len.checked_add(512).is_none_or(|end| end > first_start) {
                    return Err(corrupt(
                        &hidden,
                        format!(
                            "{len} bytes do not fit between the MBR and the first partition at byte {first_start:#x}"
                        ),
                    ));
                }
                writes.push((512, Placed::File(hidden, 0, len)));
            } else {
                warnings.push(format!(
                    "no {dname}-hidden-data-after-mbr: the sectors between the MBR and the first partition are not restored"
                ));
            }
            if let Some((ext_start, ext_size)) = extended {
                let geo = read_text(&dir.join(format!("{dname}-chs.sf")))
                    .ok()
                    .map(|t| {
                        let mut h = 255u64;
                        let mut s = 63u64;
                        for l in t.lines() {
                            if let Some((k, v)) = l.split_once('=') {
                                let v = v.trim().parse::<u64>().ok();
                                match (k.trim(), v) {
                                    ("heads", Some(x)) if (1..=255).contains(&x) => h = x,
                                    ("sectors", Some(x)) if (1..=63).contains(&x) => s = x,
                                    _ => {}
                                }
                            }
                        }
                        (h, s)
                    })
                    .unwrap_or((255, 63));
                let ext_part = sf
                    .entries
                    .iter()
                    .find(|e| e.start * ss64 == ext_start)
                    .map(|e| to_filename(e.device.trim_start_matches("/dev/")));
                let ebr_file = ext_part.map(|n| dir.join(format!("{n}-ebr")));
                let saved_ebr = match &ebr_file {
                    Some(f) if f.is_file() => Some(read_small(f, 512)?),
                    _ => None,
                };
                let ebrs = build_ebrs(
                    &sf,
                    ext_start / ss64,
                    ext_size / ss64,
                    saved_ebr.as_deref(),
                    geo,
                )
                .map_err(|d| corrupt(&sf_path, d))?;
                for (lba, sector) in ebrs {
                    writes.push((lba * ss64, Placed::Bytes(sector)));
                }
            }
            if disk_size.is_none() {
                let end = parts
                    .iter()
                    .map(|p| p.start + p.size)
                    .chain(extended.map(|e| e.0 + e.1))
                    .max()
                    .unwrap_or(ss64);
                warnings.push(format!(
                    "no {dname}-pt.parted: the disk size is taken as the end of the last partition ({end} bytes)"
                ));
                disk_size = Some(end);
            }
        }
        let disk_size = disk_size.unwrap_or(0);
        writes.sort_by_key(|w| w.0);

        // Read the assembled table back and compare it with the dump.
        let mut sparse = SparseDisk::new(disk_size, ss);
        for (at, w) in &writes {
            if let Placed::Bytes(b) = w {
                sparse.put(*at, b.clone());
            }
        }
        let table = read_table(&Region::whole(&sparse)).map_err(|e| {
            corrupt(
                &sf_path,
                format!("the table assembled from the image's table files does not read back: {e}"),
            )
        })?;
        let want_kind = if sf.label == "gpt" {
            TableKind::Gpt
        } else {
            TableKind::Mbr
        };
        if table.kind != want_kind {
            return Err(corrupt(
                &sf_path,
                format!(
                    "the table files hold a {} table, the dump says {}",
                    table.kind, sf.label
                ),
            ));
        }
        for p in &parts {
            match table.partition(p.number) {
                Some(t) if t.start == p.start && t.size == p.size => {}
                Some(t) => {
                    return Err(corrupt(
                        &sf_path,
                        format!(
                            "partition {} is at byte {:#x} ({} bytes) in the dump but at {:#x} ({} bytes) in the table sectors",
                            p.number, p.start, p.size, t.start, t.size
                        ),
                    ))
                }
                None => {
                    return Err(corrupt(
                        &sf_path,
                        format!("partition {} is in the dump but not in the table sectors", p.number),
                    ))
                }
            }
        }
        if table.partitions.len() != parts.len() {
            return Err(corrupt(
                &sf_path,
                format!(
                    "the table sectors hold {} partitions, the dump {}",
                    table.partitions.len(),
                    parts.len()
                ),
            ));
        }
        warnings.extend(table.warnings.iter().cloned());

        let mut created = String::new();
        let mut tool = String::from("Clonezilla");
        if let Ok(t) = read_text(&dir.join("clonezilla-img")) {
            if let Some(first) = t.lines().next() {
                tool = first.trim().to_string();
            }
            if let Some(l) = t.lines().rev().find(|l| l.contains("Image created time")) {
                created = l
                    .split(':')
                    .skip(1)
                    .collect::<Vec<_>>()
                    .join(":")
                    .trim()
                    .to_string();
            }
        }
        if created.is_empty() {
            if let Ok(m) = std::fs::metadata(&sf_path).and_then(|m| m.modified()) {
                if let Ok(d) = m.duration_since(std::time::SystemTime::UNIX_EPOCH) {
                    created = crate::engine::save::rfc3339(d.as_secs());
                }
            }
        }
        Ok(CzImage {
            dir: dir.to_path_buf(),
            disk,
            sf,
            disk_size,
            sector_size: ss,
            parts,
            extended,
            table,
            writes,
            gpt_backup_at,
            warnings,
            created,
            tool,
        })
    }

    /// The partitions that have something to restore (data or a swap header).
    pub fn restorable(&self) -> impl Iterator<Item = &CzPart> {
        self.parts
            .iter()
            .filter(|p| p.data.is_some() || p.swap.is_some())
    }

    /// Bytes of partition data a restore writes for `p`.
    pub fn stored_bytes(p: &CzPart) -> u64 {
        match (&p.data, &p.swap) {
            (Some(d), _) => d.stored_bytes,
            (None, Some(_)) => 4096,
            _ => 0,
        }
    }

    /// The image described as a native manifest (no streams): what `info`, `restore`'s checks
    /// and `convert` share.
    pub fn manifest(&self) -> Manifest {
        let table = &self.table;
        let source = DiskSummary {
            path: format!("{} (Clonezilla image of {})", self.dir.display(), self.disk),
            size_bytes: self.disk_size,
            logical_sector_size: self.sector_size,
            physical_sector_size: self.sector_size,
            model: String::new(),
            serial: String::new(),
            table: table.kind.to_string(),
            disk_id: table.disk_id.clone(),
            partitions: self
                .parts
                .iter()
                .map(|p| PartitionSummary {
                    number: p.number,
                    start_bytes: p.start,
                    size_bytes: p.size,
                    type_id: p.type_id.clone(),
                    name: p.part_name.clone(),
                    fs: p.fs,
                    label: p.label.clone(),
                    uuid: p.uuid.clone(),
                    used_bytes: Self::stored_bytes(p),
                })
                .collect(),
        };
        let partitions = self
            .restorable()
            .map(|p| PartEntry {
                number: p.number,
                fs: p.fs,
                mode: match &p.data {
                    Some(d) if d.kind == DataKind::Raw => Mode::Raw,
                    _ => Mode::Used,
                },
                stream: format!("p{}", p.number),
                stored_bytes: Self::stored_bytes(p),
                image_bytes: p.data.as_ref().map(|d| d.pieces.total()).unwrap_or(0),
                block_size: p
                    .data
                    .as_ref()
                    .and_then(|d| d.partclone.as_ref())
                    .map(|h| h.block_size)
                    .unwrap_or(0),
                min_size_bytes: None,
                warnings: Vec::new(),
            })
            .collect();
        let boot_area_end = table.boot_area().1;
        Manifest {
            format: "clonezilla".into(),
            version: 0,
            id: String::new(),
            created: self.created.clone(),
            tool: self.tool.clone(),
            volume_size: 0,
            source,
            table: TableInfo {
                kind: table.kind.to_string(),
                sector_size: self.sector_size,
                gpt: table.gpt.as_ref().map(GptInfo::from),
                extended: self.extended,
                boot_area_end,
            },
            partitions,
            streams: Vec::new(),
            parent: None,
            bad_ranges: Vec::new(),
        }
    }

    /// A partition by number.
    pub fn part(&self, number: u32) -> Option<&CzPart> {
        self.parts.iter().find(|p| p.number == number)
    }
}

/// The EBR chain `sfdisk` writes for the dump's logical partitions: the first EBR at the start
/// of the extended partition (with the boot code of the saved `-ebr` sector, and the saved
/// sector itself when it says the same), each next one where the saved first EBR links to, or
/// else 2048 sectors (sfdisk's 1 MiB grain) before its logical partition.
fn build_ebrs(
    sf: &SfDump,
    ext_lba: u64,
    ext_sectors: u64,
    saved: Option<&[u8]>,
    geo: (u64, u64),
) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let mut logicals: Vec<&SfEntry> = sf.entries.iter().filter(|e| e.number >= 5).collect();
    logicals.sort_by_key(|e| e.number);
    let ext_end = ext_lba + ext_sectors;
    let mut ebr_at = Vec::with_capacity(logicals.len());
    let saved_link = saved.and_then(|s| {
        let rel = le32(s, 446 + 16 + 8)?;
        (s.get(446 + 16 + 4).copied().is_some_and(is_extended_type) && rel != 0)
            .then_some(ext_lba + u64::from(rel))
    });
    let mut prev_end = ext_lba;
    for (i, e) in logicals.iter().enumerate() {
        if e.start <= ext_lba || e.start + e.size > ext_end {
            return Err(format!(
                "logical partition {} (sectors {}+{}) is not inside the extended partition",
                e.number, e.start, e.size
            ));
        }
        let at = if i == 0 {
            ext_lba
        } else {
            let grain = e.start.saturating_sub(2048);
            let linked = if i == 1 { saved_link } else { None };
            match linked {
                Some(l) if l >= prev_end && l < e.start => l,
                _ if grain >= prev_end && grain > ext_lba => grain,
                _ if e.start > prev_end && e.start - 1 > ext_lba => e.start - 1,
                _ => {
                    return Err(format!(
                        "no room for the EBR of logical partition {} before sector {}",
                        e.number, e.start
                    ))
                }
            }
        };
        if e.start <= at {
            return Err(format!(
                "logical partition {} starts before its EBR",
                e.number
            ));
        }
        ebr_at.push(at);
        prev_end = e.start + e.size;
    }
    let mut out = Vec::new();
    for (i, e) in logicals.iter().enumerate() {
        let at = ebr_at[i];
        let mut s = vec![0u8; 512];
        let ptype = parse_hex_type(&e.type_id)
            .ok_or_else(|| format!("partition {}: type {:?}", e.number, e.type_id))?;
        put_entry(
            &mut s,
            0,
            e.bootable,
            ptype,
            e.start,
            e.start - at,
            e.size,
            geo,
        )?;
        if let (Some(next), Some(&next_at)) = (logicals.get(i + 1), ebr_at.get(i + 1)) {
            let len = next.start + next.size - next_at;
            put_entry(&mut s, 1, false, 0x05, next_at, next_at - ext_lba, len, geo)?;
        }
        s[510] = 0x55;
        s[511] = 0xAA;
        if i == 0 {
            if let Some(saved) = saved {
                if saved.get(446..512) == s.get(446..512) {
                    s = saved.to_vec();
                } else {
                    s[..446].copy_from_slice(&saved[..446]);
                }
            }
        }
        out.push((at, s));
    }
    if logicals.is_empty() {
        // An empty extended partition: its first EBR holds nothing but the signature.
        let mut s = saved.map(|x| x.to_vec()).unwrap_or_else(|| vec![0u8; 512]);
        s[446..510].fill(0);
        s[510] = 0x55;
        s[511] = 0xAA;
        out.push((ext_lba, s));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPT_DUMP: &str = "label: gpt
label-id: 7C3A9E10-5B2D-4F6E-8A1B-0C9D8E7F6A51
device: /dev/sda
unit: sectors
first-lba: 34
last-lba: 524254
sector-size: 512

/dev/sda1 : start=        2048, size=       81920, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=1F0E2D3C-4B5A-4968-8776-A5B4C3D2E1F0, name=\"EFI system partition\"
/dev/sda4 : start=      460800, size=       61440, type=DE94BBA4-06D1-4D40-A16A-BFD50179D6AC, uuid=4C3D5E6F-7081-4C9D-AEBF-2A3B4C5D6E7F, name=\"Basic, data\", attrs=\"RequiredPartition GUID:63\"
";

    #[test]
    fn sfdisk_dump_parses() {
        let d = parse_sfdisk(GPT_DUMP).unwrap();
        assert_eq!(d.label, "gpt");
        assert_eq!(d.first_lba, Some(34));
        assert_eq!(d.entries.len(), 2);
        assert_eq!(d.entries[1].number, 4);
        assert_eq!(d.entries[1].name.as_deref(), Some("Basic, data"));
        assert_eq!(
            d.entries[1].attrs.as_deref(),
            Some("RequiredPartition GUID:63")
        );
        let dos = parse_sfdisk(
            "label: dos\nlabel-id: 0x1234abcd\nunit: sectors\n\n/dev/sda1 : start=2048, size=100, type=83, bootable\n/dev/nvme0n1p5 : start=4096, size=10, type=82\n",
        )
        .unwrap();
        assert!(dos.entries[0].bootable);
        assert_eq!(dos.entries[1].number, 5);
    }

    #[test]
    fn sfdisk_dump_errors() {
        for bad in [
            "",
            "label: sun\n",
            "label: dos\nunit: cylinders\n",
            "label: dos\n/dev/sda1 : start=x, size=1\n",
            "label: dos\n/dev/sda1 : size=1\n",
            "label: dos\n/dev/sda : start=1, size=1\n",
            "label: dos\n/dev/sda1 : start=1, size=1\n/dev/sda1 : start=5, size=1\n",
            "label: dos\nsector-size: 1000\n",
            "garbage\n",
        ] {
            assert!(parse_sfdisk(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn data_file_names() {
        assert_eq!(
            data_kind("sda1", "sda1.ext4-ptcl-img.gz"),
            Some(DataKind::Partclone { fs: "ext4".into() })
        );
        assert_eq!(
            data_kind("sda1", "sda1.dd-ptcl-img.zst"),
            Some(DataKind::Raw)
        );
        assert_eq!(data_kind("sda1", "sda1.dd-img"), Some(DataKind::Raw));
        assert_eq!(
            data_kind("sda1", "sda1.ntfs-img"),
            Some(DataKind::Ntfsclone)
        );
        assert_eq!(data_kind("sda1", "sda11.ext4-ptcl-img.gz"), None);
        assert_eq!(data_kind("sda1", "sda1.ext4-ptcl-img"), None);
        assert_eq!(data_kind("sda1", "sda1.ext4-ptcl-img.gz.aa"), None);
    }

    #[test]
    fn chs_like_libfdisk() {
        // Checked against an sfdisk-made EBR: LBA 413696 is C25/H191/S39.
        assert_eq!(chs(413_696, 255, 63), [0xbf, 0x27, 0x19]);
        assert_eq!(chs(823_295, 255, 63), [0x3f, 0x0c, 0x33]);
        assert_eq!(chs(100_000_000, 255, 63), [0xfe, 0xff, 0xff]);
    }

    #[test]
    fn swap_header_fields() {
        let h = swap_header(64 << 20, "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d", "swap").unwrap();
        assert_eq!(&h[4086..], b"SWAPSPACE2");
        assert_eq!(le32(&h, 0x404), Some((64 << 20) / 4096 - 1));
        assert_eq!(h[0x40c], 0x5a);
        assert_eq!(&h[0x41c..0x420], b"swap");
        assert!(swap_header(4096, "", "").is_err());
        assert!(swap_header(1 << 20, "zz", "").is_err());
    }

    #[test]
    fn ebr_chain_like_sfdisk() {
        let sf = parse_sfdisk(
            "label: dos\nunit: sectors\n\n/dev/sda1 : start=2048, size=409600, type=83, bootable\n/dev/sda2 : start=411648, size=636928, type=5\n/dev/sda5 : start=413696, size=409600, type=83\n/dev/sda6 : start=825344, size=131072, type=82\n",
        )
        .unwrap();
        let ebrs = build_ebrs(&sf, 411_648, 636_928, None, (255, 63)).unwrap();
        assert_eq!(ebrs.len(), 2);
        assert_eq!(ebrs[0].0, 411_648);
        assert_eq!(ebrs[1].0, 823_296);
        let e1 = &ebrs[0].1;
        // Bytes of the same EBR written by sfdisk 2.38.
        assert_eq!(
            &e1[446..478],
            &[
                0x00, 0xbf, 0x27, 0x19, 0x83, 0x3f, 0x0c, 0x33, 0x00, 0x08, 0x00, 0x00, 0x00, 0x40,
                0x06, 0x00, 0x00, 0x3f, 0x0d, 0x33, 0x05, 0x88, 0x0d, 0x3b, 0x00, 0x48, 0x06, 0x00,
                0x00, 0x08, 0x02, 0x00
            ]
        );
        let bad = parse_sfdisk(
            "label: dos\nunit: sectors\n\n/dev/sda2 : start=100, size=50, type=5\n/dev/sda5 : start=140, size=50, type=83\n",
        )
        .unwrap();
        assert!(build_ebrs(&bad, 100, 50, None, (255, 63)).is_err());
    }

    mod dirs {
        use super::super::*;
        use crate::import::partclone::{build_image, BitmapMode, ChecksumMode};
        use crate::import::pieces::Compression;
        use std::io::Write;

        const BLOCKS: usize = 256;

        fn block(i: u64) -> Vec<u8> {
            (0..512u32).map(|j| (i as u32 * 31 + j) as u8).collect()
        }

        fn used() -> Vec<bool> {
            (0..BLOCKS).map(|i| i % 5 != 3).collect()
        }

        /// A small but complete Clonezilla directory: MBR disk of 4096 sectors, sda1 at 2048
        /// holding a partclone image (uncompressed unless `compress` changes it).
        fn make(mode: ChecksumMode, compress: impl Fn(&[u8]) -> Vec<u8>) -> tempfile::TempDir {
            let d = tempfile::tempdir().unwrap();
            let p = d.path();
            std::fs::write(p.join("disk"), "sda\n").unwrap();
            std::fs::write(p.join("parts"), "sda1\n").unwrap();
            std::fs::write(
                p.join("sda-pt.sf"),
                "label: dos\nlabel-id: 0x00c0ffee\ndevice: /dev/sda\nunit: sectors\nsector-size: 512\n\n/dev/sda1 : start=        2048, size=         256, type=83\n",
            )
            .unwrap();
            std::fs::write(p.join("sda-pt.parted"), "Model: x\nDisk /dev/sda: 4096s\n").unwrap();
            let mut mbr = vec![0u8; 512];
            mbr[446 + 4] = 0x83;
            mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
            mbr[446 + 12..446 + 16].copy_from_slice(&256u32.to_le_bytes());
            mbr[510] = 0x55;
            mbr[511] = 0xAA;
            std::fs::write(p.join("sda-mbr"), &mbr).unwrap();
            std::fs::write(p.join("sda-hidden-data-after-mbr"), vec![7u8; 2047 * 512]).unwrap();
            let img = build_image(
                "EXTFS",
                512,
                &used(),
                block,
                mode,
                16,
                true,
                BitmapMode::Bit,
            );
            std::fs::write(p.join("sda1.ext4-ptcl-img.gz"), compress(&img)).unwrap();
            d
        }

        fn read_back(dir: &Path) -> Result<Vec<(u64, Vec<u8>)>, ImportError> {
            let cz = CzImage::open(dir)?;
            let part = cz.part(1).unwrap();
            let mut r = source::open(part, true)?;
            let mut out = Vec::new();
            let mut buf = Vec::new();
            while let Some(off) = r.next_chunk(&mut buf)? {
                out.push((off, buf.clone()));
            }
            Ok(out)
        }

        fn expect_data(chunks: &[(u64, Vec<u8>)]) {
            let mut got = vec![None; BLOCKS];
            for (off, data) in chunks {
                for (k, b) in data.chunks(512).enumerate() {
                    got[*off as usize / 512 + k] = Some(b.to_vec());
                }
            }
            for (i, u) in used().iter().enumerate() {
                assert_eq!(got[i].is_some(), *u, "block {i}");
                if *u {
                    assert_eq!(got[i].as_deref(), Some(&block(i as u64)[..]));
                }
            }
        }

        #[test]
        fn every_compression_and_checksum_mode_reads_back() {
            type Comp = fn(&[u8]) -> Vec<u8>;
            let comps: Vec<(&str, Comp)> = vec![
                ("uncompressed", |b| b.to_vec()),
                ("gzip", |b| {
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    e.write_all(&b[..b.len() / 2]).unwrap();
                    let mut out = e.finish().unwrap();
                    // pigz-style: a second member.
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    e.write_all(&b[b.len() / 2..]).unwrap();
                    out.extend(e.finish().unwrap());
                    out
                }),
                ("zstd", |b| zstd::encode_all(b, 3).unwrap()),
                ("lz4", |b| {
                    let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                    e.write_all(b).unwrap();
                    e.finish().unwrap()
                }),
                ("xz", |b| {
                    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                    e.write_all(b).unwrap();
                    e.finish().unwrap()
                }),
                ("lzma", |b| {
                    let opts = liblzma::stream::LzmaOptions::new_preset(1).unwrap();
                    let s = liblzma::stream::Stream::new_lzma_encoder(&opts).unwrap();
                    let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), s);
                    e.write_all(b).unwrap();
                    e.finish().unwrap()
                }),
                ("bzip2", |b| {
                    let mut e =
                        bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                    e.write_all(b).unwrap();
                    e.finish().unwrap()
                }),
            ];
            for (name, comp) in comps {
                for mode in [
                    ChecksumMode::None,
                    ChecksumMode::Crc32,
                    ChecksumMode::Xxh64,
                    ChecksumMode::Xxh128,
                ] {
                    let d = make(mode, comp);
                    let cz =
                        CzImage::open(d.path()).unwrap_or_else(|e| panic!("{name} {mode:?}: {e}"));
                    let data = cz.part(1).unwrap().data.as_ref().unwrap();
                    assert_eq!(data.compression.name(), name);
                    assert_eq!(
                        data.stored_bytes,
                        used().iter().filter(|u| **u).count() as u64 * 512
                    );
                    expect_data(
                        &read_back(d.path()).unwrap_or_else(|e| panic!("{name} {mode:?}: {e}")),
                    );
                    // The table: sector 0 from -mbr, the hidden sectors, and it reads back.
                    assert_eq!(cz.writes.len(), 2);
                    assert_eq!(cz.disk_size, 4096 * 512);
                }
            }
            let _ = Compression::None;
        }

        #[test]
        fn damaged_directories_are_refused_with_the_file_named() {
            let plain = |b: &[u8]| b.to_vec();
            type Damage = Box<dyn Fn(&Path)>;
            let cases: Vec<(&str, Damage, &str)> = vec![
                (
                    "no mbr",
                    Box::new(|p: &Path| std::fs::remove_file(p.join("sda-mbr")).unwrap()),
                    "sda-mbr",
                ),
                (
                    "short mbr",
                    Box::new(|p: &Path| std::fs::write(p.join("sda-mbr"), [0u8; 100]).unwrap()),
                    "sda-mbr",
                ),
                (
                    "mbr without 55AA",
                    Box::new(|p: &Path| std::fs::write(p.join("sda-mbr"), [0u8; 512]).unwrap()),
                    "sda-mbr",
                ),
                (
                    "dump disagrees",
                    Box::new(|p: &Path| {
                        let t = std::fs::read_to_string(p.join("sda-pt.sf"))
                            .unwrap()
                            .replace("2048", "2056");
                        std::fs::write(p.join("sda-pt.sf"), t).unwrap()
                    }),
                    "sda-pt.sf",
                ),
                (
                    "garbage dump",
                    Box::new(|p: &Path| {
                        std::fs::write(p.join("sda-pt.sf"), "\u{0}\u{1}xx").unwrap()
                    }),
                    "sda-pt.sf",
                ),
                (
                    "hidden too big",
                    Box::new(|p: &Path| {
                        std::fs::write(p.join("sda-hidden-data-after-mbr"), vec![0u8; 2048 * 512])
                            .unwrap()
                    }),
                    "hidden-data",
                ),
                (
                    "data gone",
                    Box::new(|p: &Path| {
                        std::fs::remove_file(p.join("sda1.ext4-ptcl-img.gz")).unwrap()
                    }),
                    "sda1",
                ),
                (
                    "data truncated",
                    Box::new(|p: &Path| {
                        let f = p.join("sda1.ext4-ptcl-img.gz");
                        let b = std::fs::read(&f).unwrap();
                        std::fs::write(&f, &b[..b.len() - 1]).unwrap()
                    }),
                    "truncated",
                ),
                (
                    "empty disk file",
                    Box::new(|p: &Path| std::fs::write(p.join("disk"), "").unwrap()),
                    "disk",
                ),
                (
                    "lzop",
                    Box::new(|p: &Path| {
                        std::fs::write(p.join("sda1.ext4-ptcl-img.gz"), b"\x89LZO\0\r\n").unwrap()
                    }),
                    "lzop",
                ),
                (
                    "partimage",
                    Box::new(|p: &Path| {
                        std::fs::remove_file(p.join("sda1.ext4-ptcl-img.gz")).unwrap();
                        std::fs::write(p.join("sda1.aa"), b"x").unwrap()
                    }),
                    "partimage",
                ),
            ];
            for (what, damage, needle) in cases {
                let d = make(ChecksumMode::Crc32, plain);
                damage(d.path());
                let e = match read_back(d.path()) {
                    Ok(_) => panic!("{what}: accepted"),
                    Err(e) => e.to_string(),
                };
                assert!(e.contains(needle), "{what}: {e}");
            }
            // Pieces: .ab missing is named; all present read back as one stream.
            let d = make(ChecksumMode::Xxh128, plain);
            let f = d.path().join("sda1.ext4-ptcl-img.gz");
            let b = std::fs::read(&f).unwrap();
            std::fs::remove_file(&f).unwrap();
            for (i, c) in b.chunks(b.len() / 3 + 1).enumerate() {
                std::fs::write(
                    d.path().join(format!(
                        "sda1.ext4-ptcl-img.gz.a{}",
                        (b'a' + i as u8) as char
                    )),
                    c,
                )
                .unwrap();
            }
            expect_data(&read_back(d.path()).unwrap());
            std::fs::remove_file(d.path().join("sda1.ext4-ptcl-img.gz.ab")).unwrap();
            let e = read_back(d.path()).unwrap_err().to_string();
            assert!(
                e.contains("sda1.ext4-ptcl-img.gz.ab") && e.contains("missing"),
                "{e}"
            );
        }
    }
}
