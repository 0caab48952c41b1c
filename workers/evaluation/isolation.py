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

from . import cgroups, mounts, sandbox_user

CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4


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


def apply_rlimits(limits: dict, in_pids_cgroup: bool = False) -> dict:
    """limits: {"as_bytes", "cpu_s", "fsize_bytes", "nproc"}; None entries are skipped."""
    applied: dict = {}
    _set_limit("RLIMIT_CORE", 0, applied)  # a segfaulting torch process must not dump GBs
    # RLIMIT_AS is skipped for CUDA (the driver reserves huge virtual ranges);
    # CUDA jobs need a cgroup memory limit instead.
    _set_limit("RLIMIT_AS", limits.get("as_bytes"), applied)
    _set_limit("RLIMIT_CPU", limits.get("cpu_s"), applied)
    _set_limit("RLIMIT_FSIZE", limits.get("fsize_bytes"), applied)
    # RLIMIT_NPROC counts every process of the uid and is not enforced for root: it is the
    # fallback cap. In a pids cgroup it is left alone: the cgroup caps exactly this child,
    # while the uid-wide count also sees unrelated processes of a reused sandbox uid.
    if not in_pids_cgroup:
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


def _become_sandbox_user(user: list | None, expose: list) -> int | None:
    """Switch to the unprivileged uid the parent picked (None: stay as we are). Skipped,
    and reported as such, when the interpreter could not be made reachable for that uid."""
    if not user or not mounts.expose(expose):
        return None
    uid, gid = user
    sandbox_user.drop_privileges(uid, gid)
    # Changing credentials clears dumpable; our uid is ours alone, and without it
    # /proc/self/fd and friends turn root-owned and unreadable to ourselves.
    _libc().prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    return uid


def enter(limits: dict, report) -> dict:
    """Confine this process. Returns {"netns", "pidns", "rlimits", "cgroup", "uid"}; in the
    monitor it never returns.

    Order: join the cgroup (before any fork, so every descendant is in it), namespaces,
    rlimits, then drop root (after which none of the above could be done any more).
    report(message) sends a channel message (used by the monitor for the exit status).
    """
    in_cgroup = cgroups.join(limits.get("cgroup_procs") or [])
    netns = _unshare(CLONE_NEWNET)
    pidns = _unshare(CLONE_NEWPID)
    if pidns:
        pid = os.fork()
        if pid:
            _monitor(pid, report)
    # without a PID namespace the exit status reaches the parent through this process itself
    rlimits = apply_rlimits(limits, in_pids_cgroup=in_cgroup)
    uid = _become_sandbox_user(limits.get("user"), limits.get("expose") or [])
    if pidns:
        # child: pid 1 of the new namespace (getppid() is 0 here); die with the monitor.
        # Set after the uid switch, which clears it. Should the monitor die before prctl
        # runs, the parent's killpg (and the cgroup kill) still reach us.
        _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    return {"netns": netns, "pidns": pidns, "rlimits": rlimits, "cgroup": in_cgroup, "uid": uid}
