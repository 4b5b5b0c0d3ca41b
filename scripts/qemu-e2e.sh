#!/usr/bin/env bash
# qemu-e2e.sh - end-to-end test of the rescue ISO in qemu (DESIGN §9 tier 4).
#
# Usage: scripts/qemu-e2e.sh [-i ISO] [-s SOURCE_DISK] [-w WORKDIR] [-t SECONDS] [-k]
#   -i  the ISO (default dist/ferroclone.iso; build it with scripts/build-iso.sh)
#   -s  a raw source disk file (default: scripts/mkdisk.sh windows WORKDIR/source.img 256)
#   -w  work directory (default: a new /var/tmp/ferroclone-e2e.XXXXXX, removed on success
#       unless -k)
#   -t  time limit for each boot (default 180 s); a hung VM is killed and the test fails
#   -k  keep the work directory
#
# Every disk is a file of this test's own (the source is attached read-only); inside the VMs
# /dev/vda, /dev/sda and /dev/nvme0n1 are those files, never this machine's disks. The unchanged
# ISO gets its ferroclone.* keys through the qemu fw_cfg file opt/org.ferroclone/cmdline.
#
# Two lanes of VMs run side by side (one vCPU each: faster than one lane with two on 2 cores):
#   lane A  1. BIOS, ISO as CD: ferroclone.repo=LABEL=REPO (ext4 on AHCI)
#              ferroclone.run="save /dev/vda /repo/win" ferroclone.after=poweroff
#           2. UEFI (OVMF), ISO as a USB stick (= dd): ferroclone.run="restore /repo/win
#              /dev/nvme0n1" onto an empty NVMe disk, ferroclone.after=poweroff
#           6. BIOS, ISO as a USB stick, an SMB repository: qemu's own smbd (smb= of the
#              restricted user-mode network) shares a work directory as //10.0.2.4/qemu;
#              ferroclone.repo=smb://10.0.2.4/qemu ferroclone.run="save /dev/vda /repo/win"
#   lane B  3. UEFI with Secure Boot enforced (OVMF with Microsoft's keys), ISO as CD, no keys:
#              /init reports Secure Boot on, and the wizard's start screen ("What do you want
#              to do?") appears on the serial console
#           4. the ISO's kernel and initrd booted directly (-kernel/-initrd/-append), a job that
#              must fail: "FERROCLONE-RESULT: failed: ..." and a power-off
#           5. the same, with an NFS repository: nfs-ganesha (userspace, NFSv4) serves a
#              directory of the work dir on 127.0.0.1; the VM's user-mode network is
#              restricted (nothing leaves this machine) and forwards 10.0.2.100:2049 to it;
#              ferroclone.repo=nfs://10.0.2.100/export ferroclone.run="save /dev/vda /repo/win"
#              (DHCP comes up by itself for a network repository)
# Then on the host: `ferroclone verify --against` the source of the image copied out of the
# repository (debugfs rdump, no mount) and of the ones saved over NFS and SMB, and
# scripts/disk-manifest.sh of source and restored target must be equal.
#
# Environment: QEMU_ACCEL (default tcg; KVM hangs on some machines, so it is never chosen by
# itself), OVMF_CODE / OVMF_VARS (default Debian's 4M images), FERROCLONE (host binary, default
# target/release/ferroclone, built when missing).
# shellcheck disable=SC2054  # qemu's options are comma-separated inside one argument
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ISO=$ROOT/dist/ferroclone.iso
SOURCE=
WORK=
TIMEOUT=180
KEEP=0
while getopts "i:s:w:t:k" o; do
    case $o in
    i) ISO=$OPTARG ;;
    s) SOURCE=$OPTARG ;;
    w) WORK=$OPTARG ;;
    t) TIMEOUT=$OPTARG ;;
    k) KEEP=1 ;;
    *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
ACCEL=${QEMU_ACCEL:-tcg}
OVMF_CODE=${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE_4M.fd}
OVMF_VARS=${OVMF_VARS:-/usr/share/OVMF/OVMF_VARS_4M.fd}
OVMF_CODE_SB=${OVMF_CODE_SB:-/usr/share/OVMF/OVMF_CODE_4M.secboot.fd}
OVMF_VARS_MS=${OVMF_VARS_MS:-/usr/share/OVMF/OVMF_VARS_4M.ms.fd}
FC=${FERROCLONE:-$ROOT/target/release/ferroclone}

log() { printf 'qemu-e2e: %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

[[ $EUID == 0 ]] || die "run as root (disk-manifest.sh reads NTFS through loop devices)"
[[ -f $ISO ]] || die "$ISO not found; run scripts/build-iso.sh"
for t in qemu-system-x86_64 xorriso mkfs.ext4 debugfs ganesha.nfsd ss smbd; do
    command -v "$t" >/dev/null || die "$t not found; run scripts/setup.sh"
done
for f in "$OVMF_CODE" "$OVMF_VARS" "$OVMF_CODE_SB" "$OVMF_VARS_MS"; do [[ -f $f ]] || die "$f not found (package ovmf)"; done
if [[ ! -x $FC ]]; then
    (cd "$ROOT" && cargo build --release --quiet)
fi

if [[ -z $WORK ]]; then
    WORK=$(mktemp -d /var/tmp/ferroclone-e2e.XXXXXX)
else
    mkdir -p "$WORK"
fi
PIDS=()
cleanup() {
    local rc=$? p
    for p in "${PIDS[@]}" ${NFS_PID:-}; do kill "$p" 2>/dev/null || true; done
    if ((rc == 0 && KEEP == 0)); then
        rm -rf --one-file-system "$WORK"
    else
        log "work directory kept: $WORK (serial logs: $WORK/*.log)"
    fi
}
trap cleanup EXIT
T0=$(date +%s)

if [[ -z $SOURCE ]]; then
    SOURCE=$WORK/source.img
    "$ROOT/scripts/mkdisk.sh" windows "$SOURCE" 256
fi
[[ -f $SOURCE ]] || die "$SOURCE is not a file"
truncate -s 512M "$WORK/repo.img"
mkfs.ext4 -q -F -L REPO "$WORK/repo.img"
truncate -s "$(stat -c %s "$SOURCE")" "$WORK/target.img"
xorriso -osirrox on -indev "$ISO" -extract /boot/vmlinuz "$WORK/vmlinuz" \
    -extract /boot/initrd.img "$WORK/initrd.img" >/dev/null 2>&1 \
    || die "cannot extract the kernel and initrd from $ISO"
cp "$OVMF_VARS" "$WORK/vars-2.fd"
cp "$OVMF_VARS_MS" "$WORK/vars-3.fd"

# vm NAME MODE -- QEMU_ARGS...    MODE: job (FERROCLONE-RESULT: ok, then power-off),
#   fail (FERROCLONE-RESULT: failed, then power-off), interactive (the start screen).
# Prints the seconds from qemu start to the pass condition. VM_EXPECT, when set, is a pattern
# the serial log must also hold.
vm() {
    local name=$1 mode=$2 logf=$WORK/$1.log t0 pid rc elapsed
    shift 3
    : >"$logf"
    t0=$(date +%s.%N)
    qemu-system-x86_64 -accel "$ACCEL" -cpu max -smp 1 -m 1024 -display none -monitor none \
        -no-reboot -serial "file:$logf" "$@" >"$WORK/$name.qemu" 2>&1 &
    pid=$!
    while :; do
        elapsed=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
        if grep -aqE 'Kernel panic|Failed to boot both|No bootable device|not a bootable disk|BdsDxe: failed to load|Boot Failed' "$logf"; then
            kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
            log "$name: boot failure after $elapsed s: $(grep -aoE 'Kernel panic.*|Failed to boot.*|No bootable.*|not a bootable.*|BdsDxe: failed.*|Boot Failed.*' "$logf" | head -n1)"
            return 1
        fi
        case $mode in
        job)
            if grep -aq 'FERROCLONE-RESULT: failed' "$logf"; then
                kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
                log "$name: $(grep -ao 'FERROCLONE-RESULT: failed.*' "$logf" | head -n1)"
                return 1
            fi
            ;;
        interactive)
            if grep -aq '=== ferroclone rescue environment' "$logf" && grep -aq 'What do you want to do?' "$logf"; then
                kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
                if [[ -n ${VM_EXPECT:-} ]] && ! grep -aq -- "$VM_EXPECT" "$logf"; then
                    log "$name: no '$VM_EXPECT' in the serial log"
                    return 1
                fi
                echo "$elapsed"
                return 0
            fi
            ;;
        esac
        if ! kill -0 "$pid" 2>/dev/null; then
            rc=0
            wait "$pid" || rc=$?
            if ((rc != 0)); then
                log "$name: qemu exited with $rc: $(tail -n3 "$WORK/$name.qemu")"
                return 1
            fi
            case $mode in
            job) grep -aq 'FERROCLONE-RESULT: ok' "$logf" || { log "$name: powered off without FERROCLONE-RESULT: ok"; return 1; } ;;
            fail) grep -aq 'FERROCLONE-RESULT: failed: ' "$logf" || { log "$name: powered off without FERROCLONE-RESULT: failed"; return 1; } ;;
            interactive) log "$name: qemu exited before the start screen"; return 1 ;;
            esac
            if [[ -n ${VM_EXPECT:-} ]] && ! grep -aq -- "$VM_EXPECT" "$logf"; then
                log "$name: no '$VM_EXPECT' in the serial log"
                return 1
            fi
            echo "$elapsed"
            return 0
        fi
        if awk -v e="$elapsed" -v t="$TIMEOUT" 'BEGIN { exit !(e > t) }'; then
            kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
            log "$name: timed out after $TIMEOUT s; last lines:"
            grep -a . "$logf" | tail -n 8 | sed 's/^/    /' >&2
            return 124
        fi
        sleep 0.5
    done
}

# An NFSv4 server on 127.0.0.1 (our own process), exporting $WORK/nfs/export as /export.
start_nfs() {
    local d=$WORK/nfs _
    mkdir -p "$d/export" "$d/recovery"
    for _ in $(seq 20); do
        NFS_PORT=$((20000 + RANDOM % 20000))
        ss -ltn | grep -q ":$NFS_PORT " || break
    done
    cat >"$d/ganesha.conf" <<EOF
NFS_CORE_PARAM { Protocols = 4; NFS_Port = $NFS_PORT; Bind_addr = 127.0.0.1; Enable_NLM = false; Enable_RQUOTA = false; }
NFSV4 { Graceless = true; RecoveryRoot = $d/recovery; }
EXPORT { Export_Id = 1; Path = $d/export; Pseudo = /export; Access_Type = RW; Squash = No_Root_Squash;
         SecType = sys; Protocols = 4; Transports = TCP; FSAL { Name = VFS; } }
LOG { Default_Log_Level = EVENT; }
EOF
    ganesha.nfsd -F -L "$d/ganesha.log" -f "$d/ganesha.conf" -p "$d/ganesha.pid" -N NIV_EVENT &
    NFS_PID=$!
    for _ in $(seq 40); do
        grep -q 'NFS SERVER INITIALIZED' "$d/ganesha.log" 2>/dev/null && return 0
        kill -0 "$NFS_PID" 2>/dev/null || break
        sleep 0.5
    done
    tail -n 5 "$d/ganesha.log" >&2
    die "nfs-ganesha did not start"
}

keys() { # NAME TEXT: a fw_cfg argument with the text in a file (no escaping of commas)
    printf '%s\n' "$2" >"$WORK/$1.keys"
    echo "name=opt/org.ferroclone/cmdline,file=$WORK/$1.keys"
}
BIOS=(-machine pc)
NONET=(-nic none)
UEFI=(-machine q35 -drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE")
CD_BIOS=(-drive "file=$ISO,media=cdrom,if=none,id=cd,readonly=on" -device ide-cd,drive=cd,bus=ide.1,bootindex=0)
CD_Q35=(-drive "file=$ISO,media=cdrom,if=none,id=cd,readonly=on" -device ide-cd,drive=cd,bootindex=0)
STICK=(-device qemu-xhci,id=xhci -drive "file=$ISO,format=raw,if=none,id=stick,readonly=on"
    -device usb-storage,bus=xhci.0,drive=stick,bootindex=0)
SRC=(-drive "file=$SOURCE,format=raw,if=none,id=src,readonly=on" -device virtio-blk-pci,drive=src,serial=SRC)
REPO=(-device ahci,id=ahci -drive "file=$WORK/repo.img,format=raw,if=none,id=repo"
    -device ide-hd,drive=repo,bus=ahci.0)
TGT=(-drive "file=$WORK/target.img,format=raw,if=none,id=tgt" -device nvme,drive=tgt,serial=TGT)

lane_a() {
    local s
    s=$(vm 1-save-bios-cd job -- "${NONET[@]}" "${BIOS[@]}" "${CD_BIOS[@]}" "${SRC[@]}" "${REPO[@]}" \
        -fw_cfg "$(keys 1 'ferroclone.repo=LABEL=REPO ferroclone.run="save /dev/vda /repo/win" ferroclone.after=poweroff')") || return 1
    log "1-save-bios-cd: ok in $s s"
    s=$(vm 2-restore-uefi-usb job -- "${NONET[@]}" "${UEFI[@]}" -drive "if=pflash,format=raw,unit=1,file=$WORK/vars-2.fd" \
        "${STICK[@]}" "${REPO[@]}" "${TGT[@]}" \
        -fw_cfg "$(keys 2 'ferroclone.repo=LABEL=REPO ferroclone.run="restore /repo/win /dev/nvme0n1" ferroclone.after=poweroff')") || return 1
    log "2-restore-uefi-usb: ok in $s s"
    mkdir -p "$WORK/smb"
    s=$(vm 6-save-smb-bios-usb job -- "${BIOS[@]}" "${STICK[@]}" "${SRC[@]}" \
        -nic "user,model=virtio-net-pci,restrict=on,smb=$WORK/smb" \
        -fw_cfg "$(keys 6 'ferroclone.repo=smb://10.0.2.4/qemu ferroclone.run="save /dev/vda /repo/win" ferroclone.after=poweroff')") || return 1
    log "6-save-smb-bios-usb: ok in $s s"
}
lane_b() {
    local s
    s=$(VM_EXPECT='UEFI Secure Boot is on' vm 3-start-uefi-sb-cd interactive -- \
        -machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on \
        -drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE_SB" \
        -drive "if=pflash,format=raw,unit=1,file=$WORK/vars-3.fd" "${CD_Q35[@]}") || return 1
    log "3-start-uefi-sb-cd: Secure Boot on, start screen on the serial console after $s s"
    s=$(vm 4-fail-direct fail -- "${NONET[@]}" "${BIOS[@]}" -kernel "$WORK/vmlinuz" -initrd "$WORK/initrd.img" \
        -append 'console=ttyS0,115200 loglevel=4 ferroclone.run="info /repo/none" ferroclone.after=poweroff') || return 1
    log "4-fail-direct: failure reported in $s s: $(grep -ao 'FERROCLONE-RESULT: failed.*' "$WORK/4-fail-direct.log" | head -n1 | tr -d '\r')"
    s=$(vm 5-save-nfs job -- "${BIOS[@]}" -kernel "$WORK/vmlinuz" -initrd "$WORK/initrd.img" "${SRC[@]}" \
        -nic "user,model=virtio-net-pci,restrict=on,guestfwd=tcp:10.0.2.100:2049-tcp:127.0.0.1:$NFS_PORT" \
        -append 'console=ttyS0,115200 loglevel=4 ferroclone.repo=nfs://10.0.2.100/export ferroclone.run="save /dev/vda /repo/win" ferroclone.after=poweroff') || return 1
    log "5-save-nfs: ok in $s s"
}

start_nfs
log "booting (accel $ACCEL, $TIMEOUT s per boot); serial logs in $WORK"
lane_a &
PIDS+=($!)
lane_b &
PIDS+=($!)
ra=0 rb=0
wait "${PIDS[0]}" || ra=$?
wait "${PIDS[1]}" || rb=$?
PIDS=()
((ra == 0)) || die "lane A (save, restore, SMB) failed"
((rb == 0)) || die "lane B (start screen, failure report, NFS) failed"

log "checking on the host"
mkdir -p "$WORK/out"
debugfs -R "rdump /win $WORK/out" "$WORK/repo.img" >/dev/null 2>&1
[[ -d $WORK/out/win ]] || die "no image /win in the repository"
"$FC" --quiet verify "$WORK/out/win" --against "$SOURCE" >&2 || die "ferroclone verify failed"
[[ -d $WORK/nfs/export/win ]] || die "no image win in the NFS export"
"$FC" --quiet verify "$WORK/nfs/export/win" --against "$SOURCE" >&2 || die "ferroclone verify of the NFS image failed"
[[ -d $WORK/smb/win ]] || die "no image win in the SMB share"
"$FC" --quiet verify "$WORK/smb/win" --against "$SOURCE" >&2 || die "ferroclone verify of the SMB image failed"
"$ROOT/scripts/disk-manifest.sh" "$SOURCE" "$WORK/source.manifest"
"$ROOT/scripts/disk-manifest.sh" "$WORK/target.img" "$WORK/target.manifest"
if ! diff -u "$WORK/source.manifest" "$WORK/target.manifest" >"$WORK/manifest.diff"; then
    head -n 40 "$WORK/manifest.diff" >&2
    die "the restored disk differs from the source"
fi
log "ok: save (local, NFS, SMB), restore, Secure Boot start screen and failure report; source and restored disk equal ($(($(date +%s) - T0)) s)"
