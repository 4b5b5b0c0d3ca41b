#!/usr/bin/env bash
# bench.sh - ferroclone against its peers on one realistic NTFS fixture, in one run, alternating
# rounds, cold and warm page cache. Prints a table and writes docs/PERFORMANCE.md.
#
# Usage: sudo scripts/bench.sh [--smoke] [--rounds N] [--keep]
#   --smoke   a 320 MiB fixture, one round, no PERFORMANCE.md (CI's check that the script works)
#   --rounds  rounds per pipeline (default 3); the median is reported
#   --keep    keep the fixture in $BENCH_DIR for the next run (it is reused when present)
#
# The fixture: NTFS in a 3 GiB file (bare filesystem), ~2.4 GB used: a copy of /usr/lib and
# /usr/share (real binaries and text, compressible) and seeded random "media" (incompressible),
# about 60/40, with a deleted random file's stale data left in free space.
# Cold cache = `sync; echo 3 > /proc/sys/vm/drop_caches` before each timed command.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=0 ROUNDS=3 KEEP=0
while (($#)); do
    case $1 in
        --smoke) SMOKE=1 ROUNDS=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        --keep) KEEP=1 ;;
        *) echo "bench: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[[ $EUID == 0 ]] || { echo "bench: run as root (drop_caches, ntfs-3g)" >&2; exit 1; }
scripts/setup.sh
for t in partclone.ntfs ntfsclone lz4 zstd pigz ntfs-3g mkntfs; do
    command -v $t >/dev/null || { echo "bench: $t missing" >&2; exit 1; }
done

BENCH_DIR=${BENCH_DIR:-/var/tmp/ferroclone-bench}
mkdir -p "$BENCH_DIR"
if ((SMOKE)); then SIZE_MIB=320 FILL_LIB_MB=120 FILL_RND_MB=80 STALE_MB=40
else SIZE_MIB=3072 FILL_LIB_MB=1450 FILL_RND_MB=950 STALE_MB=400; fi
FIX="$BENCH_DIR/ntfs-${SIZE_MIB}.img"
WORK="$BENCH_DIR/work"
cargo build --release --quiet
FC="$PWD/target/release/ferroclone"

make_fixture() {
    local tmp="$FIX.tmp"
    MNT="$BENCH_DIR/mnt"; local mnt=$MNT
    rm -f "$tmp"; mkdir -p "$mnt"
    truncate -s "${SIZE_MIB}M" "$tmp"
    mkntfs -q -F -Q -L Bench "$tmp"
    ntfs-3g -o big_writes "$tmp" "$mnt"
    trap 'umount "$MNT" 2>/dev/null || true' EXIT
    # Stale data first: a random file, deleted before the real content is written.
    head -c "${STALE_MB}M" /dev/urandom > "$mnt/stale.bin"; sync
    rm "$mnt/stale.bin"
    mkdir -p "$mnt/Windows/System32" "$mnt/ProgramData" "$mnt/Users/Public/Videos"
    # System libraries and shared data: real files, sorted, up to the budget.
    python3 - "$((FILL_LIB_MB * 1024 * 1024))" > "$BENCH_DIR/files.lst" <<'PY'
import os, sys
budget, total = int(sys.argv[1]), 0
for top in ("/usr/lib", "/usr/share"):
    for root, dirs, files in os.walk(top):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(root, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            size = os.path.getsize(p)
            if size == 0:
                continue
            if total + size > budget:
                sys.exit(0)
            total += size
            print(p[1:])
PY
    tar -C / -cf - -T "$BENCH_DIR/files.lst" 2>/dev/null | tar -C "$mnt/Windows/System32" -xf -
    # Media: seeded random, incompressible.
    local i n=$((FILL_RND_MB / 50)) rest=$((FILL_RND_MB % 50))
    for ((i = 0; i < n; i++)); do
        (set +o pipefail; openssl enc -aes-128-ctr -pass pass:bench$i -nosalt -pbkdf2 </dev/zero 2>/dev/null \
            | head -c 50M > "$mnt/Users/Public/Videos/clip$i.wmv")
    done
    if ((rest)); then head -c "${rest}M" /dev/urandom > "$mnt/Users/Public/Videos/rest.wmv"; fi
    umount "$mnt"; trap - EXIT
    mv "$tmp" "$FIX"
}
[[ -f $FIX ]] || { echo "bench: making the fixture $FIX" >&2; make_fixture; }
USED=$("$FC" inspect "$FIX" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitions"][0]["used_bytes"])')
echo "bench: fixture $FIX, $((USED / 1000000)) MB used" >&2

# One timed run: prints "wall user sys maxrss_kb". $1 = cold|warm, rest = a shell command.
timed() {
    local mode=$1; shift
    rm -rf "$WORK"; mkdir -p "$WORK"
    if [[ $mode == cold ]]; then sync; echo 3 > /proc/sys/vm/drop_caches; else cat "$FIX" > /dev/null; fi
    local out; out=$(mktemp)
    /usr/bin/time -f "%e %U %S %M" -o "$out" bash -c "$*" >/dev/null 2>"$WORK.err" \
        || { echo "bench: failed: $*" >&2; cat "$WORK.err" >&2; exit 1; }
    cat "$out"; rm -f "$out"
}

# Saves. Each writes into $WORK; its size is the image size.
declare -A SAVE=(
    [ferroclone]="'$FC' save '$FIX' '$WORK/img' --no-verify -q"
    [ferroclone+verify]="'$FC' save '$FIX' '$WORK/img' -q"
    [partclone|lz4]="partclone.ntfs -c -s '$FIX' -o - -L /dev/null | lz4 -1 -q > '$WORK/pc.lz4'"
    [partclone-a0|lz4]="partclone.ntfs -c -a0 -s '$FIX' -o - -L /dev/null | lz4 -1 -q > '$WORK/pc.lz4'"
    [partclone|zstd-T0]="partclone.ntfs -c -s '$FIX' -o - -L /dev/null | zstd -1 -T0 -q > '$WORK/pc.zst'"
    [partclone|pigz]="partclone.ntfs -c -s '$FIX' -o - -L /dev/null | pigz -1 > '$WORK/pc.gz'"
    [ntfsclone|lz4]="ntfsclone --save-image -f -o - '$FIX' 2>/dev/null | lz4 -1 -q > '$WORK/nc.lz4'"
    [dd|lz4]="dd if='$FIX' bs=4M status=none | lz4 -1 -q > '$WORK/dd.lz4'"
    [dd-read]="dd if='$FIX' of=/dev/null bs=4M status=none"
)
SAVE_ORDER=(ferroclone ferroclone+verify "partclone|lz4" "partclone-a0|lz4" "partclone|zstd-T0" "partclone|pigz" "ntfsclone|lz4" "dd|lz4" dd-read)
((SMOKE)) && SAVE_ORDER=(ferroclone ferroclone+verify "partclone|lz4" "ntfsclone|lz4" dd-read)

# Images to restore from, made once.
IMGS="$BENCH_DIR/images"
rm -rf "$IMGS"; mkdir -p "$IMGS"
"$FC" save "$FIX" "$IMGS/fc" --no-verify -q >/dev/null
partclone.ntfs -c -s "$FIX" -o - -L /dev/null 2>/dev/null | lz4 -1 -q > "$IMGS/pc.lz4"
ntfsclone --save-image -f -o - "$FIX" 2>/dev/null | lz4 -1 -q > "$IMGS/nc.lz4"
declare -A RESTORE=(
    [ferroclone]="'$FC' restore '$IMGS/fc' '$WORK/t.img' -q"
    [lz4|partclone]="truncate -s ${SIZE_MIB}M '$WORK/t.img' && lz4 -d -q < '$IMGS/pc.lz4' | partclone.ntfs -r -s - -O '$WORK/t.img' -L /dev/null && sync '$WORK/t.img'"
    [lz4|ntfsclone]="truncate -s ${SIZE_MIB}M '$WORK/t.img' && lz4 -d -q < '$IMGS/nc.lz4' | ntfsclone --restore-image -O '$WORK/t.img' - >/dev/null 2>&1 && sync '$WORK/t.img'"
    [dd-write]="dd if='$FIX' of='$WORK/t.img' bs=4M status=none conv=fsync"
)
RESTORE_ORDER=(ferroclone "lz4|partclone" "lz4|ntfsclone" dd-write)
declare -A CLONE=(
    [ferroclone]="'$FC' clone '$FIX' '$WORK/t.img' -q"
    [partclone-b]="truncate -s ${SIZE_MIB}M '$WORK/t.img' && partclone.ntfs -b -s '$FIX' -O '$WORK/t.img' -L /dev/null && sync '$WORK/t.img'"
    [dd-copy]="dd if='$FIX' of='$WORK/t.img' bs=4M status=none conv=fsync"
)
CLONE_ORDER=(ferroclone partclone-b dd-copy)

declare -A R   # R[kind/name/mode] = list of "wall user sys rss"
declare -A SIZE
for ((round = 1; round <= ROUNDS; round++)); do
    for mode in cold warm; do
        ((SMOKE)) && [[ $mode == warm ]] && continue
        for name in "${SAVE_ORDER[@]}"; do
            echo "bench: round $round $mode save $name" >&2
            R[save/$name/$mode]+="$(timed "$mode" "${SAVE[$name]}");"
            SIZE[$name]=$(du -sb "$WORK" | cut -f1)
        done
        for name in "${RESTORE_ORDER[@]}"; do
            echo "bench: round $round $mode restore $name" >&2
            R[restore/$name/$mode]+="$(timed "$mode" "${RESTORE[$name]}");"
        done
        for name in "${CLONE_ORDER[@]}"; do
            echo "bench: round $round $mode clone $name" >&2
            R[clone/$name/$mode]+="$(timed "$mode" "${CLONE[$name]}");"
        done
    done
done
rm -rf "$WORK"

# Medians and the table.
median() { tr ';' '\n' | grep -v '^$' | awk -v c="$1" '{print $c}' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
row() { # kind name
    local k=$1 n=$2 cw cu cs cr ww
    cw=$(median 1 <<<"${R[$k/$n/cold]}"); cu=$(median 2 <<<"${R[$k/$n/cold]}")
    cs=$(median 3 <<<"${R[$k/$n/cold]}"); cr=$(median 4 <<<"${R[$k/$n/cold]}")
    ww=$( ((SMOKE)) && echo "-" || median 1 <<<"${R[$k/$n/warm]}")
    local mbs; mbs=$(awk -v u="$USED" -v w="$cw" 'BEGIN{printf "%.0f", u/1e6/w}')
    local sz="${SIZE[$n]:-}"; [[ -n $sz && $k == save ]] && sz=$(awk -v s="$sz" 'BEGIN{printf "%.2f GB", s/1e9}') || sz=""
    printf '| %s | %s | %s | %s | %s | %.1f | %s | %s |\n' "$k" "$n" "$cw" "$ww" "$mbs" "$(awk -v u="$cu" -v s="$cs" 'BEGIN{print u+s}')" "$((cr / 1024)) MiB" "$sz"
}
TABLE=$(
    echo "| job | pipeline | cold wall s | warm wall s | MB/s of used data (cold) | CPU s (cold) | peak RSS | image |"
    echo "|---|---|---|---|---|---|---|---|"
    for n in "${SAVE_ORDER[@]}"; do row save "$n"; done
    for n in "${RESTORE_ORDER[@]}"; do row restore "$n"; done
    for n in "${CLONE_ORDER[@]}"; do row clone "$n"; done
)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b/a}'; }
fcs=$(median 1 <<<"${R[save/ferroclone/cold]}"); pcs=$(median 1 <<<"${R[save/partclone|lz4/cold]}")
ncs=$(median 1 <<<"${R[save/ntfsclone|lz4/cold]}"); dds=$(median 1 <<<"${R[save/dd-read/cold]}")
fcr=$(median 1 <<<"${R[restore/ferroclone/cold]}"); pcr=$(median 1 <<<"${R[restore/lz4|partclone/cold]}")
fcc=$(median 1 <<<"${R[clone/ferroclone/cold]}"); pcc=$(median 1 <<<"${R[clone/partclone-b/cold]}")
SUMMARY=$(
    echo "- save: $(ratio "$fcs" "$pcs")x faster than partclone.ntfs | lz4 -1, $(ratio "$fcs" "$ncs")x faster than ntfsclone | lz4 (cold)"
    echo "- restore: $(ratio "$fcr" "$pcr")x faster than lz4 -d | partclone.ntfs -r (cold)"
    echo "- clone: $(ratio "$fcc" "$pcc")x faster than partclone.ntfs -b (device to device, cold)"
    if ((!SMOKE)); then
        w() { median 1 <<<"${R[save/$1/warm]}"; }
        a0c=$(median 1 <<<"${R[save/partclone-a0|lz4/cold]}")
        echo "- save vs the best peers: cold $(ratio "$fcs" "$ncs")x ntfsclone|lz4, $(ratio "$fcs" "$a0c")x partclone -a0|lz4; warm $(ratio "$(w ferroclone)" "$(w "ntfsclone|lz4")")x and $(ratio "$(w ferroclone)" "$(w "partclone-a0|lz4")")x"
        echo "- save + verify (cold): $(median 1 <<<"${R[save/ferroclone+verify/cold]}") s against $fcs s for the save alone"
    fi
    echo "- save throughput of used data vs dd's sequential read of the whole file: $(awk -v u="$USED" -v f="$fcs" -v d="$dds" -v s="$SIZE_MIB" 'BEGIN{printf "%.0f%%", (u/f)/(s*1048576/d)*100}')"
    echo "- image size: ferroclone $(awk -v s="${SIZE[ferroclone]}" 'BEGIN{printf "%.3f", s/1e9}') GB vs partclone|lz4 $(awk -v s="${SIZE[partclone|lz4]}" 'BEGIN{printf "%.3f", s/1e9}') GB ($(awk -v a="${SIZE[ferroclone]}" -v b="${SIZE[partclone|lz4]}" 'BEGIN{printf "%.3f", a/b}')x)"
)
echo "$TABLE"; echo; echo "$SUMMARY"
if ((!SMOKE)); then
    {
        echo "# Performance"
        echo
        echo "Measured by \`scripts/bench.sh\` on $(date -u +%Y-%m-%d): $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r)."
        echo "Fixture: NTFS in a ${SIZE_MIB} MiB file, $((USED / 1000000)) MB used (a copy of /usr/lib and /usr/share plus"
        echo "seeded random media, stale data in free space). $ROUNDS rounds, alternating pipelines, medians;"
        echo "cold = page cache dropped before each command. Shared machine: read the ratios, not the seconds."
        echo
        echo "$SUMMARY"
        echo
        echo "$TABLE"
        echo
        [[ -f docs/PERFORMANCE.notes.md ]] && cat docs/PERFORMANCE.notes.md
    } > docs/PERFORMANCE.md
    echo "bench: wrote docs/PERFORMANCE.md" >&2
fi
((KEEP)) || ((!SMOKE)) || rm -f "$FIX"
