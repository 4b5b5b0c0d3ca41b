//! ferroclone: a disk imager and cloner.
//!
//! Module map (docs/ARCHITECTURE.md has the whole picture):
//! - [`disk`]: positional I/O on files, block devices and memory; partition tables; discovery.
//! - [`fs`]: filesystem detection and used-block maps.
//! - [`image`]: the image format (docs/FORMAT.md), its writer and reader.
//! - [`engine`]: save, restore and verify jobs; progress events; cancellation.
//! - [`import`]: reading Clonezilla image directories and partclone/ntfsclone images.
//! - [`cli`]: command-line arguments, confirmation, progress printing.
//! - [`boot`]: the rescue environment's unattended mode (kernel command line).
//! - [`tui`]: the interactive wizard (ratatui): state, screens, jobs on worker threads.
//!
//! Policy: no byte sequence from a disk or an image makes this crate panic, loop forever or
//! allocate without bound; errors say what and where.

pub mod boot;
pub mod bytes;
pub mod cli;
pub mod disk;
pub mod engine;
pub mod fs;
pub mod image;
pub mod import;
pub mod tui;
