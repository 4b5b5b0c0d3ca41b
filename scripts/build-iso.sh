#!/usr/bin/env bash
# build-iso.sh - build the ferroclone rescue ISO: a hybrid image that boots by BIOS (ISOLINUX)
# and UEFI (GRUB), from a CD and when written to a USB stick with dd.
#
# Usage: scripts/build-iso.sh [OUT_ISO]            (default dist/ferroclone.iso)
#
# What goes in:
#   * ferroclone, built for x86_64-unknown-linux-musl (static; checked), stripped;
#   * Debian's busybox-static (/bin/busybox of the host);
#   * a Debian kernel, fetched with `apt-get download` and unpacked with `dpkg -x` (nothing is
#     installed): by default linux-image-amd64's kernel from bookworm-backports (6.12: it has
#     ntfs3, which bookworm's 6.1 lacks), through a private apt configuration under the cache
#     directory, so the system's apt sources are not changed. If bookworm-backports cannot be
#     reached, bookworm's own kernel (6.1, no ntfs3) is used with a warning;
#   * the modules named in initramfs/modules.list with their dependencies (host kmod
#     `modprobe --show-depends` on the unpacked tree, softdeps included), decompressed, and
#     `depmod -b` on the result;
#   * initramfs/init, ferroclone-console, udhcpc.script, profile; /etc/ferroclone-release.
# The kernel .deb and its unpacked tree are cached in target/iso-cache/ (FERROCLONE_ISO_CACHE):
# once a kernel is cached it is used again (a pinned kernel, and no network needed); delete the
# cache or set FERROCLONE_KERNEL_PKG to change it.
#
# Reproducible: the same inputs and SOURCE_DATE_EPOCH (default: the last commit's time) give
# the same bytes (file times, cpio owners, FAT serial and times, ISO dates are all pinned).
#
# Environment:
#   SOURCE_DATE_EPOCH       timestamp for every file and the ISO volume dates
#   FERROCLONE_BIN          use this static binary instead of building one
#   FERROCLONE_KERNEL_PKG   kernel package to download, e.g. linux-image-6.12.95+deb12-amd64
#   FERROCLONE_KERNEL_DEB   use this kernel .deb
#   FERROCLONE_KERNEL       use this kernel image (e.g. Buildroot's bzImage) ...
#   FERROCLONE_MODULES      ... and the directory holding its lib/modules/KVER (optional: a
#                           kernel with every driver built in needs no modules)
#   FERROCLONE_SECUREBOOT   1 (default with a Debian kernel): UEFI boots through Debian's
#                           signed shim and GRUB, so Secure Boot machines boot it; 0: an
#                           unsigned GRUB built with grub-mkimage (default for FERROCLONE_KERNEL)
#   FERROCLONE_ISO_CACHE    cache directory (default target/iso-cache)
#   EFI_BOOTX64             use this EFI boot loader (e.g. Buildroot's GRUB, which must find the
#                           medium by /boot/ferroclone.id) instead of making one
#   ISOLINUX_BIN, LDLINUX_C32, ISOHDPFX, BUSYBOX   tool paths (defaults: Debian's)
# buildroot/board/ferroclone/post-image.sh calls this script with Buildroot's pieces.
set -euo pipefail
shopt -s nullglob

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${1:-dist/ferroclone.iso}
CACHE=${FERROCLONE_ISO_CACHE:-$ROOT/target/iso-cache}
ISOLINUX_BIN=${ISOLINUX_BIN:-/usr/lib/ISOLINUX/isolinux.bin}
LDLINUX_C32=${LDLINUX_C32:-/usr/lib/syslinux/modules/bios/ldlinux.c32}
ISOHDPFX=${ISOHDPFX:-/usr/lib/ISOLINUX/isohdpfx.bin}
BUSYBOX=${BUSYBOX:-/bin/busybox}
TRIPLE=x86_64-unknown-linux-musl

log() { printf 'build-iso: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
trap 'log "error: a command failed at line $LINENO"' ERR

export LC_ALL=C TZ=UTC
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
    SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH
export MTOOLS_SKIP_CHECK=1

need() { for t in "$@"; do command -v "$t" >/dev/null || die "$t not found; run scripts/setup.sh"; done; }
need xorriso mkfs.vfat mmd mcopy cpio zstd strip file
for f in "$ISOLINUX_BIN" "$LDLINUX_C32" "$ISOHDPFX" "$BUSYBOX"; do
    [[ -f $f ]] || die "$f not found; run scripts/setup.sh"
done
file -L "$BUSYBOX" | grep -Eq 'statically linked|static-pie linked' \
    || die "$BUSYBOX is not static (install busybox-static)"

mkdir -p "$CACHE" "$(dirname "$OUT")"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ferroclone-iso.XXXXXX")
trap 'rm -rf --one-file-system "$WORK"' EXIT

# ---------------------------------------------------------------- the binary
if [[ -n ${FERROCLONE_BIN:-} ]]; then
    BIN=$FERROCLONE_BIN
else
    log "cargo build --release --target $TRIPLE"
    cargo build --release --quiet --target "$TRIPLE"
    BIN=$ROOT/target/$TRIPLE/release/ferroclone
fi
file -L "$BIN" | grep -Eq 'statically linked|static-pie linked' \
    || die "$BIN is not statically linked: $(file -L "$BIN")"
VERSION=$("$BIN" --version | awk '{print $2}')
GIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)

# ---------------------------------------------------------------- the kernel
# A private apt configuration for bookworm-backports: the system's mirror, its own lists and
# archive cache under $CACHE/apt; nothing under /etc/apt changes.
apt_private() {
    local d=$CACHE/apt
    mkdir -p "$d/sources" "$d/lists/partial" "$d/cache/archives/partial"
    local uri
    # The first Debian archive URI of the system's sources (deb822 `URIs:` or one-line `deb`).
    uri=$({
        cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '$1 == "URIs:" { print $2 }'
        cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; break } }'
    } | grep -E '/debian/?$' | head -n1 || true)
    [[ -n $uri ]] || die "no Debian mirror found in /etc/apt/sources.list{,.d/*.sources}"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
        "$uri" /usr/share/keyrings/debian-archive-keyring.gpg >"$d/sources/backports.sources"
    APT_OPTS=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$d/sources"
        -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -o APT::Sandbox::User=root)
}

fetch_kernel_deb() {
    local pkg=${FERROCLONE_KERNEL_PKG:-} debs
    if [[ -z $pkg ]]; then
        debs=("$CACHE"/linux-image-*.deb)
        if ((${#debs[@]})); then
            printf '%s\n' "${debs[@]}" | sort -V | tail -n1
            return
        fi
    else
        debs=("$CACHE/${pkg}"_*.deb)
        if ((${#debs[@]})); then
            printf '%s\n' "${debs[-1]}"
            return
        fi
    fi
    apt_private
    local apt_ok=1
    apt-get "${APT_OPTS[@]}" -qq update >&2 || apt_ok=0
    if [[ -z $pkg && $apt_ok == 1 ]]; then
        pkg=$(apt-cache "${APT_OPTS[@]}" depends linux-image-amd64 2>/dev/null \
            | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    fi
    if [[ -n $pkg && $apt_ok == 1 ]] && (cd "$CACHE" && apt-get "${APT_OPTS[@]}" -qq download "$pkg" >&2); then
        :
    elif [[ -z ${FERROCLONE_KERNEL_PKG:-} ]]; then
        log "warning: bookworm-backports unreachable: falling back to bookworm's kernel (6.1, no ntfs3)"
        pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
        [[ -n $pkg ]] || die "no kernel package found (apt-get update first?)"
        (cd "$CACHE" && apt-get -o APT::Sandbox::User=root -qq download "$pkg" >&2) || die "apt-get download $pkg failed"
    else
        die "apt-get download $pkg failed"
    fi
    debs=("$CACHE/${pkg}"_*.deb)
    ((${#debs[@]})) || die "downloaded $pkg but found no .deb in $CACHE"
    printf '%s\n' "${debs[-1]}"
}

# Debian's signed shim and GRUB, downloaded once (bookworm main) and unpacked in the cache.
fetch_secureboot() {
    local d=$CACHE/secureboot p debs
    if [[ ! -f $d/.done ]]; then
        rm -rf "$d"
        mkdir -p "$d/debs"
        for p in shim-signed shim-helpers-amd64-signed grub-efi-amd64-signed; do
            debs=("$CACHE"/debs-sb/"$p"_*.deb)
            if ((${#debs[@]} == 0)); then
                mkdir -p "$CACHE/debs-sb"
                (cd "$CACHE/debs-sb" && apt-get -o APT::Sandbox::User=root -qq download "$p" >&2) \
                    || die "apt-get download $p failed (apt-get update first?)"
                debs=("$CACHE"/debs-sb/"$p"_*.deb)
            fi
            dpkg -x "${debs[-1]}" "$d/root"
            printf '%s %s\n' "$p" "$(dpkg-deb -f "${debs[-1]}" Version)" >>"$d/versions"
        done
        touch "$d/.done"
    fi
    echo "$d/root"
}

MODSRC=
if [[ -n ${FERROCLONE_KERNEL:-} ]]; then
    KERNEL=$FERROCLONE_KERNEL
    [[ -f $KERNEL ]] || die "FERROCLONE_KERNEL=$KERNEL not found"
    KDESC="custom kernel $(basename "$KERNEL")"
    # A kernel that is not Debian's is not signed: boot it through the unsigned GRUB.
    SECUREBOOT=${FERROCLONE_SECUREBOOT:-0}
    if [[ -n ${FERROCLONE_MODULES:-} ]]; then
        MODSRC=$(cd "$FERROCLONE_MODULES" && pwd)
    fi
else
    need dpkg-deb
    DEB=${FERROCLONE_KERNEL_DEB:-$(fetch_kernel_deb)}
    [[ -f $DEB ]] || die "kernel package $DEB not found"
    KPKG=$(dpkg-deb -f "$DEB" Package)
    KPKGVER=$(dpkg-deb -f "$DEB" Version)
    KROOT=$CACHE/kroot-$KPKG-$KPKGVER
    if [[ ! -f $KROOT/.done ]]; then
        log "unpacking $(basename "$DEB")"
        rm -rf "$KROOT"
        dpkg -x "$DEB" "$KROOT"
        touch "$KROOT/.done"
    fi
    MODSRC=$KROOT
    kernels=("$KROOT"/boot/vmlinuz-*)
    ((${#kernels[@]} == 1)) || die "expected one vmlinuz in $DEB"
    KERNEL=${kernels[0]}
    KDESC="$KPKG $KPKGVER (Debian)"
    SECUREBOOT=${FERROCLONE_SECUREBOOT:-1}
fi
KVER=
if [[ -n $MODSRC ]]; then
    need depmod modprobe
    kv=("$MODSRC"/lib/modules/*)
    ((${#kv[@]} == 1)) || die "expected one lib/modules/KVER in $MODSRC"
    KVER=$(basename "${kv[0]}")
    [[ -f $MODSRC/lib/modules/$KVER/modules.dep ]] || depmod -b "$MODSRC" "$KVER"
fi
log "kernel: $KDESC${KVER:+, modules $KVER}"

# ---------------------------------------------------------------- initramfs staging
STAGE=$WORK/stage
mkdir -p "$STAGE"/{bin,sbin,usr/bin,usr/sbin,usr/share/udhcpc,etc/ferroclone,proc,sys,dev,run,tmp,repo,mnt,root}
chmod 1777 "$STAGE/tmp"
chmod 0700 "$STAGE/root"

# Modules: resolve each top-level name of a section into its ordered closure.
declare -A SEEN=()
resolve_section() { # SECTION LOADFILE
    local section=$1 load=$2 cur='' line name opt out path rel names
    : >"$load"
    while IFS= read -r line; do
        line=${line%%#*}
        [[ $line =~ ^\[(.*)\]$ ]] && { cur=${BASH_REMATCH[1]}; continue; }
        [[ $cur == "$section" ]] || continue
        read -ra names <<<"$line" # no globbing: `?name` would vanish under nullglob
        for name in "${names[@]}"; do
            opt=0
            [[ $name == \?* ]] && { opt=1; name=${name#\?}; }
            if ! out=$(modprobe -d "$MODSRC" -S "$KVER" --show-depends "$name" 2>&1); then
                ((opt)) && continue
                die "module $name not found in $KVER: $out"
            fi
            while read -r kind path _; do
                [[ $kind == insmod ]] || continue
                rel=${path#"$MODSRC"/lib/modules/"$KVER"/}
                [[ $rel != "$path" ]] || die "unexpected module path $path"
                [[ -n ${SEEN[$rel]:-} ]] && continue
                SEEN[$rel]=1
                mkdir -p "$STAGE/lib/modules/$KVER/$(dirname "$rel")"
                case $rel in
                *.ko.xz) xz -dc "$path" >"$STAGE/lib/modules/$KVER/${rel%.xz}" ;;
                *.ko.zst) zstd -qdc "$path" >"$STAGE/lib/modules/$KVER/${rel%.zst}" ;;
                *.ko.gz) gzip -dc "$path" >"$STAGE/lib/modules/$KVER/${rel%.gz}" ;;
                *.ko) cp "$path" "$STAGE/lib/modules/$KVER/$rel" ;;
                *) die "unexpected module file $path" ;;
                esac
                rel=${rel##*/}
                echo "${rel%%.ko*}" >>"$load"
            done <<<"$out"
        done
    done <"$ROOT/initramfs/modules.list"
}
if [[ -n $MODSRC ]]; then
    resolve_section core "$STAGE/etc/ferroclone/modules.core"
    resolve_section net "$STAGE/etc/ferroclone/modules.net"
    for f in modules.order modules.builtin modules.builtin.modinfo; do
        [[ -f $MODSRC/lib/modules/$KVER/$f ]] && cp "$MODSRC/lib/modules/$KVER/$f" "$STAGE/lib/modules/$KVER/"
    done
    depmod -b "$STAGE" "$KVER"
    rm -f "$STAGE/lib/modules/$KVER"/*.bin
    log "modules: $(wc -l <"$STAGE/etc/ferroclone/modules.core") core + $(wc -l <"$STAGE/etc/ferroclone/modules.net") net, $(du -sh "$STAGE/lib/modules" | cut -f1) unpacked"
else
    : >"$STAGE/etc/ferroclone/modules.core"
    : >"$STAGE/etc/ferroclone/modules.net"
fi

# busybox and its applets as symlinks.
cp "$BUSYBOX" "$STAGE/bin/busybox"
while read -r applet; do
    [[ $applet == bin/busybox ]] && continue
    [[ -e $STAGE/$applet || -L $STAGE/$applet ]] && continue
    mkdir -p "$STAGE/$(dirname "$applet")"
    ln -s /bin/busybox "$STAGE/$applet"
done < <("$BUSYBOX" --list-full | sort)
[[ -L $STAGE/sbin/init ]] || ln -sf /bin/busybox "$STAGE/sbin/init"
strip -o "$STAGE/usr/bin/ferroclone" "$BIN"
install -m 0755 initramfs/init "$STAGE/init"
install -m 0755 initramfs/ferroclone-console "$STAGE/bin/ferroclone-console"
install -m 0755 initramfs/udhcpc.script "$STAGE/usr/share/udhcpc/default.script"
install -m 0644 initramfs/profile "$STAGE/etc/profile"
printf 'root::0:0:root:/root:/bin/sh\n' >"$STAGE/etc/passwd"
printf 'root:x:0:\n' >"$STAGE/etc/group"
# (sed reads all of busybox's output: `| head -n1` could kill it with SIGPIPE, and pipefail
# would then stop this script.)
BB_VER=$("$BUSYBOX" 2>/dev/null | sed -n '1s/^BusyBox \([^ ]*\).*/\1/p')
BB_DEB=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo unknown)
RELEASE=$(
    printf 'ferroclone %s (%s)\n' "$VERSION" "$GIT"
    printf 'kernel: %s\n' "$KDESC"
    printf 'busybox: %s (busybox-static %s)\n' "$BB_VER" "$BB_DEB"
    if [[ -n ${EFI_BOOTX64:-} ]]; then
        printf 'uefi: %s\n' "$(basename "$EFI_BOOTX64") (given)"
    elif [[ $SECUREBOOT == 1 ]]; then
        printf 'uefi: Secure Boot chain: %s\n' "$(tr '\n' ',' <"$(dirname "$(fetch_secureboot)")/versions" | sed 's/,$//; s/,/, /g')"
    else
        printf 'uefi: GRUB %s (grub-mkimage, unsigned)\n' "$(dpkg-query -W -f='${Version}' grub-efi-amd64-bin 2>/dev/null || echo unknown)"
    fi
    printf 'built: %s (SOURCE_DATE_EPOCH=%s)\n' "$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)" "$SOURCE_DATE_EPOCH"
)
printf '%s\n' "$RELEASE" >"$STAGE/etc/ferroclone-release"
# /dev/console for the kernel to open before devtmpfs is mounted (a distro kernel's built-in
# initramfs has one too, so a build without root still boots).
if [[ $EUID == 0 ]]; then
    mknod -m 600 "$STAGE/dev/console" c 5 1
fi

find "$STAGE" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
log "packing the initramfs (zstd -19)"
(cd "$STAGE" && find . -mindepth 1 | sort | cpio -o -H newc --owner=0:0 --reproducible --quiet) \
    | zstd -19 -q >"$WORK/initrd.img"

# ---------------------------------------------------------------- ISO tree
ISO=$WORK/iso
mkdir -p "$ISO"/{boot/grub,isolinux,etc,.disk} "$WORK/efi"
cp "$KERNEL" "$ISO/boot/vmlinuz"
cp "$WORK/initrd.img" "$ISO/boot/initrd.img"
cp "$STAGE/etc/ferroclone-release" "$ISO/etc/ferroclone-release"
printf 'ferroclone %s rescue\n' "$VERSION" >"$ISO/.disk/info"
# The EFI GRUB finds this medium by a file unique to this build.
ID=$(cat "$ISO/boot/vmlinuz" "$ISO/boot/initrd.img" | sha256sum | cut -c1-12)
MARKER=/boot/ferroclone-$ID.id
printf '%s\n' "$ID" >"$ISO$MARKER"
# ... and one with a fixed name, for EFI loaders configured in advance (Buildroot's GRUB).
printf '%s\n' "$ID" >"$ISO/boot/ferroclone.id"

ARGS="console=tty0 console=ttyS0,115200 loglevel=4"
ARGS_SCREEN="console=ttyS0,115200 console=tty0 loglevel=4"
cat >"$ISO/boot/grub/grub.cfg" <<EOF
# ferroclone rescue ($VERSION): shared by nothing else; BIOS boots through ISOLINUX.
serial --unit=0 --speed=115200
terminal_input --append serial
terminal_output --append serial
set timeout=3
set default=0
menuentry "ferroclone" {
    linux /boot/vmlinuz $ARGS
    initrd /boot/initrd.img
}
menuentry "ferroclone (the screen is the main console)" {
    linux /boot/vmlinuz $ARGS_SCREEN
    initrd /boot/initrd.img
}
menuentry "ferroclone (nomodeset)" {
    linux /boot/vmlinuz $ARGS nomodeset
    initrd /boot/initrd.img
}
menuentry "UEFI firmware settings" {
    fwsetup
}
menuentry "Reboot" {
    reboot
}
menuentry "Power off" {
    halt
}
EOF
cat >"$ISO/isolinux/isolinux.cfg" <<EOF
SERIAL 0 115200
PROMPT 1
TIMEOUT 30
DEFAULT ferroclone
SAY ferroclone $VERSION rescue: Enter boots now (or in 3 s); other entries: screen, nomodeset
LABEL ferroclone
  KERNEL /boot/vmlinuz
  INITRD /boot/initrd.img
  APPEND $ARGS
LABEL screen
  KERNEL /boot/vmlinuz
  INITRD /boot/initrd.img
  APPEND $ARGS_SCREEN
LABEL nomodeset
  KERNEL /boot/vmlinuz
  INITRD /boot/initrd.img
  APPEND $ARGS nomodeset
EOF
cp "$ISOLINUX_BIN" "$ISO/isolinux/isolinux.bin"
cp "$LDLINUX_C32" "$ISO/isolinux/ldlinux.c32"

if [[ -n ${EFI_BOOTX64:-} ]]; then
    [[ -f $EFI_BOOTX64 ]] || die "EFI_BOOTX64=$EFI_BOOTX64 not found"
    cp "$EFI_BOOTX64" "$WORK/efi/BOOTX64.EFI"
elif [[ $SECUREBOOT == 1 ]]; then
    # Secure Boot: Microsoft-signed shim -> Debian-signed GRUB (the monolithic CD image, which
    # finds the medium by /.disk/info and reads /boot/grub/grub.cfg) -> the unmodified
    # Debian-signed kernel; modules keep Debian's signatures (decompressing keeps them).
    SB=$(fetch_secureboot)
    cp "$SB/usr/lib/shim/shimx64.efi.signed" "$WORK/efi/BOOTX64.EFI"
    cp "$SB/usr/lib/shim/mmx64.efi.signed" "$WORK/efi/mmx64.efi"
    cp "$SB/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed" "$WORK/efi/grubx64.efi"
else
    # GRUB for UEFI, every module built in (no module directory on the medium).
    need grub-mkimage
    printf '%s\n' "search --no-floppy --set=root --file $MARKER" \
        'configfile ($root)/boot/grub/grub.cfg' >"$WORK/embed.cfg"
    grub-mkimage -O x86_64-efi -o "$WORK/efi/BOOTX64.EFI" -p /EFI/BOOT -c "$WORK/embed.cfg" \
        part_gpt part_msdos iso9660 fat search search_fs_file search_label configfile normal linux \
        echo test all_video efi_gop efi_uga serial terminal reboot halt efifwsetup
fi
# The ESP image for the UEFI El Torito entry and the appended partition.
# UEFI firmware boots a CD through the El Torito image and a stick through the appended ESP,
# so the EFI files live only in that FAT image.
efi_files=("$WORK"/efi/*)
efi_kib=$(du -kc "${efi_files[@]}" | tail -n1 | cut -f1)
efi_kib=$(((efi_kib + 512 + 63) / 64 * 64))
find "$ISO" "$WORK/efi" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkfs.vfat --invariant -i 46434c4e -C -n EFIBOOT "$WORK/efiboot.img" "$efi_kib" >/dev/null
mmd -i "$WORK/efiboot.img" ::/EFI ::/EFI/BOOT
mcopy -m -i "$WORK/efiboot.img" "${efi_files[@]}" ::/EFI/BOOT/
touch -d "@$SOURCE_DATE_EPOCH" "$WORK/efiboot.img"

log "xorriso"
rm -f "$OUT.tmp"
xorriso -as mkisofs -o "$OUT.tmp" -iso-level 3 -full-iso9660-filenames -joliet \
    -rational-rock -volid FERROCLONE \
    -isohybrid-mbr "$ISOHDPFX" \
    -eltorito-boot isolinux/isolinux.bin -eltorito-catalog isolinux/boot.cat \
    -no-emul-boot -boot-load-size 4 -boot-info-table \
    -eltorito-alt-boot -e --interval:appended_partition_2:all:: -no-emul-boot -isohybrid-gpt-basdat \
    -append_partition 2 C12A7328-F81F-11D2-BA4B-00A0C93EC93B "$WORK/efiboot.img" \
    "$ISO" >"$WORK/xorriso.log" 2>&1 || { cat "$WORK/xorriso.log" >&2; die "xorriso failed"; }
mv "$OUT.tmp" "$OUT"
size=$(stat -c %s "$OUT")
log "$OUT: $((size / 1024 / 1024)) MiB ($size bytes), initramfs $(($(stat -c %s "$WORK/initrd.img") / 1024)) KiB, sha256 $(sha256sum "$OUT" | cut -c1-16)"
((size <= 64 * 1024 * 1024)) || die "the ISO is larger than 64 MiB"
