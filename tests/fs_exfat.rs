//! Integration tests: fs_exfat.
