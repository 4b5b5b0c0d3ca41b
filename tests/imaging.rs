//! Integration tests: imaging.
