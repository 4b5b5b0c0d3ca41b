#!/usr/bin/python3
"""A disk that fails: a FUSE filesystem showing one file, disk.img, backed by a real file, whose
read(2) and write(2) return EIO wherever they touch the given byte ranges.

Usage: faulty_disk.py BACKING MOUNTPOINT [--bad-read START:LEN]... [--bad-write START:LEN]...

Runs in the foreground with direct_io, so every read and write of the program under test reaches
this process exactly as issued (no page cache, no readahead). Stop it with fusermount -u.
"""
import argparse
import errno
import os
import stat

import fusepy as fuse


def ranges(values):
    out = []
    for v in values or []:
        start, length = v.split(":")
        out.append((int(start, 0), int(length, 0)))
    return out


def overlaps(bad, offset, size):
    return any(offset < s + l and s < offset + size for s, l in bad)


class FaultyDisk(fuse.Operations):
    def __init__(self, backing, bad_reads, bad_writes):
        self.fd = os.open(backing, os.O_RDWR)
        self.bad_reads = bad_reads
        self.bad_writes = bad_writes

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path == "/disk.img":
            size = os.fstat(self.fd).st_size
            return {"st_mode": stat.S_IFREG | 0o644, "st_nlink": 1, "st_size": size}
        raise fuse.FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", "disk.img"]

    def open(self, path, flags):
        if path != "/disk.img":
            raise fuse.FuseOSError(errno.ENOENT)
        return 0

    def read(self, path, size, offset, fh):
        if overlaps(self.bad_reads, offset, size):
            raise fuse.FuseOSError(errno.EIO)
        return os.pread(self.fd, size, offset)

    def write(self, path, data, offset, fh):
        if overlaps(self.bad_writes, offset, len(data)):
            raise fuse.FuseOSError(errno.EIO)
        return os.pwrite(self.fd, data, offset)

    def truncate(self, path, length, fh=None):
        raise fuse.FuseOSError(errno.EPERM)

    def fsync(self, path, datasync, fh):
        os.fsync(self.fd)
        return 0

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("backing")
    p.add_argument("mountpoint")
    p.add_argument("--bad-read", action="append")
    p.add_argument("--bad-write", action="append")
    a = p.parse_args()
    fs = FaultyDisk(a.backing, ranges(a.bad_read), ranges(a.bad_write))
    fuse.FUSE(fs, a.mountpoint, foreground=True, nothreads=True, direct_io=True)


if __name__ == "__main__":
    main()
