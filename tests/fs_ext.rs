//! Integration tests: fs_ext.
