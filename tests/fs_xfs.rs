//! Integration tests: fs_xfs.
