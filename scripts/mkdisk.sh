#!/usr/bin/env bash
# mkdisk.sh - build deterministic test/demo disk images for ferroclone.
#
# Usage: scripts/mkdisk.sh KIND OUT_FILE [SIZE_MIB]
#
# KIND (default size in MiB):
#   windows    (1024)  GPT/512: ESP FAT32, MSR, NTFS C:, NTFS WinRE
#   legacy     (512)   MBR: boot code + post-MBR gap, p1 ext4 (boot),
#                      p2 extended { p5 ext4, p6 swap }
#   gpt4k      (512)   GPT with 4096-byte logical sectors: ESP, ext4.  The ESP
#                      is FAT32 (260 MiB) from 400 MiB up, else FAT16 (64 MiB):
#                      with 4096-byte sectors a FAT32 needs >= 65525 clusters
#                      = 256 MiB (and mtools cannot write a smaller one)
#   bare-ext4  (128)   no partition table, ext4 on the whole file
#   mbr-simple (256)   MBR: p1 FAT16 (boot), p2 ext4
#
# Layout (MiB, all partitions 1 MiB aligned; sizes scale with SIZE_MIB):
#   windows 1024: p1 1+100 ESP "SYSTEM" | p2 101+16 MSR (zero) |
#                 p3 117+856 NTFS "Windows" | p4 973+50 NTFS "Recovery" (2700,
#                 attrs 0x8000000000000001) | 1 MiB free + backup GPT
#           256:  p1 1+40 | p2 41+16 | p3 57+168 | p4 225+30
#   legacy 512:   p1 1+200 ext4 "root" (boot flag) | p2 201..end extended:
#                 p5 202+200 ext4 "home" | p6 403+64 swap "swap"
#   gpt4k 512:    p1 1+260 FAT32 "ESP" | p2 261+250 ext4 "rootfs"
#           256:  p1 1+64 FAT16 "ESP" | p2 65+190 ext4 "rootfs"
#   bare-ext4:    ext4 "bare" at byte 0
#   mbr-simple:   p1 1+100 FAT16 "DOS" (type 06, boot flag) | p2 101..end-1 ext4
#
# Runs as root and never touches a real disk: every filesystem is built in
# its own temporary regular file and spliced into OUT_FILE (a sparse regular
# file) at the partition's byte offset.  Loop devices are used only on the
# temporary files (NTFS is filled through a loop device + ntfs-3g) and, for
# gpt4k, on OUT_FILE (sgdisk needs a 4096-byte sector device); they are made
# with `losetup -f --show` and detached, like every mount, by the EXIT trap.
#
# Content, names, sizes, UUIDs, labels, GUIDs, serials and timestamps are
# pinned: two runs produce the same bytes (checked for legacy, gpt4k,
# bare-ext4, mbr-simple), except inside the NTFS volumes, where mkntfs and
# ntfs-3g store the wall clock time (and mkntfs random GUIDs); there the file
# content, names, cluster allocation and the volume serial are still the same.
# Free space holds stale data (seeded random bytes left under the filesystem
# by mkfs, plus a deleted file on NTFS C:), so an imager that copies only used
# blocks produces a different image that still has an identical manifest
# (scripts/disk-manifest.sh).
#
# Environment: TMPDIR (work space; needs about SIZE_MIB of free space),
#              LL_VERBOSE=1 (show tool output).  Needs python3 (content
#              generator, random.Random(seed)) besides the filesystem tools.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib-loop.sh
. "$SCRIPT_DIR/lib-loop.sh"

export LC_ALL=C TZ=UTC
export SOURCE_DATE_EPOCH=1600000000        # mtools honours it
export E2FSPROGS_FAKE_TIME=1600000000      # mke2fs / debugfs superblock times
export MTOOLS_SKIP_CHECK=1
EPOCH=1600000000
MIB=$((1024 * 1024))

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
    exit 2
}

[[ $# -ge 2 && $# -le 3 ]] || usage
KIND=$1
OUT=$2
SIZE_ARG=${3:-}

case $KIND in
    windows) DEF_SIZE=1024 MIN_SIZE=160 ;;
    legacy) DEF_SIZE=512 MIN_SIZE=128 ;;
    gpt4k) DEF_SIZE=512 MIN_SIZE=128 ;;
    bare-ext4) DEF_SIZE=128 MIN_SIZE=32 ;;
    mbr-simple) DEF_SIZE=256 MIN_SIZE=96 ;;
    -h | --help) usage ;;
    *) ll_log "unknown KIND '$KIND'"; usage ;;
esac
SIZE_MIB=${SIZE_ARG:-$DEF_SIZE}
[[ $SIZE_MIB =~ ^[0-9]+$ ]] || ll_die "SIZE_MIB must be an integer (MiB)"
((SIZE_MIB >= MIN_SIZE)) || ll_die "$KIND needs at least $MIN_SIZE MiB"
((SIZE_MIB <= 65536)) || ll_die "SIZE_MIB too large"

[[ $EUID == 0 ]] || ll_die "must run as root"
case $OUT in
    /dev/* | /proc/* | /sys/*) ll_die "refusing to write to $OUT" ;;
esac
if [[ -e $OUT && ! -f $OUT ]]; then
    ll_die "$OUT exists and is not a regular file"
fi
OUT_DIR=$(cd "$(dirname "$OUT")" && pwd) || ll_die "no such directory: $(dirname "$OUT")"
OUT=$OUT_DIR/$(basename "$OUT")

for t in sgdisk sfdisk mkfs.vfat mcopy mmd mkntfs ntfs-3g ntfscp mkfs.ext4 debugfs mkswap losetup dd truncate; do
    command -v "$t" >/dev/null || ll_die "missing tool: $t"
done
if [[ -x /usr/bin/python3 ]]; then PY=/usr/bin/python3; else PY=$(command -v python3) || ll_die "missing python3"; fi

ll_init
ll_tmpdir T
DISK=$OUT.partial.$$
LL_FAIL_FILES+=("$DISK")
rm -f -- "$DISK"
truncate -s $((SIZE_MIB * MIB)) "$DISK"

# pin the ext4 feature set (Debian 12 defaults) whatever /etc/mke2fs.conf says
cat >"$T/mke2fs.conf" <<'EOF2'
[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
	small = {
		blocksize = 1024
		inode_ratio = 4096
	}
	floppy = {
		blocksize = 1024
		inode_ratio = 8192
	}
EOF2
export MKE2FS_CONFIG=$T/mke2fs.conf

# ---------------------------------------------------------------- helpers --

# run a command quietly; show its output only if it fails
q() {
    local log=$T/cmd.log
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        ll_die "command failed: $*"
    fi
    if [[ $LL_VERBOSE == 1 ]]; then cat "$log" >&2; fi
}

# random bytes: rand SEED NBYTES FILE [OFFSET]  (writes in place at OFFSET)
rand() { "$PY" "$T/gen.py" rand "$@"; }

# gen_tree PROFILE SEED DEST BUDGET_BYTES [BIG_DIR BIG_MIN] -> prints big files
gen_tree() { "$PY" "$T/gen.py" tree "$@"; }

# splice IMG OFFSET_BYTES: copy a filesystem image into the disk file
splice() {
    local img=$1 off=$2
    dd if="$img" of="$DISK" bs=1M seek="$off" oflag=seek_bytes conv=notrunc,sparse status=none
    rm -f -- "$img"
}

# mk_ext4 IMG BYTES LABEL UUID PROFILE SEED BUDGET STALE(0|1) [BLOCKSIZE]
# Stale data: before mke2fs (with nodiscard) the middle of the image is
# filled with seeded random bytes, which mke2fs leaves in place in the free
# blocks - the same thing a deleted file leaves behind, without mounting.
mk_ext4() {
    local img=$1 bytes=$2 label=$3 uuid=$4 prof=$5 seed=$6 budget=$7 stale=$8 bs=${9:-4096}
    local stage=$T/stage-$label
    rm -f -- "$img"
    truncate -s "$bytes" "$img"
    if [[ $stale == 1 ]]; then
        local s0=$((bytes / 2 / MIB * MIB)) len=$((bytes * 35 / 100 / MIB * MIB))
        rand $((seed + 7777)) "$len" "$img" "$s0"
    fi
    gen_tree "$prof" "$seed" "$stage" "$budget" >/dev/null
    q mkfs.ext4 -F -t ext4 -b "$bs" -L "$label" -U "$uuid" \
        -E "root_owner=0:0,hash_seed=$uuid,nodiscard,lazy_itable_init=0,lazy_journal_init=0" \
        -d "$stage" "$img"
    # mke2fs -d copies ctime from the staging inodes (ctime cannot be set
    # from userspace): pin it with debugfs.
    {
        printf 'sif / ctime @%s\n' "$EPOCH"
        printf 'sif /lost+found ctime @%s\n' "$EPOCH"
        (cd "$stage" && find . -mindepth 1 | sort | sed 's|^\.||') |
            while IFS= read -r p; do printf 'sif "%s" ctime @%s\n' "$p" "$EPOCH"; done
    } >"$T/debugfs.cmd"
    q debugfs -w -f "$T/debugfs.cmd" "$img"
    # debugfs exits 0 even when a command fails: look at its output
    if grep -v -e '^debugfs' "$T/cmd.log" | grep -q .; then
        cat "$T/cmd.log" >&2
        ll_die "debugfs could not pin ctimes in $img"
    fi
    rm -rf -- "$stage"
}

# mk_fat IMG BYTES FATBITS LABEL VOLID HIDDEN_SECTORS SECTOR_SIZE PROFILE SEED BUDGET [SECTORS_PER_CLUSTER]
mk_fat() {
    local img=$1 bytes=$2 bits=$3 label=$4 volid=$5 hidden=$6 ss=$7 prof=$8 seed=$9 budget=${10} spc=${11:-}
    local stage=$T/stage-$label d
    rm -f -- "$img"
    truncate -s "$bytes" "$img"
    q mkfs.vfat -F "$bits" -S "$ss" ${spc:+-s "$spc"} --invariant -i "$volid" -n "$label" -h "$hidden" "$img"
    gen_tree "$prof" "$seed" "$stage" "$budget" >/dev/null
    # copy directory by directory in sorted order, so that the FAT directory
    # entry order does not depend on the host's readdir order
    while IFS= read -r d; do
        if [[ $d != . ]]; then q mmd -i "$img" "::/${d#./}"; fi
        local -a files=()
        mapfile -t files < <(cd "$stage/$d" && find . -mindepth 1 -maxdepth 1 -type f | sort)
        if ((${#files[@]})); then
            (cd "$stage/$d" && q mcopy -m -i "$img" "${files[@]}" "::${d#.}/")
        fi
    done < <(cd "$stage" && find . -type d | sort)
    rm -rf -- "$stage"
}

# mk_ntfs IMG BYTES LABEL HIDDEN_SECTORS SERIAL_HEX PROFILE SEED BUDGET STALE(0|1)
# Stale data: (1) like mk_ext4, the image is pre-filled with seeded random
# bytes in [40%, 90%) before `mkntfs -Q` (which does not clear the volume);
# (2) a real file is written and deleted before the content is copied.
mk_ntfs() {
    local img=$1 bytes=$2 label=$3 hidden=$4 serial=$5 prof=$6 seed=$7 budget=$8 stale=$9
    local stage=$T/stage-$label big=$T/big-$label mnt=$T/mnt-$label f loop
    rm -f -- "$img"
    truncate -s "$bytes" "$img"
    if [[ $stale == 1 ]]; then
        local s0=$((bytes * 40 / 100 / MIB * MIB)) len=$((bytes * 50 / 100 / MIB * MIB))
        rand $((seed + 7777)) "$len" "$img" "$s0"
    fi
    q mkntfs -Q -F -q -s 512 -c 4096 -H 255 -S 63 -p "$hidden" -L "$label" "$img"
    local -a bigfiles=()
    gen_tree "$prof" "$seed" "$stage" "$budget" "$big" $((1024 * 1024)) >"$T/bigfiles-$label"
    mapfile -t bigfiles <"$T/bigfiles-$label"
    if [[ $stale == 1 ]]; then
        local del=$((bytes * 5 / 100))
        ((del <= 32 * MIB)) || del=$((32 * MIB))
        rand $((seed + 9999)) "$del" "$T/stale.bin"
        q ntfscp "$img" "$T/stale.bin" "/pagefile.tmp"
        rm -f -- "$T/stale.bin"
    fi
    # directories and small files through the FUSE driver.  It is mounted
    # from a loop device (fuseblk) rather than from the file: for fuseblk the
    # kernel sends release synchronously, so ntfs-3g sees the same sequence
    # of operations on every run and allocates the same clusters.
    mkdir -p "$mnt"
    ll_loop_attach loop "$img"
    ll_loop_check "$loop" "$img"
    ll_ntfs_mount "$loop" "$mnt" big_writes
    rm -f -- "$mnt/pagefile.tmp"
    "$PY" "$T/gen.py" copy "$stage" "$mnt"
    ll_umount "$mnt"
    ll_loop_detach "$loop"
    # big files with ntfscp (much faster than FUSE)
    for f in "${bigfiles[@]}"; do
        q ntfscp "$img" "$big/$f" "/$f"
    done
    rm -rf -- "$stage" "$big"
    ntfs_pin_serial "$img" "$serial"
}

# ntfs_pin_serial IMG HEX16: set the volume serial number (boot sector offset
# 0x48, little endian) in the boot sector and in its backup (last sector).
ntfs_pin_serial() {
    local img=$1 hex=$2 bytes last
    bytes=$(stat -c %s "$img")
    "$PY" - "$img" "$hex" <<'PYEOF'
import struct, sys
img, hexv = sys.argv[1], sys.argv[2]
serial = struct.pack("<Q", int(hexv, 16))
with open(img, "r+b") as f:
    f.seek(0, 2)
    size = f.tell()
    done = 0
    for off in (0, size - 512):
        f.seek(off)
        bs = f.read(512)
        if bs[3:11] == b"NTFS    " and bs[510:512] == b"\x55\xaa":
            f.seek(off + 0x48)
            f.write(serial)
            done += 1
    if done == 0:
        sys.exit("no NTFS boot sector found")
PYEOF
}

# mk_swap IMG BYTES LABEL UUID
mk_swap() {
    rm -f -- "$1"
    truncate -s "$2" "$1"
    chmod 600 "$1"
    q mkswap -L "$3" -U "$4" "$1"
}

# write_bootcode FILE: recognisable non-zero boot code in bytes 0..440 of
# sector 0 (keeps the disk signature, partition table and 55AA).
write_bootcode() {
    "$PY" - "$1" "$2" <<'PYEOF'
import sys
path, tag = sys.argv[1], sys.argv[2]
code = b"\xfa\x33\xc0\x8e\xd0\xbc\x00\x7c"  # cli; xor ax,ax; mov ss,ax; mov sp,7c00
msg = ("FERROCLONE TEST BOOT CODE [%s] " % tag).encode()
code += (msg * 20)[: 440 - len(code) - 2] + b"\xeb\xfe"  # ...; jmp $
assert len(code) == 440
with open(path, "r+b") as f:
    f.seek(0)
    f.write(code)
PYEOF
}

# ---------------------------------------------------- embedded generator --
cat >"$T/gen.py" <<'GENPY'
#!/usr/bin/env python3
"""Deterministic content generator for ferroclone test disks.

  gen.py rand SEED NBYTES OUT [OFFSET]
  gen.py tree PROFILE SEED DEST BUDGET [BIG_DIR BIG_MIN]
  gen.py copy SRC DST

Everything is derived from random.Random(SEED) (Mersenne Twister; stable across
CPython >= 3.9), so the same arguments always produce the same bytes, names and
sizes.  `tree` writes a directory tree whose total file size is roughly BUDGET
bytes.  With BIG_DIR, regular files of at least BIG_MIN bytes are written below
BIG_DIR (same relative path) instead of DEST, and their relative paths are
printed on stdout, one per line (used to ntfscp them).  All mtimes/atimes are
pinned to EPOCH.
"""
import os
import random
import sys

EPOCH = 1600000000  # 2020-09-13 12:26:40 UTC
CHUNK = 1 << 20
KiB = 1024
MiB = 1024 * 1024

WORDS = (
    "the quick brown fox jumps over lazy dog disk image partition sector "
    "cluster volume boot record table block inode journal extent bitmap "
    "restore backup clone device system windows linux kernel driver service "
    "config registry update install package manager network address user "
    "document report invoice meeting summary project status release build "
    "error warning info debug value key path file folder archive checksum"
).split()


class Gen:
    def __init__(self, seed, dest, budget, big_dir=None, big_min=None):
        self.r = random.Random(seed)
        # fixed-size parts of a profile shrink for small budgets (100 MiB = 1)
        self.f = max(0.1, min(1.0, budget / (100.0 * MiB)))
        self.dest = dest
        self.big_dir = big_dir
        self.big_min = big_min
        self.used = 0
        self.big = []
        self.dirs = set()
        self.links = []

    def scaled(self, lo, hi):
        """lo + (hi - lo) * f: an upper bound that shrinks with the budget"""
        return lo + int((hi - lo) * self.f)

    # ---- primitives -------------------------------------------------------
    def _target(self, rel, size):
        if self.big_dir is not None and size >= self.big_min:
            self.big.append(rel)
            self.mkdir(os.path.dirname(rel))  # directory must exist in DEST
            base = self.big_dir
        else:
            base = self.dest
        p = os.path.join(base, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    def mkdir(self, rel):
        if not rel:
            return
        os.makedirs(os.path.join(self.dest, rel), exist_ok=True)
        self.dirs.add(rel)

    def randbytes(self, n):
        return self.r.randbytes(n)

    def text(self, n):
        r = self.r
        out = []
        total = 0
        while total < n:
            line = " ".join(r.choice(WORDS) for _ in range(r.randint(3, 14)))
            if r.random() < 0.15:
                line = line.capitalize() + "."
            line += "\r\n" if r.random() < 0.01 else "\n"
            out.append(line)
            total += len(line)
        return "".join(out).encode()[:n]

    def write(self, rel, data, mode=0o644):
        p = self._target(rel, len(data))
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
        self.used += len(data)

    def write_random(self, rel, n, mode=0o644, header=b""):
        p = self._target(rel, n)
        with open(p, "wb") as f:
            left = n
            if header:
                f.write(header[:n])
                left -= len(header[:n])
            while left > 0:
                k = min(CHUNK, left)
                f.write(self.r.randbytes(k))
                left -= k
        os.chmod(p, mode)
        self.used += n

    def write_binary(self, rel, n, mode=0o644, header=b"MZ\x90\x00"):
        """Executable-like: random runs mixed with zero and pattern runs
        (partly compressible, like real binaries)."""
        r = self.r
        buf = bytearray(header[:n])
        while len(buf) < n:
            k = min(n - len(buf), r.randint(64, 16 * KiB))
            c = r.random()
            if c < 0.55:
                buf += r.randbytes(k)
            elif c < 0.8:
                buf += bytes(k)
            else:
                pat = r.randbytes(r.randint(1, 16))
                buf += (pat * (k // len(pat) + 1))[:k]
        self.write(rel, bytes(buf), mode)

    def write_text(self, rel, n, mode=0o644, header=""):
        data = header.encode() + self.text(max(0, n - len(header.encode())))
        self.write(rel, data, mode)

    def write_sparse(self, rel, apparent, pieces):
        """A file with holes; `pieces` random data extents of 64 KiB."""
        p = self._target(rel, 0)
        with open(p, "wb") as f:
            f.truncate(apparent)
            for _ in range(pieces):
                off = self.r.randrange(0, apparent - 64 * KiB) & ~4095
                f.seek(off)
                f.write(self.r.randbytes(64 * KiB))
        self.used += pieces * 64 * KiB

    def symlink(self, rel, target):
        p = os.path.join(self.dest, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        os.symlink(target, p)
        self.links.append(p)

    def hardlink(self, rel, existing):
        p = os.path.join(self.dest, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        os.link(os.path.join(self.dest, existing), p)

    def fill(self, budget, names, header=b""):
        """Spread what is left of the budget over the given big files."""
        left = budget - self.used
        if left <= 0:
            return
        weights = [self.r.uniform(0.5, 1.5) for _ in names]
        tot = sum(weights)
        for name, w in zip(names, weights):
            n = int(left * w / tot) // 512 * 512 + self.r.randint(1, 511)
            self.write_random(name, max(n, 1), header=header)

    def finish(self):
        # pin timestamps, deepest first, directories after their content
        for base in filter(None, (self.dest, self.big_dir)):
            for root, dirs, files in os.walk(base, topdown=False):
                for n in files + dirs:
                    p = os.path.join(root, n)
                    os.utime(p, (EPOCH, EPOCH), follow_symlinks=False)
            os.utime(base, (EPOCH, EPOCH))
        for rel in self.big:
            print(rel)


# ---- profiles -------------------------------------------------------------
SYS32_STEMS = ("kernel", "ntdll", "user", "gdi", "advapi", "shell", "comctl",
               "ole", "rpcrt", "crypt", "ws2_", "win", "msv", "bcrypt", "d3d",
               "dx", "wmi", "netapi", "setupapi", "cfgmgr", "sechost", "twin")
SYS32_EXT = (".dll", ".dll", ".dll", ".exe", ".mui", ".cpl", ".ocx", ".tlb")


def p_win_esp(g, budget):
    g.write_random("EFI/Microsoft/Boot/bootmgfw.efi", 1 * MiB + 57344 + 312, header=b"MZ")
    g.write_random("EFI/Microsoft/Boot/bootmgr.efi", 1 * MiB + 229376 + 96, header=b"MZ")
    g.write_random("EFI/Microsoft/Boot/memtest.efi", 1 * MiB + 40960 + 8, header=b"MZ")
    g.write_random("EFI/Microsoft/Boot/BCD", 32 * KiB, header=b"regf")
    g.write("EFI/Microsoft/Boot/BCD.LOG", b"")
    g.write_random("EFI/Microsoft/Boot/BOOTSTAT.DAT", 64 * KiB)
    g.write_random("EFI/Microsoft/Boot/en-US/bootmgfw.efi.mui", 77 * KiB + 120, header=b"MZ")
    g.write_random("EFI/Microsoft/Boot/en-US/bootmgr.efi.mui", 77 * KiB + 344, header=b"MZ")
    for f in ("segmono_boot.ttf", "segoe_slboot.ttf", "wgl4_boot.ttf"):
        g.write_random("EFI/Microsoft/Boot/Fonts/" + f, g.r.randint(30, 90) * KiB)
    g.write_random("EFI/Microsoft/Recovery/BCD", 24 * KiB, header=b"regf")
    g.write_random("EFI/Boot/bootx64.efi", 1 * MiB + 57344 + 312, header=b"MZ")


def p_win_c(g, budget):
    r = g.r
    # Windows\System32: a few hundred small and medium files
    for i in range(300):
        stem = r.choice(SYS32_STEMS) + str(i)
        ext = r.choice(SYS32_EXT)
        size = r.randint(1 * KiB, 24 * KiB) if r.random() < 0.85 else r.randint(64 * KiB, 384 * KiB)
        g.write_binary("Windows/System32/" + stem + ext, size)
    for i in range(30):
        g.write_text("Windows/System32/%s%d.%s" % (r.choice(("setup", "perf", "wbem", "tcpmon")), i,
                                                  r.choice(("ini", "log", "txt", "inf"))),
                     r.randint(200, 8 * KiB))
    for i in range(60):
        g.write_binary("Windows/System32/drivers/%s%d.sys" % (r.choice(("nt", "usb", "acpi", "storport", "ndis")), i),
                       r.randint(8 * KiB, 200 * KiB))
    for f in ("hosts", "networks", "protocol", "services", "lmhosts.sam"):
        g.write_text("Windows/System32/drivers/etc/" + f, r.randint(400, 18 * KiB),
                     header="# Copyright (c) 1993-2009 Microsoft Corp.\r\n")
    for f, sz in (("SYSTEM", 3 * MiB), ("SOFTWARE", 2 * MiB + 512 * KiB), ("SAM", 64 * KiB),
                  ("SECURITY", 32 * KiB), ("DEFAULT", 256 * KiB)):
        g.write_random("Windows/System32/config/" + f, sz, header=b"regf")
    g.write_text("Windows/System32/config/SYSTEM.LOG1", 96 * KiB)
    # ~2000 tiny files in one directory
    for i in range(2000):
        name = "amd64_microsoft-windows-%s_31bf3856ad364e35_10.0.19041.%d_none_%08x.manifest" % (
            r.choice(WORDS), 1000 + i, r.getrandbits(32))
        g.write_text("Windows/WinSxS/Manifests/" + name, r.randint(60, 400),
                     header='<?xml version="1.0" encoding="UTF-8"?>\r\n')
    g.write_text("Windows/Logs/CBS/CBS.log", 200 * KiB)
    g.write_text("Windows/win.ini", 92, header="; for 16-bit app support\r\n[fonts]\r\n[extensions]\r\n")
    g.mkdir("Windows/Temp")
    g.mkdir("PerfLogs")
    g.write_binary("Program Files/Common Files/System/ado/msado15.dll", 1 * MiB + 3 * KiB)
    g.write_binary("Program Files/Windows NT/Accessories/wordpad.exe", 900 * KiB)
    g.write_text("Program Files/Windows NT/Accessories/en-US/readme.txt", 3000)
    # Users
    for i in range(40):
        g.write_text("Users/Public/Documents/%s %s %d.txt" % (r.choice(WORDS).capitalize(), r.choice(WORDS), i),
                     r.randint(500, 64 * KiB))
    g.write_text("Users/Public/Documents/R\u00e9sum\u00e9 \u2013 draft.txt", 4321)
    g.write("Users/Public/Documents/empty.txt", b"")
    g.write_text("Users/Public/Desktop/desktop.ini", 174, header="[.ShellClassInfo]\r\n")
    g.write_random("Users/Default/NTUSER.DAT", 256 * KiB, header=b"regf")
    g.mkdir("Users/Default/AppData/Local/Temp")
    # large files use up the rest of the budget
    g.fill(budget, ["Windows/Installer/1a2b3c.msi",
                    "ProgramData/Package Cache/{0A1B2C3D}/vc_redist.x64.exe",
                    "Users/Public/Videos/Sample Video.wmv",
                    "Windows/System32/MRT.exe"])


def p_win_re(g, budget):
    g.write_text("Recovery/WindowsRE/ReAgent.xml", 1100,
                 header='<?xml version="1.0" encoding="utf-8"?>\r\n<WindowsRE version="2.0">\r\n')
    g.write_random("Recovery/WindowsRE/Winre.wim", max(1 * MiB, budget - 4 * KiB), header=b"MSWIM\0\0\0")


def p_linux_common_etc(g):
    r = g.r
    g.write("etc/hostname", b"ferroclone-test\n")
    g.write("etc/fstab", b"# /etc/fstab\nLABEL=root / ext4 errors=remount-ro 0 1\n"
                         b"LABEL=home /home ext4 defaults 0 2\nLABEL=swap none swap sw 0 0\n")
    g.write("etc/passwd", b"root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000:User,,,:/home/user:/bin/bash\n")
    g.write("etc/shadow", b"root:*:19000:0:99999:7:::\nuser:*:19000:0:99999:7:::\n", mode=0o640)
    g.write("etc/os-release", b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n')
    for i in range(40):
        g.write_text("etc/%s.d/%02d-%s.conf" % (r.choice(("apt", "sysctl", "modprobe", "udev")), i, r.choice(WORDS)),
                     r.randint(100, 6 * KiB))


def p_linux_root(g, budget):
    r = g.r
    p_linux_common_etc(g)
    for i in range(120):
        g.write_binary("usr/bin/%s%d" % (r.choice(WORDS), i), r.randint(8 * KiB, g.scaled(8 * KiB, 300 * KiB)), mode=0o755,
                       header=b"\x7fELF\x02\x01\x01\x00")
    g.hardlink("usr/bin/perl", "usr/bin/" + sorted(os.listdir(os.path.join(g.dest, "usr/bin")))[0])
    for i in range(40):
        g.write_binary("usr/lib/x86_64-linux-gnu/lib%s.so.%d" % (r.choice(WORDS), i), r.randint(50 * KiB, g.scaled(50 * KiB, 2 * MiB)),
                       header=b"\x7fELF\x02\x01\x01\x00")
    for i in range(400):
        g.write_text("usr/share/doc/pkg%02d/%s%d" % (i % 80, r.choice(("copyright", "changelog", "README")), i),
                     r.randint(200, 12 * KiB))
    g.write_text("var/log/syslog", 500 * KiB)
    g.write_text("var/log/dpkg.log", 120 * KiB)
    g.write_text("boot/grub/grub.cfg", 6 * KiB, header="# DO NOT EDIT THIS FILE\n")
    g.write_random("boot/vmlinuz-6.1.0-13-amd64", g.scaled(1 * MiB, 7 * MiB) + 12345, header=b"MZ")
    for d in ("tmp", "proc", "sys", "dev", "mnt", "media", "srv", "home", "root"):
        g.mkdir(d)
    os.chmod(os.path.join(g.dest, "tmp"), 0o1777)
    os.chmod(os.path.join(g.dest, "root"), 0o700)
    for l, t in (("bin", "usr/bin"), ("lib", "usr/lib"), ("sbin", "usr/sbin"),
                 ("vmlinuz", "boot/vmlinuz-6.1.0-13-amd64"), ("initrd.img", "boot/initrd.img-6.1.0-13-amd64")):
        g.symlink(l, t)
    g.mkdir("usr/sbin")
    g.fill(budget, ["boot/initrd.img-6.1.0-13-amd64", "var/cache/apt/archives/linux-image.deb"])


def p_linux_home(g, budget):
    r = g.r
    g.write_text("user/.bashrc", 3526, header="# ~/.bashrc\n")
    g.write_text("user/.profile", 807)
    for i in range(60):
        g.write_text("user/Documents/%s-%d.txt" % (r.choice(WORDS), i), r.randint(300, 40 * KiB))
    for i in range(30):
        g.write_random("user/Pictures/IMG_%04d.jpg" % (1000 + i), r.randint(100 * KiB, g.scaled(100 * KiB, 2 * MiB)),
                       header=b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")
    for i in range(1500):
        g.write_random("user/.cache/thumbnails/normal/%032x.png" % r.getrandbits(128), r.randint(40, 600),
                       header=b"\x89PNG\r\n\x1a\n")
    g.symlink("user/Desktop/docs", "../Documents")
    g.mkdir("user/Downloads/empty-dir")
    g.fill(budget, ["user/Downloads/debian-12-netinst.iso", "user/Videos/holiday.mp4"])


def p_bare(g, budget):
    r = g.r
    for i in range(500):
        g.write_text("data/tiny/%04d.txt" % i, r.randint(1, 300))
    for i in range(50):
        g.write_text("data/docs/%s_%d.md" % (r.choice(WORDS), i), r.randint(1 * KiB, 60 * KiB))
    for i in range(40):
        g.write_binary("data/bin/blob%02d.bin" % i, r.randint(16 * KiB, g.scaled(16 * KiB, 512 * KiB)))
    g.write_sparse("data/sparse.img", 16 * MiB, 8)
    g.write("data/empty", b"")
    g.mkdir("data/empty-dir")
    g.symlink("data/latest", "docs")
    g.symlink("data/dangling", "/nonexistent/target")
    g.fill(budget, ["data/large/archive.tar", "data/large/video.mkv"])


def p_linux_esp(g, budget):
    g.write_random("EFI/debian/shimx64.efi", 934 * KiB + 100, header=b"MZ")
    g.write_random("EFI/debian/grubx64.efi", 2 * MiB + 4000, header=b"MZ")
    g.write_random("EFI/debian/mmx64.efi", 841 * KiB + 77, header=b"MZ")
    g.write_text("EFI/debian/grub.cfg", 120, header="search.fs_uuid 44444444-0000-4000-8000-000000000002 root\n")
    g.write_random("EFI/BOOT/BOOTX64.EFI", 934 * KiB + 100, header=b"MZ")
    g.write_random("EFI/BOOT/fbx64.efi", 80 * KiB + 5, header=b"MZ")


def p_dos(g, budget):
    r = g.r
    g.write_random("COMMAND.COM", 54645, header=b"\xe9")
    g.write_random("IO.SYS", 40566)
    g.write_text("AUTOEXEC.BAT", 180, header="@ECHO OFF\r\nPATH C:\\DOS\r\n")
    g.write_text("CONFIG.SYS", 96, header="FILES=30\r\nBUFFERS=20\r\n")
    for i in range(80):
        g.write_binary("DOS/UTIL%02d.EXE" % i, r.randint(2 * KiB, 90 * KiB))
    for i in range(200):
        g.write_text("DATA/NOTE%03d.TXT" % i, r.randint(10, 4 * KiB))
    g.write_text("Long File Name Documents/Quarterly report 2020.txt", 20 * KiB)
    g.mkdir("EMPTY")
    g.fill(budget, ["GAMES/DOOM.WAD", "GAMES/MUSIC.DAT"])


PROFILES = {
    "win-esp": p_win_esp, "win-c": p_win_c, "win-re": p_win_re,
    "linux-root": p_linux_root, "linux-home": p_linux_home, "linux-esp": p_linux_esp,
    "bare": p_bare, "dos": p_dos,
}


def copy_tree(src, dst):
    """Copy a tree in sorted order with fixed-size writes (cp -r copies in
    inode-number order, which differs from run to run)."""
    for root, dirs, files in os.walk(src):
        dirs.sort()
        files.sort()
        rel = os.path.relpath(root, src)
        out = os.path.normpath(os.path.join(dst, rel))
        for d in dirs:
            s = os.path.join(root, d)
            if os.path.islink(s):
                os.symlink(os.readlink(s), os.path.join(out, d))
            else:
                os.mkdir(os.path.join(out, d))
        for f in files:
            s = os.path.join(root, f)
            if os.path.islink(s):
                os.symlink(os.readlink(s), os.path.join(out, f))
                continue
            with open(s, "rb") as i, open(os.path.join(out, f), "wb") as o:
                while True:
                    b = i.read(CHUNK)
                    if not b:
                        break
                    o.write(b)


def main(argv):
    if len(argv) in (4, 5) and argv[0] == "rand":
        r = random.Random(int(argv[1]))
        left = int(argv[2])
        with open(argv[3], "r+b" if len(argv) == 5 else "wb") as f:
            if len(argv) == 5:
                f.seek(int(argv[4]))
            while left > 0:
                k = min(CHUNK, left)
                f.write(r.randbytes(k))
                left -= k
        return 0
    if len(argv) == 3 and argv[0] == "copy":
        copy_tree(argv[1], argv[2])
        return 0
    if len(argv) in (5, 7) and argv[0] == "tree":
        prof, seed, dest, budget = argv[1], int(argv[2]), argv[3], int(argv[4])
        big_dir = argv[5] if len(argv) == 7 else None
        big_min = int(argv[6]) if len(argv) == 7 else None
        os.makedirs(dest, exist_ok=True)
        if big_dir:
            os.makedirs(big_dir, exist_ok=True)
        g = Gen(seed, dest, budget, big_dir, big_min)
        PROFILES[prof](g, budget)
        g.finish()
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
GENPY

# ------------------------------------------------------------------ kinds --

# sgdisk on a regular file or on our own loop device; -v afterwards
gpt_verify() {
    local log=$T/sgdisk-v.log
    sgdisk -v "$1" >"$log" 2>&1 || { cat "$log" >&2; ll_die "sgdisk -v failed"; }
    grep -q 'No problems found' "$log" || { cat "$log" >&2; ll_die "sgdisk -v reports problems"; }
}

build_windows() {
    local esp=$((SIZE_MIB * 100 / 1024)) msr=16 rec=$((SIZE_MIB * 50 / 1024))
    ((esp >= 40)) || esp=40
    ((rec >= 30)) || rec=30
    local c=$((SIZE_MIB - 1 - esp - msr - rec - 1))
    # partition starts/sizes in MiB, sectors are 512 bytes
    local s1=1 s2=$((1 + esp)) s3=$((1 + esp + msr)) s4=$((1 + esp + msr + c))
    q sgdisk --clear -U 7C3A9E10-5B2D-4F6E-8A1B-0C9D8E7F6A51 \
        -n 1:$((s1 * 2048)):+${esp}M -t 1:EF00 -c 1:"EFI system partition" \
        -u 1:1F0E2D3C-4B5A-4968-8776-A5B4C3D2E1F0 \
        -n 2:$((s2 * 2048)):+${msr}M -t 2:0C01 -c 2:"Microsoft reserved partition" \
        -u 2:2A1B3C4D-5E6F-4A7B-8C9D-0E1F2A3B4C5D \
        -n 3:$((s3 * 2048)):+${c}M -t 3:0700 -c 3:"Basic data partition" \
        -u 3:3B2C4D5E-6F70-4B8C-9DAE-1F2A3B4C5D6E \
        -n 4:$((s4 * 2048)):+${rec}M -t 4:2700 -c 4:"Basic data partition" \
        -u 4:4C3D5E6F-7081-4C9D-AEBF-2A3B4C5D6E7F -A 4:set:0 -A 4:set:63 \
        "$DISK"
    gpt_verify "$DISK"

    mk_fat "$T/p1.img" $((esp * MIB)) 32 SYSTEM 12345678 $((s1 * 2048)) 512 win-esp 101 0
    splice "$T/p1.img" $((s1 * MIB))
    # p2 (MSR) stays zero
    mk_ntfs "$T/p3.img" $((c * MIB)) Windows $((s3 * 2048)) 4A6F1C2B8D3E5F70 win-c 103 \
        $((c * MIB * 40 / 100)) 1
    splice "$T/p3.img" $((s3 * MIB))
    mk_ntfs "$T/p4.img" $((rec * MIB)) Recovery $((s4 * 2048)) 6C1D2E3F40516273 win-re 104 \
        $((rec * MIB * 60 / 100)) 0
    splice "$T/p4.img" $((s4 * MIB))
}

build_legacy() {
    local root=$((SIZE_MIB * 200 / 512)) home=$((SIZE_MIB * 200 / 512)) swap=$((SIZE_MIB * 64 / 512))
    ((swap >= 8)) || swap=8
    local total=$((SIZE_MIB * 2048))
    local p1=2048 ext=$(((1 + root) * 2048))
    local p5=$((ext + 2048))
    local p6=$((p5 + home * 2048 + 2048))
    q sfdisk --no-reread --no-tell-kernel --wipe never --wipe-partitions never "$DISK" <<SFD
label: dos
label-id: 0x1234abcd
unit: sectors
sector-size: 512

start=$p1, size=$((root * 2048)), type=83, bootable
start=$ext, size=$((total - ext)), type=5
start=$p5, size=$((home * 2048)), type=83
start=$p6, size=$((swap * 2048)), type=82
SFD
    # boot code and a GRUB-like post-MBR gap, written after the table
    write_bootcode "$DISK" legacy
    rand 2001 $((2047 * 512)) "$DISK" 512

    mk_ext4 "$T/p1.img" $((root * MIB)) root 3f6c1b2a-9d4e-4c8b-a7f1-2e5d6c7b8a90 linux-root 201 \
        $((root * MIB * 40 / 100)) 1
    splice "$T/p1.img" $((p1 * 512))
    mk_ext4 "$T/p5.img" $((home * MIB)) home 8e2d4c6b-1a3f-4e5d-9c7b-6a5f4e3d2c1b linux-home 205 \
        $((home * MIB * 40 / 100)) 1
    splice "$T/p5.img" $((p5 * 512))
    mk_swap "$T/p6.img" $((swap * MIB)) swap 5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d
    splice "$T/p6.img" $((p6 * 512))
}

build_gpt4k() {
    local esp=64 fatbits=16 loop
    # A FAT32 with 4096-byte sectors needs >= 65525 clusters (~256 MiB) to be
    # FAT32 by cluster count (the only rule mtools and Windows use); a 64 MiB
    # "FAT32" would be a FAT16 to them, so small disks get a FAT16 ESP.
    if ((SIZE_MIB >= 400)); then esp=260 fatbits=32; fi
    local p2=$((SIZE_MIB - 1 - esp - 1))
    local s1=1 s2=$((1 + esp))   # MiB; 256 sectors of 4096 bytes per MiB
    ll_loop_attach loop --sector-size 4096 "$DISK"
    ll_loop_check "$loop" "$DISK"
    [[ $(blockdev --getss "$loop") == 4096 ]] || ll_die "$loop: sector size is not 4096"
    q sgdisk --clear -U 9D8C7B6A-5F4E-4D3C-8B2A-190817263544 \
        -n 1:$((s1 * 256)):+${esp}M -t 1:EF00 -c 1:"EFI System Partition" \
        -u 1:A1B2C3D4-E5F6-4A1B-8C2D-3E4F5A6B7C8D \
        -n 2:$((s2 * 256)):+${p2}M -t 2:8300 -c 2:"Linux filesystem" \
        -u 2:B2C3D4E5-F6A7-4B2C-9D3E-4F5A6B7C8D9E \
        "$loop"
    gpt_verify "$loop"
    ll_loop_detach "$loop"

    mk_fat "$T/p1.img" $((esp * MIB)) "$fatbits" ESP 0F0E0D0C $((s1 * 256)) 4096 linux-esp 301 0 1
    splice "$T/p1.img" $((s1 * MIB))
    mk_ext4 "$T/p2.img" $((p2 * MIB)) rootfs 44444444-0000-4000-8000-000000000002 linux-root 302 \
        $((p2 * MIB * 40 / 100)) 1 4096
    splice "$T/p2.img" $((s2 * MIB))
}

build_bare_ext4() {
    mk_ext4 "$T/fs.img" $((SIZE_MIB * MIB)) bare b4a3e8d2-7c6f-4e1d-9a2b-5c4d3e2f1a0b bare 401 \
        $((SIZE_MIB * MIB * 40 / 100)) 1
    splice "$T/fs.img" 0
}

build_mbr_simple() {
    local fat=$((SIZE_MIB * 100 / 256))
    ((fat >= 40)) || fat=40
    local total=$((SIZE_MIB * 2048)) p1=2048 p2=$(((1 + fat) * 2048))
    local p2size=$((total - p2 - 2048))
    q sfdisk --no-reread --no-tell-kernel --wipe never --wipe-partitions never "$DISK" <<SFD
label: dos
label-id: 0x5eed0001
unit: sectors
sector-size: 512

start=$p1, size=$((fat * 2048)), type=6, bootable
start=$p2, size=$p2size, type=83
SFD
    write_bootcode "$DISK" mbr-simple
    mk_fat "$T/p1.img" $((fat * MIB)) 16 DOS 1A2B3C4D $p1 512 dos 501 $((fat * MIB * 40 / 100))
    splice "$T/p1.img" $((p1 * 512))
    mk_ext4 "$T/p2.img" $((p2size * 512)) data c0ffee00-1234-4abc-8def-0123456789ab bare 502 \
        $((p2size * 512 * 40 / 100)) 0
    splice "$T/p2.img" $((p2 * 512))
}

case $KIND in
    windows) build_windows ;;
    legacy) build_legacy ;;
    gpt4k) build_gpt4k ;;
    bare-ext4) build_bare_ext4 ;;
    mbr-simple) build_mbr_simple ;;
esac

chmod 0644 "$DISK"
mv -f -- "$DISK" "$OUT"
ll_log "$KIND: wrote $OUT ($SIZE_MIB MiB)"
