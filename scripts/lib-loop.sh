# shellcheck shell=bash
# lib-loop.sh - resource tracking helpers shared by mkdisk.sh and disk-manifest.sh.
#
# Source it from a `set -euo pipefail` bash script, then call ll_init once.
# Everything created through these helpers (temp dirs, loop devices, FUSE
# mounts, kernel mounts, daemon pids) is recorded and released by the EXIT
# trap, in reverse order, even when the script fails half way.
#
# Rules kept here on purpose:
#   * loop devices are only ever created with `losetup -f --show ...` and only
#     the devices recorded here are detached (never `losetup -D`);
#   * only pids started by this script are waited for / signalled;
#   * temp dirs are removed with --one-file-system after everything is
#     unmounted, so a mount that refuses to go away is never recursed into.

LL_TMPDIRS=()
LL_LOOPS=()
LL_MOUNTS=()     # mountpoints, unmounted in reverse order
declare -gA LL_PIDS=()  # mountpoint -> daemon pid (ntfs-3g -o no_detach)
LL_FAIL_FILES=() # files removed by the EXIT trap only when the script fails
LL_VERBOSE=${LL_VERBOSE:-0}

ll_log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
ll_die() { ll_log "error: $*"; exit 1; }
ll_debug() { if [[ $LL_VERBOSE == 1 ]]; then ll_log "$*"; fi; }

ll_init() {
    trap 'll_cleanup' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# ll_tmpdir VAR [PARENT]: create a temp dir, store its path in VAR.
ll_tmpdir() {
    local __var=$1 __parent=${2:-${TMPDIR:-/tmp}} __d
    __d=$(mktemp -d "$__parent/ferroclone.XXXXXX")
    LL_TMPDIRS+=("$__d")
    printf -v "$__var" '%s' "$__d"
}

# ll_loop_attach VAR LOSETUP_ARGS... FILE
# Runs `losetup -f --show ARGS... FILE` and stores the new device in VAR.
ll_loop_attach() {
    local __var=$1 __dev
    shift
    __dev=$(losetup -f --show "$@")
    [[ $__dev == /dev/loop* ]] || ll_die "losetup returned '$__dev'"
    LL_LOOPS+=("$__dev")
    ll_debug "attached $__dev ($*)"
    printf -v "$__var" '%s' "$__dev"
}

# ll_loop_check DEV FILE: make sure DEV is backed by FILE (paranoia before
# running partitioners on it).
ll_loop_check() {
    local dev=$1 file=$2 back
    back=$(losetup -n -O BACK-FILE "$dev" | sed 's/[[:space:]]*$//')
    [[ "$(readlink -f "$back")" == "$(readlink -f "$file")" ]] \
        || ll_die "$dev is backed by '$back', not '$file'"
}

ll_loop_detach() {
    local dev=$1 i
    for i in "${!LL_LOOPS[@]}"; do
        if [[ ${LL_LOOPS[$i]} == "$dev" ]]; then
            losetup -d "$dev"
            unset 'LL_LOOPS[i]'
            ll_debug "detached $dev"
            return 0
        fi
    done
    ll_die "refusing to detach $dev: not attached by this script"
}

# ll_ntfs_mount SRC MNT [OPTS]: mount NTFS (image file or block device) with
# ntfs-3g in the foreground (no_detach) as a background job, so that its pid is
# known and we can wait for it to finish flushing after unmount (for a FUSE
# mount of a regular file the kernel does not wait for the daemon).
ll_ntfs_mount() {
    local src=$1 mnt=$2 opts=${3:-}
    local log i pid
    log="$mnt.ntfs-3g.log"
    ntfs-3g -o "no_detach${opts:+,$opts}" "$src" "$mnt" >"$log" 2>&1 &
    pid=$!
    LL_PIDS[$mnt]=$pid
    for ((i = 0; i < 200; i++)); do
        if mountpoint -q "$mnt"; then
            LL_MOUNTS+=("$mnt")
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$log" >&2 || true
            ll_die "ntfs-3g failed to mount $src"
        fi
        sleep 0.05
    done
    cat "$log" >&2 || true
    ll_die "timeout waiting for ntfs-3g mount of $src on $mnt"
}

# ll_mount_record MNT: record a mount done by the caller (kernel mount).
ll_mount_record() { LL_MOUNTS+=("$1"); }

ll__wait_pid() {
    local pid=$1 i
    for ((i = 0; i < 600; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.05
    done
    ll_log "warning: daemon $pid still running after unmount; sending TERM"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# ll_umount MNT: unmount, then wait for its daemon (if any) to exit: ntfs-3g
# finishes writing the volume only when it exits.
ll_umount() {
    local mnt=$1 i
    if mountpoint -q "$mnt"; then
        umount "$mnt" 2>/dev/null || fusermount -u "$mnt"
    fi
    for i in "${!LL_MOUNTS[@]}"; do
        if [[ ${LL_MOUNTS[$i]} == "$mnt" ]]; then unset 'LL_MOUNTS[i]'; fi
    done
    if [[ -n ${LL_PIDS[$mnt]:-} ]]; then
        ll__wait_pid "${LL_PIDS[$mnt]}"
        unset 'LL_PIDS[$mnt]'
    fi
}

ll_cleanup() {
    local rc=$? i m d
    set +e
    trap - EXIT
    # unmount in reverse order
    local -a mounts=("${LL_MOUNTS[@]}")
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        m=${mounts[$i]}
        if mountpoint -q "$m" 2>/dev/null; then
            umount "$m" 2>/dev/null || fusermount -u "$m" 2>/dev/null \
                || umount -l "$m" 2>/dev/null || ll_log "warning: could not unmount $m"
        fi
    done
    LL_MOUNTS=()
    for m in "${!LL_PIDS[@]}"; do
        ll__wait_pid "${LL_PIDS[$m]}"
    done
    LL_PIDS=()
    local -a loops=("${LL_LOOPS[@]}")
    for ((i = ${#loops[@]} - 1; i >= 0; i--)); do
        d=${loops[$i]}
        losetup -d "$d" 2>/dev/null || ll_log "warning: could not detach $d"
    done
    LL_LOOPS=()
    for d in "${LL_TMPDIRS[@]}"; do
        # never recurse into something still mounted
        if grep -qF " $d/" /proc/self/mounts 2>/dev/null; then
            ll_log "warning: leaving $d (something is still mounted below it)"
        else
            rm -rf --one-file-system "$d"
        fi
    done
    LL_TMPDIRS=()
    if [[ $rc != 0 ]]; then
        for d in "${LL_FAIL_FILES[@]}"; do
            if [[ -f $d ]]; then rm -f -- "$d"; fi
        done
    fi
    exit "$rc"
}
