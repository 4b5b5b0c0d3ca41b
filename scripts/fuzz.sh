#!/usr/bin/env bash
# fuzz.sh - build the fuzz targets with libFuzzer on the stable toolchain (sanitizer-coverage
# passes, no nightly needed) and run each for SECONDS (default 20).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-20}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(table image_structs manifest block fs_probe partclone)
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros.
cargo build --release --quiet --bins --target x86_64-unknown-linux-gnu
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "fuzz: $t for ${secs}s" >&2
    ./target/x86_64-unknown-linux-gnu/release/"$t" -max_total_time="$secs" -rss_limit_mb=1024 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" "corpus/$t" 2>&1 | grep -E "^(stat::number_of_executed_units|stat::peak_rss|==|SUMMARY|.*panicked)" || true
    if ls "artifacts/$t"/crash-* "artifacts/$t"/timeout-* "artifacts/$t"/oom-* >/dev/null 2>&1; then
        echo "fuzz: $t found a failing input in fuzz/artifacts/$t" >&2
        exit 1
    fi
done
