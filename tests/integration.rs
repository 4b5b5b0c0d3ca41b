//! The integration tests: one binary, one module per area. Real disks in regular files made by
//! real tools; every restore checked by the filesystem's own checker and file hashes.

mod common;

mod e2e;
mod faults;
mod fit;
mod fs_btrfs;
mod fs_exfat;
mod fs_ext;
mod fs_fat;
mod fs_ntfs;
mod fs_xfs;
mod imaging;
mod import;
mod tui;
