"""A child's input arena (the CPU path): one shared memfd per child that the parent fills with
each batch's inputs, copied from the sealed memfd the reference made them in.

Why: mapping a fresh memfd per batch costs the child page-table work in its timed window (for
a memory-bound kernel, more than the kernel itself), and that cost differs from one process to
the other by more than the accuracy asked of a speedup. An arena is handed over in a request of
its own, untimed, in which the child maps it and populates it (so its pages are the child's, in
its memory cap, not the worker's); later batches only find new bytes in it.

Secrecy: under a cgroup freezer the parent fills a child's arena while the child is frozen (held
from its answer to one batch until the request that starts the next, whose clock starts before
the thaw), so nothing in the child can see a batch's inputs before its window opens. Processes
stopped by signals can set each other going again, so without a freezer the copy is made inside
the window instead (from a view of the sealed inputs populated beforehand, so that it costs
both children about alike). The arena is sealed against resizing, so a child cannot shrink it
under the parent's copy, and a child that gives its pages back is caught before the next copy.
"""
from __future__ import annotations

import fcntl
import mmap
import os


class Arena:
    def __init__(self) -> None:
        self.fd = -1
        self.size = 0
        self._map: mmap.mmap | None = None

    def grow(self, size: int) -> int:
        """A new, empty arena of `size` bytes in place of the old one; its fd, for the child."""
        self.close()
        self.fd = os.memfd_create("kturn-arena", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(self.fd, size)
        fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        self.size = size
        self._map = mmap.mmap(self.fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        return self.fd

    def has_hole(self) -> bool:
        """Whether pages of the arena were given back (a hole punched, MADV_REMOVE): the parent's
        copy would fault them in again, charged to the worker rather than to the child."""
        return os.lseek(self.fd, 0, os.SEEK_HOLE) < self.size

    def fill(self, source: mmap.mmap, length: int) -> None:
        """Copy the first `length` bytes of the source (the parent's view of a sealed memfd) in."""
        with memoryview(source) as src, memoryview(self._map) as dst:
            dst[:length] = src[:length]

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.size = 0

    def __enter__(self) -> "Arena":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
