//! Integration tests: fs_btrfs.
