#!/usr/bin/env bash
# demo-iso.sh - the whole rescue-ISO experience on one Linux machine (Debian 12, as root):
# install what is needed, build dist/ferroclone.iso, make a demo Windows-style disk, an empty
# target and a repository disk, and boot the ISO in qemu with all three attached. The VM's
# serial console is this terminal (Ctrl-A X quits qemu).
#
# Usage: sudo scripts/demo-iso.sh [extra qemu arguments]
#
# Inside the VM:  /dev/vda      the Windows-style source disk (1 GiB)
#                 /dev/sda      a repository disk (ext4, label REPO)
#                 /dev/nvme0n1  an empty 2 GiB target
# e.g. in the rescue shell:  mount /dev/sda /repo && ferroclone save /dev/vda /repo/win
#                            ferroclone restore /repo/win /dev/nvme0n1
# Files live in DEMO_DIR (default /var/tmp/ferroclone-demo-iso) and are kept between runs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
D=${DEMO_DIR:-/var/tmp/ferroclone-demo-iso}

scripts/setup.sh
scripts/build-iso.sh
mkdir -p "$D"
[[ -f $D/windows.img ]] || scripts/mkdisk.sh windows "$D/windows.img" 1024
[[ -f $D/target.img ]] || truncate -s 2G "$D/target.img"
if [[ ! -f $D/repo.img ]]; then
    truncate -s 4G "$D/repo.img"
    mkfs.ext4 -q -F -L REPO "$D/repo.img"
fi
cat >&2 <<MSG

Booting dist/ferroclone.iso (Ctrl-A X quits). Disks: /dev/vda = demo Windows disk,
/dev/sda = repository (ext4, label REPO), /dev/nvme0n1 = empty target.
Under TCG this takes about 20 s to the start screen.

MSG
exec qemu-system-x86_64 -accel "${QEMU_ACCEL:-tcg}" -cpu max -smp 2 -m 1024 -nographic -no-reboot \
    -machine pc \
    -drive "file=dist/ferroclone.iso,media=cdrom,if=none,id=cd,readonly=on" \
    -device ide-cd,drive=cd,bus=ide.1,bootindex=0 \
    -drive "file=$D/windows.img,format=raw,if=none,id=src" -device virtio-blk-pci,drive=src,serial=DEMO-SRC \
    -device ahci,id=ahci -drive "file=$D/repo.img,format=raw,if=none,id=repo" -device ide-hd,drive=repo,bus=ahci.0 \
    -drive "file=$D/target.img,format=raw,if=none,id=tgt" -device nvme,drive=tgt,serial=DEMO-TGT \
    -nic user,model=virtio-net-pci,restrict=on \
    "$@"
