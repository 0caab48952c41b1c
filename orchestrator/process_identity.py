"""Who holds a claim, precise enough that a process on the same machine can tell the holder is gone.

A claim records `host:pid:boot:pid-namespace:start-time`. A pid is reused, a host name can be
shared by cloned machines and containers, and the first pid namespace has the same number on every
Linux machine; but the boot id tells machines (and boots) apart, and a process with this pid and
this start time in this pid namespace of this boot is that process. So a turn whose worker died on
this machine (an OOM-killed pool process, a SIGKILLed worker) is handed on as soon as a worker or
the reconciler here sees it, not a lease later. Anything this process cannot judge (another
machine or namespace, a process it may not look at, no /proc) is left to the lease.
"""
from __future__ import annotations

import os
import socket
from functools import lru_cache


def this_process() -> str:
    return _identity(os.getpid())  # keyed by pid: a forked pool process is a holder of its own


def is_gone(holder: str | None) -> bool:
    """True only when `holder` names a process of this machine and pid namespace that has ended."""
    parts = (holder or "").split(":")
    if len(parts) != 5 or UNKNOWN in parts:
        return False
    host, pid, boot, namespace, started = parts
    if (host, boot, namespace) != (socket.gethostname(), _boot_id(), _pid_namespace()) or not pid.isdigit():
        return False
    now = _start_time(int(pid))
    return now != UNKNOWN and now != started


UNKNOWN = "?"


@lru_cache(maxsize=8)
def _identity(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:{_boot_id()}:{_pid_namespace()}:{_start_time(pid) or UNKNOWN}"


@lru_cache(maxsize=1)  # fixed for the life of the process
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot:
            return boot.read().strip().replace("-", "") or UNKNOWN
    except OSError:
        return UNKNOWN


@lru_cache(maxsize=1)  # fixed for the life of the process
def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:").strip("[]")
    except OSError:
        return UNKNOWN


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot; None when no such process runs (a
    zombie has ended: it only waits to be reaped); UNKNOWN when it may not be looked at."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it exists, under another user
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    except OSError:  # hidden (/proc mounted hidepid) or gone this instant: not ours to judge
        return UNKNOWN
    state, started = fields[0], fields[19]
    return None if state in ("Z", "X") else started
