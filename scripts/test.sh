#!/usr/bin/env bash
# test.sh - install what is needed, then run every test tier that runs here:
# format and lint checks, unit tests, integration tests on real disks in files (as root),
# and the static musl build check.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

step() { printf '\n== %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

step "static musl build"
cargo build --release --quiet --target x86_64-unknown-linux-musl
bin=target/x86_64-unknown-linux-musl/release/ferroclone
# file(1) says "statically linked" or, for Rust's default static-PIE musl builds, "static-pie
# linked"; ldd must find no shared libraries either way.
file "$bin" | tee /dev/stderr | grep -Eq "statically linked|static-pie linked" \
    || { echo "test: $bin is not statically linked" >&2; exit 1; }
if ldd "$bin" 2>&1 | grep -q '=>'; then
    echo "test: $bin needs shared libraries:" >&2; ldd "$bin" >&2; exit 1
fi

step "unit and integration tests"
# Integration tests make disks of up to 1 GiB in files; two at a time keeps CI's two cores busy
# without running out of page cache.
cargo test --quiet -- --test-threads="${TEST_THREADS:-2}"

step "fuzz smoke (each target ${FUZZ_SECONDS:-10}s)"
scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
