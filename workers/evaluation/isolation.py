"""Child-side confinement, applied first thing in a sandboxed child, before torch or
any candidate code is imported (so no threads exist yet and fork is safe).

Done here rather than in a Popen preexec_fn because preexec_fn is unsafe when the
parent has threads (a Celery worker may); Popen's start_new_session (setsid, done in
C) is the only thing the parent does between fork and exec.

Layout with a PID namespace:  parent -> monitor (this process) -> child (pid 1 in a new
PID namespace). When the child dies the kernel kills everything left in its namespace,
including descendants that escaped the process group with setsid. The monitor reports
the child's exit status over the channel and otherwise does nothing.
"""
from __future__ import annotations

import ctypes
import os
import resource
import signal

CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
PR_SET_PDEATHSIG = 1


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _unshare(flag: int) -> bool:
    try:
        return _libc().unshare(flag) == 0
    except (OSError, AttributeError):
        return False


def _set_limit(name: str, value: int | None, applied: dict) -> None:
    if value is None:
        return
    which = getattr(resource, name)
    try:
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))
        applied[name] = value
    except (ValueError, OSError) as exc:
        applied[name] = f"failed: {exc}"


def apply_rlimits(limits: dict) -> dict:
    """limits: {"as_bytes", "cpu_s", "fsize_bytes", "nproc"}; None entries are skipped."""
    applied: dict = {}
    _set_limit("RLIMIT_CORE", 0, applied)  # a segfaulting torch process must not dump GBs
    # RLIMIT_AS is skipped for CUDA (the driver reserves huge virtual ranges);
    # CUDA jobs need a cgroup memory limit instead.
    _set_limit("RLIMIT_AS", limits.get("as_bytes"), applied)
    _set_limit("RLIMIT_CPU", limits.get("cpu_s"), applied)
    _set_limit("RLIMIT_FSIZE", limits.get("fsize_bytes"), applied)
    # RLIMIT_NPROC counts every process of the uid and is not enforced for root.
    _set_limit("RLIMIT_NPROC", limits.get("nproc"), applied)
    return applied


def _monitor(child_pid: int, report) -> None:
    """Runs in the monitor process: wait for the namespaced child and report how it ended."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            _, status = os.waitpid(child_pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        report({"type": "exit", "code": None, "signal": -code})
    else:
        report({"type": "exit", "code": code, "signal": None})
    os._exit(0)


def enter(limits: dict, report) -> dict:
    """Confine this process. Returns {"netns", "pidns", "rlimits"}; in the monitor it never returns.

    report(message) sends a channel message (used by the monitor for the exit status).
    """
    netns = _unshare(CLONE_NEWNET)
    pidns = _unshare(CLONE_NEWPID)
    if pidns:
        pid = os.fork()
        if pid:
            _monitor(pid, report)
        # child: pid 1 of the new namespace (getppid() is 0 here); die with the monitor.
        # Should the monitor die before prctl runs, the parent's killpg still reaches us:
        # we are in its process group.
        _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # without a PID namespace the exit status reaches the parent through this process itself
    rlimits = apply_rlimits(limits)
    return {"netns": netns, "pidns": pidns, "rlimits": rlimits}
