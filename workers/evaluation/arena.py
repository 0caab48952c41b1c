"""A child's input arena (the CPU path): one shared memfd per child that the parent fills with
each batch's inputs, copied from the sealed memfd the reference made them in.

Why: mapping a fresh memfd per batch costs the child page-table work in its timed window (for
a memory-bound kernel, more than the kernel itself), and that cost differs from one process to
the other by more than the accuracy asked of a speedup. An arena is mapped and populated once,
in a warm-up batch; later batches only find new bytes in it.

Secrecy holds because the parent fills a child's arena only while that child is frozen (it is
held from its reply to one batch until the request that starts the next, whose clock starts
before the thaw): nothing in the child can see a batch's inputs before its window opens. The
arena is sealed against resizing, so a child cannot shrink it under the parent's copy.
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

    def fill(self, source_fd: int, length: int) -> int | None:
        """Copy `length` bytes of the (sealed) source memfd in. Returns the arena's fd when it is
        new (it had to grow), to be handed to the child with the request; else None."""
        fresh = None
        if length > self.size:
            self.close()
            self._create(length)
            fresh = self.fd
        if length:
            with mmap.mmap(source_fd, length, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ) as source, \
                    memoryview(source) as src, memoryview(self._map) as dst:
                dst[:length] = src
        return fresh

    def _create(self, size: int) -> None:
        self.fd = os.memfd_create("kturn-arena", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(self.fd, size)
        fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        self.size = size
        self._map = mmap.mmap(self.fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)

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
