#!/usr/bin/env bash
# disk-manifest.sh - describe what a restore test compares, without writing.
#
# Usage: scripts/disk-manifest.sh DISK OUT_TXT
#
# DISK is a disk image (regular file) or a block device (e.g. a loop device
# attached with --sector-size 4096).  For a regular file the sector size is
# detected from the GPT header position (512 or 4096; a 4096-sector image is
# attached read-only to a loop device internally); for a block device it is
# `blockdev --getss`.
#
# OUT_TXT gets, in a stable order and without the disk's own path:
#   * the partition table (`sfdisk -d`, device names replaced by pN);
#   * sha256 of the boot code (sector 0, bytes 0..440) and of the gap between
#     the partition table and the first partition (post-MBR gap);
#   * for each partition: start/size in bytes, blkid TYPE/UUID/LABEL/VERSION,
#     then the content: `sha256  ./path` of every regular file, plus `dir`,
#     `link` and (ext*, xfs, btrfs) `meta mode uid:gid` lines, all sorted.
#     ext2/3/4 are read with debugfs rdump, FAT with mtools (image@@offset),
#     NTFS with ntfs-3g -o ro on a read-only offset loop device, xfs/btrfs with
#     a read-only kernel mount of a read-only loop device.  Swap: blkid only.
#     Anything else (no filesystem, unsupported): sha256 of the raw bytes.
# Nothing is ever mounted read-write and nothing is written to DISK.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib-loop.sh
. "$SCRIPT_DIR/lib-loop.sh"

export LC_ALL=C TZ=UTC MTOOLS_SKIP_CHECK=1

if [[ $# != 2 ]]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
    exit 2
fi
DISK=$1
OUT=$2
[[ $EUID == 0 ]] || ll_die "must run as root"
[[ -f $DISK || -b $DISK ]] || ll_die "$DISK: not a regular file or block device"
for t in sfdisk blkid debugfs mcopy ntfs-3g losetup blockdev sha256sum dd; do
    command -v "$t" >/dev/null || ll_die "missing tool: $t"
done

ll_init
ll_tmpdir T
RES=$T/manifest.txt
: >"$RES"
emit() { printf '%s\n' "$*" >>"$RES"; }

# ------------------------------------------------------------ sector size --
DEV=$DISK
if [[ -b $DISK ]]; then
    SS=$(blockdev --getss "$DISK")
    DISK_BYTES=$(blockdev --getsize64 "$DISK")
else
    DISK_BYTES=$(stat -c %s "$DISK")
    SS=512
    if [[ "$(dd if="$DISK" bs=1 skip=512 count=8 status=none | tr -d '\0')" != "EFI PART" &&
        "$(dd if="$DISK" bs=1 skip=4096 count=8 status=none | tr -d '\0')" == "EFI PART" ]]; then
        SS=4096
        ll_loop_attach DEV -r --sector-size 4096 "$DISK"
        [[ $(blockdev --getss "$DEV") == 4096 ]] || ll_die "could not get a 4096-byte sector loop device"
    fi
fi

# read LEN bytes at byte OFFSET of the disk and hash them
hash_range() {
    local off=$1 len=$2
    dd if="$DEV" bs=1M skip="$off" count="$len" iflag=skip_bytes,count_bytes status=none |
        sha256sum | cut -d' ' -f1
}

# list a directory tree: dirs, links, other specials, then file hashes
list_tree() {
    local dir=$1 meta=${2:-0}
    (
        cd "$dir"
        find . -mindepth 1 -type d -printf 'dir  %p\n' | sort
        find . -type l -printf 'link  %p -> %l\n' | sort
        find . ! -type d ! -type l ! -type f -printf 'special  %y %p\n' | sort
        find . -type f -print0 | sort -z | xargs -0 -r sha256sum
        if [[ $meta == 1 ]]; then
            find . -printf 'meta  %m %U:%G %p\n' | sort
        fi
    ) >>"$RES"
}

content_ext() {
    local off=$1 dst=$T/rdump err=$T/debugfs.err
    rm -rf "$dst"
    mkdir -p "$dst"
    debugfs -R "rdump / $dst" "$DEV?offset=$off" 2>"$err" >/dev/null || true
    if grep -v '^debugfs [0-9]' "$err" | grep -q .; then
        cat "$err" >&2
        ll_die "debugfs rdump failed at offset $off"
    fi
    list_tree "$dst" 0
    # rdump drops setuid/setgid/sticky bits: take mode and owner from
    # `debugfs ls -p` of every directory instead
    (cd "$dst" && find . -type d) | sort | sed 's|^\.||' |
        while IFS= read -r d; do printf 'ls -p "%s"\n' "${d:-/}"; done >"$T/ls.cmd"
    debugfs -f "$T/ls.cmd" "$DEV?offset=$off" 2>/dev/null | awk -F/ '
        function perm(m) { m = substr(m, length(m) - 3); sub(/^0+/, "", m); return m == "" ? "0" : m }
        /^debugfs: ls -p "/ { d = substr($0, 17, length($0) - 17); if (d == "/") d = ""; next }
        $1 == "" && NF >= 7 {
            name = $6
            if (name == ".." || name == "" || $2 == "0") next
            if (name == ".") { if (d == "") print "meta  " perm($3) " " $4 ":" $5 " ."; next }
            print "meta  " perm($3) " " $4 ":" $5 " ." d "/" name
        }' | sort >>"$RES"
    rm -rf "$dst"
}

content_fat() {
    local off=$1 dst=$T/fat
    rm -rf "$dst"
    mkdir -p "$dst"
    mcopy -s -m -n -i "$DEV@@$off" ::/ "$dst/" >/dev/null 2>"$T/mcopy.err" || {
        cat "$T/mcopy.err" >&2
        ll_die "mcopy failed at offset $off"
    }
    list_tree "$dst" 0
    rm -rf "$dst"
}

content_ntfs() {
    local off=$1 len=$2 loop mnt=$T/ntfs
    mkdir -p "$mnt"
    ll_loop_attach loop -r -o "$off" --sizelimit "$len" "$DEV"
    ll_ntfs_mount "$loop" "$mnt" ro
    list_tree "$mnt" 0
    ll_umount "$mnt"
    ll_loop_detach "$loop"
}

content_kmount() {
    local off=$1 len=$2 type=$3 loop mnt=$T/kmnt opts=ro
    if [[ $type == xfs ]]; then opts=ro,norecovery; fi
    mkdir -p "$mnt"
    ll_loop_attach loop -r -o "$off" --sizelimit "$len" "$DEV"
    mount -t "$type" -o "$opts" "$loop" "$mnt"
    ll_mount_record "$mnt"
    list_tree "$mnt" 1
    ll_umount "$mnt"
    ll_loop_detach "$loop"
}

# describe_fs OFF LEN TITLE
describe_fs() {
    local off=$1 len=$2 title=$3 key
    local -A tag=()
    emit ""
    emit "== $title"
    while IFS='=' read -r key val; do
        if [[ -n $key ]]; then tag[$key]=$val; fi
    done < <(blkid -p -o export -O "$off" -S "$len" "$DEV" 2>/dev/null || true)
    local type=${tag[TYPE]:-}
    emit "blkid: TYPE=${type} UUID=${tag[UUID]:-} LABEL=${tag[LABEL]:-} VERSION=${tag[VERSION]:-}"
    case $type in
        ext2 | ext3 | ext4) content_ext "$off" ;;
        vfat) content_fat "$off" ;;
        ntfs) content_ntfs "$off" "$len" ;;
        xfs | btrfs) content_kmount "$off" "$len" "$type" ;;
        swap) ;;
        *) emit "raw-sha256: $(hash_range "$off" "$len")" ;;
    esac
}

# --------------------------------------------------------- partition table --
emit "# ferroclone disk manifest v1"
emit "sector-size: $SS"
emit "bootcode-sha256: $(hash_range 0 440)"

if DUMP=$(sfdisk -d "$DEV" 2>/dev/null) && grep -q '^label:' <<<"$DUMP"; then
    LABEL=$(sed -n 's/^label: *//p' <<<"$DUMP")
    FIRST_LBA=1
    if [[ $LABEL == gpt ]]; then
        FIRST_LBA=$(sed -n 's/^first-lba: *//p' <<<"$DUMP")
    fi
    declare -a P_NUM=() P_START=() P_SIZE=() P_TYPE=()
    emit "table:"
    while IFS= read -r line; do
        if [[ $line =~ ^device: ]]; then continue; fi
        if [[ $line =~ ^(.*[^0-9])([0-9]+)\ :\ (.*)$ ]]; then
            n=${BASH_REMATCH[2]}
            rest=${BASH_REMATCH[3]}
            s=0 z=0
            emit "  p$n : $rest"
            [[ $rest =~ start=\ *([0-9]+) ]] && s=${BASH_REMATCH[1]}
            [[ $rest =~ size=\ *([0-9]+) ]] && z=${BASH_REMATCH[1]}
            t=
            [[ $rest =~ type=([0-9A-Fa-f-]+) ]] && t=${BASH_REMATCH[1]}
            P_NUM+=("$n") P_START+=("$s") P_SIZE+=("$z") P_TYPE+=("$t")
        elif [[ -n $line ]]; then
            emit "  $line"
        fi
    done <<<"$DUMP"

    # gap between the table and the first partition (post-MBR gap)
    min=
    for s in "${P_START[@]}"; do
        if [[ -z $min ]] || ((s < min)); then min=$s; fi
    done
    if [[ -n $min ]] && ((min > FIRST_LBA)); then
        g0=$((FIRST_LBA * SS)) g1=$((min * SS))
        emit "gap: start=$g0 len=$((g1 - g0)) sha256=$(hash_range "$g0" $((g1 - g0)))"
    else
        emit "gap: none"
    fi

    for i in "${!P_NUM[@]}"; do
        off=$((P_START[i] * SS)) len=$((P_SIZE[i] * SS))
        case ${P_TYPE[i],,} in
            5 | f | 85)
                emit ""
                emit "== p${P_NUM[i]} start=$off size=$len (extended container)"
                continue
                ;;
        esac
        describe_fs "$off" "$len" "p${P_NUM[i]} start=$off size=$len"
    done
else
    emit "table: none"
    describe_fs 0 "$DISK_BYTES" "whole disk"
fi

cp -- "$RES" "$OUT.tmp.$$"
mv -f -- "$OUT.tmp.$$" "$OUT"
