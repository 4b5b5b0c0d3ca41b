//! The engine: save, restore and verify jobs, built from a validated plan, reporting progress
//! as events. Nothing here prints.

pub mod blocks;
pub mod clonezilla;
pub mod gpt;
pub mod inspect;
pub mod progress;
pub mod restore;
pub mod save;
pub mod verify;

/// The job was stopped by the user (Ctrl-C).
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;
