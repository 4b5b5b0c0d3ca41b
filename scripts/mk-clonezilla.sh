#!/usr/bin/env bash
# mk-clonezilla.sh - make a Clonezilla-style image directory of a disk file, the way
# Clonezilla's `ocs-sr savedisk` lays it out, from REAL partclone output.
#
# Usage: scripts/mk-clonezilla.sh [options] DISK OUT_DIR
#
#   --comp LIST     compressions, given to the imaged partitions in turn (default gz):
#                   gz zst lz4 xz bz2 none (file suffixes gz zst lz4 xz bz2 uncomp)
#   --csum LIST     partclone checksum options in turn, ';'-separated (default "-a1"),
#                   e.g. "-a1 -k 64;-a0;-a1 -K"
#   --split SIZE    cut every data file into pieces of SIZE (split -b SIZE -a 2: .aa .ab …);
#                   0 = no split (default 0)
#   --ntfsclone     image NTFS partitions with ntfsclone (*.ntfs-img) instead of partclone
#
# The disk is called sda in the image.  What is written (shared/reference/peers.md §3.2):
#   disk, parts, sda-pt.sf (sfdisk -d), sda-pt.parted (parted unit s print), sda-chs.sf,
#   sda-mbr; GPT: sda-gpt-1st (34 sectors), sda-gpt-2nd (last 33), sda-gpt.gdisk (sgdisk -b),
#   sda-gpt.sgdisk; MBR: sda-hidden-data-after-mbr (sectors 1 .. first partition - 1),
#   sdaN-ebr of the extended partition; swappt-sdaN.info for swap (not imaged);
#   dev-fs.list, blkid.list, clonezilla-img, Info-saved-by-cmd.txt; and per partition
#   sdaN.<fs>-ptcl-img.<z>[.aa …] made by `partclone.<fs> -c -s LOOP -o -` (partclone.dd for
#   partitions without a filesystem, as Clonezilla does for an MSR), piped into the compressor
#   and split.
# Every partition is read through a read-only loop device at its offset; DISK is not written.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib-loop.sh
. "$SCRIPT_DIR/lib-loop.sh"
export LC_ALL=C TZ=UTC

COMPS=gz
CSUMS="-a1"
SPLIT=0
NTFSCLONE=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --comp) COMPS=$2; shift 2 ;;
        --csum) CSUMS=$2; shift 2 ;;
        --split) SPLIT=$2; shift 2 ;;
        --ntfsclone) NTFSCLONE=1; shift ;;
        -h | --help)
            awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
            exit 2 ;;
        --*) ll_die "unknown option $1" ;;
        *) break ;;
    esac
done
[[ $# == 2 ]] || ll_die "usage: mk-clonezilla.sh [options] DISK OUT_DIR"
DISK=$1
OUT=$2
[[ $EUID == 0 ]] || ll_die "must run as root"
[[ -f $DISK ]] || ll_die "$DISK: not a regular file"
[[ ! -e $OUT ]] || ll_die "$OUT exists"
for t in sfdisk sgdisk parted blkid losetup split gzip zstd lz4 xz bzip2 partclone.dd; do
    command -v "$t" >/dev/null || ll_die "missing tool: $t"
done
IFS=',' read -r -a COMP_LIST <<<"$COMPS"
IFS=';' read -r -a CSUM_LIST <<<"$CSUMS"

ll_init
mkdir -p "$OUT"
D=sda
SS=512

compress() {
    case $1 in
        gz) gzip -c -1 ;;
        zst) zstd -q -c -3 -T2 ;;
        lz4) lz4 -q -c -1 ;;
        xz) xz -c -1 -T2 ;;
        bz2) bzip2 -c -1 ;;
        none) cat ;;
        *) ll_die "unknown compression $1" ;;
    esac
}
suffix() { if [[ $1 == none ]]; then echo uncomp; else echo "$1"; fi; }

# store NAME: stdin -> OUT/NAME, or OUT/NAME.aa, .ab, … with --split
store() {
    if [[ $SPLIT == 0 ]]; then
        cat >"$OUT/$1"
    else
        split -b "$SPLIT" -a 2 - "$OUT/$1."
    fi
}

sfdisk -d "$DISK" | sed -e "s#^$DISK#/dev/$D#" -e "s#^device: .*#device: /dev/$D#" >"$OUT/$D-pt.sf"
parted -s "$DISK" unit s print | sed -e "s#^Disk $DISK:#Disk /dev/$D:#" >"$OUT/$D-pt.parted"
parted -s "$DISK" unit compact print | sed -e "s#^Disk $DISK:#Disk /dev/$D:#" >"$OUT/$D-pt.parted.compact"
LABEL=$(awk '/^label:/ {print $2}' "$OUT/$D-pt.sf")
DISK_SECTORS=$(($(stat -c %s "$DISK") / SS))
printf 'cylinders=%s\nheads=255\nsectors=63\n' $((DISK_SECTORS / (255 * 63))) >"$OUT/$D-chs.sf"
dd if="$DISK" of="$OUT/$D-mbr" bs=512 count=1 status=none
FIRST=$(sfdisk -d "$DISK" | awk -F'[=,]' '/start=/ {gsub(/ /, "", $2); print $2}' | sort -n | head -1)
if [[ $LABEL == gpt ]]; then
    dd if="$DISK" of="$OUT/$D-gpt-1st" bs=512 count=34 status=none
    dd if="$DISK" of="$OUT/$D-gpt-2nd" bs=512 skip=$((DISK_SECTORS - 33)) count=33 status=none
    sgdisk -b "$OUT/$D-gpt.gdisk" "$DISK" >/dev/null
    sgdisk -p "$DISK" | sed -e "s#$DISK#/dev/$D#" >"$OUT/$D-gpt.sgdisk"
else
    dd if="$DISK" of="$OUT/$D-hidden-data-after-mbr" bs=512 skip=1 count=$((FIRST - 1)) status=none
fi

echo "# <Device name>   <File system>   <Size>" >"$OUT/dev-fs.list"
: >"$OUT/blkid.list"
parts=()
i=0
while read -r dev start size type; do
    n=${dev##*[!0-9]}
    name=$D$n
    if [[ $LABEL == dos && ($type == 5 || $type == f || $type == 85) ]]; then
        dd if="$DISK" of="$OUT/$name-ebr" bs=512 skip="$start" count=1 status=none
        continue
    fi
    ll_loop_attach loop -r -o $((start * SS)) --sizelimit $((size * SS)) "$DISK"
    info=$(blkid -c /dev/null -o export "$loop" || true)
    fs=$(sed -n 's/^TYPE=//p' <<<"$info")
    blkid -c /dev/null "$loop" | sed -e "s#^$loop:#/dev/$name:#" >>"$OUT/blkid.list" || true
    echo "/dev/$name ${fs:-unknown} $((size * SS / 1048576))M" >>"$OUT/dev-fs.list"
    if [[ $fs == swap ]]; then
        uuid=$(sed -n 's/^UUID=//p' <<<"$info")
        label=$(sed -n 's/^LABEL=//p' <<<"$info")
        printf 'UUID="%s"\nLABEL="%s"\n' "$uuid" "$label" >"$OUT/swappt-$name.info"
        ll_loop_detach "$loop"
        continue
    fi
    comp=${COMP_LIST[$((i % ${#COMP_LIST[@]}))]}
    csum=${CSUM_LIST[$((i % ${#CSUM_LIST[@]}))]}
    i=$((i + 1))
    z=$(suffix "$comp")
    # shellcheck disable=SC2086
    case $fs in
        ntfs)
            if [[ $NTFSCLONE == 1 ]]; then
                ntfsclone --save-image -o - "$loop" 2>/dev/null | compress "$comp" | store "$name.ntfs-img"
            else
                partclone.ntfs -c -q $csum -s "$loop" -o - 2>/dev/null | compress "$comp" | store "$name.ntfs-ptcl-img.$z"
            fi ;;
        vfat) partclone.vfat -c -q $csum -s "$loop" -o - 2>/dev/null | compress "$comp" | store "$name.vfat-ptcl-img.$z" ;;
        ext2 | ext3 | ext4) partclone."$fs" -c -q $csum -s "$loop" -o - 2>/dev/null | compress "$comp" | store "$name.$fs-ptcl-img.$z" ;;
        *) partclone.dd -q -s "$loop" -o - 2>/dev/null | compress "$comp" | store "$name.dd-ptcl-img.$z" ;;
    esac
    ll_loop_detach "$loop"
    parts+=("$name")
done < <(sfdisk -d "$DISK" | sed -n "s#^$DISK\([0-9]*\) : start= *\([0-9]*\), size= *\([0-9]*\), type=\([0-9A-Fa-f-]*\).*#\1 \2 \3 \4#p")

echo "$D" >"$OUT/disk"
echo "${parts[*]}" >"$OUT/parts"
{
    echo "This image was saved by Clonezilla at $(date -u -d @1600000000 '+%Y-%m-%d %H:%M:%S UTC')"
    echo "Saved by scripts/mk-clonezilla.sh (real partclone $(partclone.dd -v 2>&1 | head -1 | awk '{print $2}'))"
    echo "### End of log ###"
    echo "### Image created time: 2020-0913-1226"
} >"$OUT/clonezilla-img"
echo "ocs-sr -q2 -c -j2 -z1p -i 4096 -sfsck -senc -p choose savedisk img $D" >"$OUT/Info-saved-by-cmd.txt"
ll_log "wrote $OUT (${parts[*]})"
