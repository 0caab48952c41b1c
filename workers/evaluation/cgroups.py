"""Per-child control groups: a process cap that holds for root and a memory cap for CUDA.

RLIMIT_NPROC counts processes per uid and is not enforced for root, so a fork bomb run
as root is unbounded; a pids cgroup caps the candidate and all its descendants whatever
their uid. On CUDA, RLIMIT_AS cannot be used (the driver reserves huge virtual ranges),
so memory is capped with the memory controller instead.

The parent creates a fresh group per child (cgroup v1: one directory per controller
hierarchy; v2: a child of the worker's own cgroup when that is delegated to us), the
child moves itself in first thing (isolation.join_cgroups, before it forks anything),
and the parent kills every member and removes the group when the child is done.
Everything here is best effort: a host that does not allow it gets None and the
evaluation runs with the rlimits alone.
"""
from __future__ import annotations

import os
import signal
import time
import uuid

PARENT = "kturn"
KILL_ROUNDS = 50
REMOVE_WAIT_S = 2.0


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fstype, super options) of every cgroup mount, from mountinfo."""
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2") and fields[3] == "/":
            found.append((fields[4], tail[0], set(tail[2].split(","))))
    return found


def _own_cgroups() -> dict[str, str]:
    """controller (or "" for the v2 hierarchy) -> this process's cgroup path in it."""
    own: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup") as f:
            for line in f.read().splitlines():
                _, controllers, path = line.split(":", 2)
                for name in controllers.split(",") if controllers else [""]:
                    own[name] = path
    except (OSError, ValueError):
        pass
    return own


def _writable_dir(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK)


def _make(parent: str, name: str) -> str | None:
    """mkdir parent/kturn/name; tolerate a concurrent remove of the shared kturn dir."""
    for _ in range(3):
        try:
            os.makedirs(os.path.join(parent, PARENT), exist_ok=True)
            path = os.path.join(parent, PARENT, name)
            os.mkdir(path)
            return path
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None


def _write(path: str, value: str) -> bool:
    try:
        with open(path, "w") as f:
            f.write(value)
        return True
    except OSError:
        return False


class Group:
    """One child's cgroup: directories (one per v1 hierarchy, or one v2 directory)."""

    def __init__(self, version: str, dirs: list[str], caps: dict) -> None:
        self.version, self.dirs, self.caps = version, dirs, caps

    @property
    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.dirs]

    def describe(self) -> dict:
        return {"version": self.version, **self.caps}

    def members(self) -> set[int]:
        pids: set[int] = set()
        for path in self.procs_files:
            try:
                with open(path) as f:
                    pids.update(int(p) for p in f.read().split())
            except (OSError, ValueError):
                continue
        return pids

    def kill(self) -> None:
        """SIGKILL every member; repeat while a fork bomb still produces new ones (bounded
        by pids.max, so this converges)."""
        for d in self.dirs:
            if os.path.exists(os.path.join(d, "cgroup.kill")) and _write(os.path.join(d, "cgroup.kill"), "1"):
                return
        for _ in range(KILL_ROUNDS):
            members = self.members()
            if not members:
                return
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        """Kill what is left and rmdir; exiting tasks take a moment to leave the group."""
        self.kill()
        deadline = time.monotonic() + REMOVE_WAIT_S
        for d in self.dirs:
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    self.kill()
                    time.sleep(0.02)
            _try_rmdir(os.path.dirname(d))  # the shared kturn dir, once nobody else uses it


def _try_rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def _sweep_orphans(parent: str) -> None:
    """Empty groups left by a worker that was killed before it could remove them."""
    base = os.path.join(parent, PARENT)
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        owner = name.split("-", 1)[0]
        if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            _try_rmdir(os.path.join(base, name))


def _create_v1(own: dict, mounts: list, name: str, max_processes: int, memory_bytes: int | None) -> Group | None:
    points = {c: m for m, fstype, opts in mounts if fstype == "cgroup" for c in opts}
    if "pids" not in points:
        return None
    wanted = {"pids": ("pids.max", str(max_processes))}
    if memory_bytes and "memory" in points:
        wanted["memory"] = ("memory.limit_in_bytes", str(memory_bytes))
    dirs, caps = [], {}
    for controller, (knob, value) in wanted.items():
        parent = points[controller] + own.get(controller, "/")
        if not _writable_dir(parent):
            continue
        _sweep_orphans(parent)
        path = _make(parent, name)
        if path is None:
            continue
        dirs.append(path)
        if _write(os.path.join(path, knob), value):
            caps[knob] = int(value)
    group = Group("v1", dirs, caps)
    if "pids.max" not in caps:
        group.remove()
        return None
    return group


def _create_v2(own: dict, mounts: list, name: str, max_processes: int, memory_bytes: int | None) -> Group | None:
    points = [m for m, fstype, _ in mounts if fstype == "cgroup2"]
    if not points or "" not in own:
        return None
    parent = points[0] + own[""]
    if not _writable_dir(parent):
        return None
    try:
        with open(os.path.join(parent, "cgroup.subtree_control")) as f:
            enabled = set(f.read().split())
    except OSError:
        return None
    if "pids" not in enabled:
        # only possible when our own cgroup holds no processes (v2's no-internal-process rule)
        _write(os.path.join(parent, "cgroup.subtree_control"), "+pids")
    _sweep_orphans(parent)
    path = _make(parent, name)
    if path is None:
        return None
    caps = {}
    if _write(os.path.join(path, "pids.max"), str(max_processes)):
        caps["pids.max"] = max_processes
    if memory_bytes and _write(os.path.join(path, "memory.max"), str(memory_bytes)):
        caps["memory.max"] = memory_bytes
    group = Group("v2", [path], caps)
    if "pids.max" not in caps:
        group.remove()
        return None
    return group


def create(max_processes: int, memory_bytes: int | None = None) -> Group | None:
    """A fresh group with pids.max (and the memory limit when given), or None when the host
    does not let us. Tries cgroup v1's pids hierarchy first (hybrid hosts mount an empty v2
    tree beside it), then v2."""
    name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    own, mounts = _own_cgroups(), _mounts()
    return (_create_v1(own, mounts, name, max_processes, memory_bytes)
            or _create_v2(own, mounts, name, max_processes, memory_bytes))


def join(procs_files: list[str]) -> bool:
    """Called by the child on itself before it forks: move into every directory of its group."""
    joined = bool(procs_files)
    for path in procs_files:
        joined = _write(path, str(os.getpid())) and joined
    return joined
