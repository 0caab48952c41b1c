"""Reading a child's memory from the parent (process_vm_readv): how the parent takes a CPU
candidate's outputs itself, while the candidate is frozen, instead of asking it to copy or
checksum them (work it could skip or fuse into its kernel)."""
from __future__ import annotations

import ctypes
import os

MAX_READ = 64 << 20


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.process_vm_readv.restype = ctypes.c_ssize_t
_libc.process_vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_ulong,
                                   ctypes.POINTER(_IoVec), ctypes.c_ulong, ctypes.c_ulong]


def read(pid: int, address: int, length: int) -> bytes:
    """`length` bytes at `address` in process `pid`; OSError when they cannot all be read."""
    if not 0 <= length <= MAX_READ or not 0 < address < 1 << 64:
        raise OSError(f"refusing to read {length} bytes at {address:#x}")
    buffer = ctypes.create_string_buffer(length)
    done = 0
    while done < length:
        local = _IoVec(ctypes.addressof(buffer) + done, length - done)
        remote = _IoVec(address + done, length - done)
        got = _libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if got <= 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"process_vm_readv: {os.strerror(errno) if errno else 'nothing read'}")
        done += got
    return buffer.raw


def host_pid(candidates: set[int], inner_pid: int) -> int | None:
    """The host pid of the process that calls itself `inner_pid` in its own PID namespace."""
    for pid in sorted(candidates):
        try:
            with open(f"/proc/{pid}/status") as f:
                line = next((l for l in f if l.startswith("NSpid:")), "")
        except OSError:
            continue
        fields = line.split()[1:]
        if fields and fields[-1] == str(inner_pid):
            return pid
    return None
