//! The engine: save, restore, clone and verify jobs, built from a validated plan, reporting progress
//! as events. Nothing here prints.

pub mod blocks;
pub mod clone;
pub mod clonezilla;
pub mod fit;
pub mod gpt;
pub mod inspect;
pub mod layout;
pub mod progress;
pub mod resize;
pub mod restore;
pub mod save;
pub mod tables;
pub mod verify;

/// The job was stopped by the user (Ctrl-C).
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;
