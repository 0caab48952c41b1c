"""Who holds a claim, precise enough that a process on the same machine can tell the holder is gone.

A claim records `host:pid:pid-namespace:start-time`. A pid is reused and a host name can be shared
by containers, but a process with this pid and this start time in this pid namespace is that
process. So a turn whose worker died on this machine (an OOM-killed pool process, a SIGKILLed
worker) is handed on as soon as a worker or the reconciler here sees it, not a lease later.
Anything this process cannot judge (another host, another namespace, no /proc) is left to the lease.
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
    if len(parts) != 4 or parts[3] == "?":
        return False
    host, pid, namespace, started = parts
    if host != socket.gethostname() or namespace != _pid_namespace() or not pid.isdigit():
        return False
    return _start_time(int(pid)) != started


@lru_cache(maxsize=8)
def _identity(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:{_pid_namespace()}:{_start_time(pid) or '?'}"


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:").strip("[]")
    except OSError:
        return "?"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot; None when there is no such running
    process (a zombie has ended: it only waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    except OSError:
        return None
    state, started = fields[0], fields[19]
    return None if state in ("Z", "X") else started
