//! Integration tests: fs_ntfs.
