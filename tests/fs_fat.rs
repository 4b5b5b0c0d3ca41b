//! Integration tests: fs_fat.
