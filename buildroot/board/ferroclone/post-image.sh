#!/bin/sh
# Buildroot post-image script: the ferroclone ISO from Buildroot's kernel (every driver built
# in), static busybox and ferroclone, made by the same scripts/build-iso.sh as the Debian-based
# ISO: ISOLINUX for BIOS, Buildroot's GRUB for UEFI (no Secure Boot: the kernel is not signed).
set -eu
BOARD_DIR=$(cd "$(dirname "$0")" && pwd)
EXT=${BR2_EXTERNAL_FERROCLONE_PATH:-$BOARD_DIR/../..}
TOP=$(cd "$EXT/.." && pwd)

export PATH="$HOST_DIR/bin:$HOST_DIR/sbin:$PATH"
export FERROCLONE_KERNEL="$BINARIES_DIR/bzImage"
export FERROCLONE_BIN="$TARGET_DIR/usr/bin/ferroclone"
export BUSYBOX="$TARGET_DIR/bin/busybox"
if [ -d "$TARGET_DIR/lib/modules" ]; then
    export FERROCLONE_MODULES="$TARGET_DIR"
fi
export ISOLINUX_BIN="$BINARIES_DIR/syslinux/isolinux.bin"
export LDLINUX_C32="$HOST_DIR/share/syslinux/ldlinux.c32"
export ISOHDPFX="$HOST_DIR/share/syslinux/isohdpfx.bin"
export EFI_BOOTX64="$BINARIES_DIR/efi-part/EFI/BOOT/bootx64.efi"
export FERROCLONE_ISO_CACHE="$BUILD_DIR/ferroclone-iso-cache"
exec "$TOP/scripts/build-iso.sh" "$BINARIES_DIR/ferroclone.iso"
