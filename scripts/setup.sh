#!/usr/bin/env bash
# setup.sh - install what building and testing ferroclone needs (Debian 12, as root).
# Idempotent: packages already present are not downloaded again.
set -euo pipefail

PACKAGES=(
    build-essential musl-tools file          # the static musl binary and its check
    gdisk fdisk util-linux parted            # sgdisk, sfdisk, losetup, blkid; parted for Clonezilla fixtures
    e2fsprogs dosfstools mtools ntfs-3g      # mkfs + fill + fsck of ext, FAT, NTFS
    exfatprogs exfat-fuse xfsprogs btrfs-progs
    partclone                                # cross-check of used-block counts; Clonezilla test images
    zstd lz4 xz-utils bzip2 gzip             # fixture data, peers, Clonezilla test images
    openssl python3
    tmux                                     # the TUI end-to-end test
    python3-fusepy fuse3                     # the failing-disk FUSE server of the fault tests
    # the rescue ISO (scripts/build-iso.sh) and its qemu end-to-end test (scripts/qemu-e2e.sh).
    # The kernel is not installed: build-iso.sh fetches Debian's bookworm-backports kernel .deb
    # with `apt-get download` through its own apt configuration under target/iso-cache (the
    # system's apt sources are not changed) and unpacks it with dpkg -x.
    busybox-static cpio kmod xz-utils debian-archive-keyring
    xorriso isolinux syslinux-common grub-common grub-efi-amd64-bin
    qemu-system-x86 ovmf
    nfs-ganesha nfs-ganesha-vfs iproute2      # a userspace NFS server for the NFS repository boot
    samba                                    # smbd, which qemu's smb= runs for the SMB boot
)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found; install Rust with rustup first" >&2
    exit 1
fi
if command -v rustup >/dev/null; then
    rustup target list --installed | grep -q x86_64-unknown-linux-musl \
        || rustup target add x86_64-unknown-linux-musl >&2
    for c in clippy rustfmt; do
        rustup component list --installed | grep -q "^$c" || rustup component add "$c" >&2
    done
fi
# FUSE (ntfs-3g, exfat-fuse) needs /dev/fuse.
[[ -e /dev/fuse ]] || modprobe fuse 2>/dev/null || true
echo "setup: ok" >&2
