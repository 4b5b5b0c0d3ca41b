//! Used-block map for this filesystem (see ../shared/reference/filesystems.md).

use crate::disk::Region;
use crate::fs::{FsError, FsInfo};

/// Fills `info.used` (and block size, warnings, minimum size) for a partition whose signature
/// says it holds this filesystem. Leaving `used` as `None` images the partition raw.
pub fn fill(_part: &Region<'_>, _info: &mut FsInfo) -> Result<(), FsError> {
    Ok(())
}
