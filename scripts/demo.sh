#!/usr/bin/env bash
# demo.sh - install what is needed, build ferroclone, make a Windows-style demo disk in a file,
# save it, verify the image, restore it into a new file and show that everything came back.
# Runs as root; touches only files under $DEMO_DIR (default /var/tmp/ferroclone-demo).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

DEMO_DIR=${DEMO_DIR:-/var/tmp/ferroclone-demo}
SIZE_MIB=${SIZE_MIB:-1024}
rm -rf "$DEMO_DIR" && mkdir -p "$DEMO_DIR/images"
cargo build --release --quiet
fc=target/release/ferroclone
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "making a ${SIZE_MIB} MiB Windows-style disk (GPT: ESP, MSR, C:, Recovery)"
scripts/mkdisk.sh windows "$DEMO_DIR/windows.img" "$SIZE_MIB"
$fc inspect "$DEMO_DIR/windows.img"

say "save"
$fc save "$DEMO_DIR/windows.img" "$DEMO_DIR/images/win"
$fc info "$DEMO_DIR/images/win"

say "verify"
$fc verify "$DEMO_DIR/images/win" --against "$DEMO_DIR/windows.img"

say "restore into a new file"
$fc restore "$DEMO_DIR/images/win" "$DEMO_DIR/restored.img"
$fc inspect "$DEMO_DIR/restored.img"

say "compare: partition table, boot area, every file's SHA-256"
scripts/disk-manifest.sh "$DEMO_DIR/windows.img" "$DEMO_DIR/source.txt"
scripts/disk-manifest.sh "$DEMO_DIR/restored.img" "$DEMO_DIR/restored.txt"
if diff -u "$DEMO_DIR/source.txt" "$DEMO_DIR/restored.txt"; then
    echo "identical: $(grep -c '^[0-9a-f]\{64\} ' "$DEMO_DIR/source.txt") files, tables and boot area"
else
    echo "DIFFERENT" >&2
    exit 1
fi
echo "(files are in $DEMO_DIR)"
