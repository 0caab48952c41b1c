"""Per-child control groups: a process cap that holds for any uid, a memory cap that holds on
CUDA (where RLIMIT_AS cannot be used: the driver reserves huge virtual ranges), and a CPU
quota, so that a candidate gets no more processor time than the reference it is compared with
(threads of its own, or torch.set_num_threads, cannot buy a speedup).

The parent creates a fresh group per child, the child's launcher moves itself in before it
execs anything (so every descendant is in it), and the parent kills every member and removes
the group afterwards. cgroup v1: one directory per controller hierarchy under our own group.
cgroup v2: as root, a `kturn` subtree under the hierarchy's root with the pids and memory
controllers enabled at each level; otherwise a child of our own group when it is delegated to
us. Everything is best effort: a host that allows nothing gets None, and the fingerprint says
so.
"""
from __future__ import annotations

import os
import signal
import time
import uuid

PARENT = "kturn"
KILL_ROUNDS = 50
REMOVE_WAIT_S = 10.0  # killed tasks leave the group within milliseconds, seconds on a loaded host
CONTROLLERS = ("pids", "memory", "cpu", "cpuset")
CPU_PERIOD_US = 100_000
FREEZE_WAIT_S = 5.0


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


def _write(path: str, value: str) -> bool:
    try:
        with open(path, "w") as f:
            f.write(value)
        return True
    except OSError:
        return False


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _make(parent: str, name: str, enable: tuple[str, ...] = ()) -> str | None:
    """mkdir parent/kturn/name (enabling controllers for kturn's children on v2); tolerate a
    concurrent removal of the shared kturn directory."""
    base = os.path.join(parent, PARENT)
    for _ in range(3):
        try:
            os.makedirs(base, exist_ok=True)
            for controller in enable:
                _write(os.path.join(base, "cgroup.subtree_control"), f"+{controller}")
            path = os.path.join(base, name)
            os.mkdir(path)
            return path
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None


class Group:
    """One child's cgroup: directories (one per v1 hierarchy, or one v2 directory)."""

    def __init__(self, version: str, dirs: list[str], caps: dict) -> None:
        self.version, self.dirs, self.caps = version, dirs, caps

    @property
    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.dirs]

    def describe(self) -> dict:
        return {"version": self.version, **self.caps}

    def _file(self, v1: str, v2: str) -> str | None:
        name = v2 if self.version == "v2" else v1
        return next((os.path.join(d, name) for d in self.dirs if os.path.exists(os.path.join(d, name))), None)

    def oom_killed(self) -> bool:
        """Whether the kernel killed a member for exceeding the memory cap."""
        path = self._file("memory.oom_control", "memory.events")
        fields = dict(line.split() for line in _read(path).splitlines() if len(line.split()) == 2) if path else {}
        return int(fields.get("oom_kill", "0") or 0) > 0

    def peak_bytes(self) -> int | None:
        path = self._file("memory.max_usage_in_bytes", "memory.peak")
        text = _read(path).strip() if path else ""
        return int(text) if text.isdigit() else None

    @property
    def can_freeze(self) -> bool:
        return self._file("freezer.state", "cgroup.freeze") is not None

    def freeze(self) -> bool:
        """Stop every member where it stands (it cannot catch or delay this); True once all are
        frozen. The parent reads a candidate's outputs from its memory while it is frozen."""
        knob = self._file("freezer.state", "cgroup.freeze")
        if knob is None or not _write(knob, "FROZEN" if self.version == "v1" else "1"):
            return False
        return self._wait(lambda: _read(knob).strip() == "FROZEN" if self.version == "v1"
                          else "frozen 1" in _read(os.path.join(os.path.dirname(knob), "cgroup.events")))

    def freezes_anyone(self) -> bool:
        """Whether the group the freezer acts on has members (a child that failed to join it would
        go on running while the empty group reads as frozen)."""
        knob = self._file("freezer.state", "cgroup.freeze")
        return knob is not None and bool(_read(os.path.join(os.path.dirname(knob), "cgroup.procs")).split())

    def thaw(self) -> None:
        knob = self._file("freezer.state", "cgroup.freeze")
        if knob is not None:
            _write(knob, "THAWED" if self.version == "v1" else "0")

    @staticmethod
    def _wait(done, timeout: float = FREEZE_WAIT_S) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.0005)
        return True

    def members(self) -> set[int]:
        pids: set[int] = set()
        for path in self.procs_files:
            pids.update(int(p) for p in _read(path).split() if p.isdigit())
        return pids

    def kill(self) -> None:
        """SIGKILL every member; repeat while a fork bomb still produces new ones (bounded by
        pids.max, so this converges)."""
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
            try:
                os.rmdir(os.path.join(base, name))
            except OSError:
                pass


def cores_for(count: int) -> list[int]:
    """`count` of the cores this worker may use, spread across workers by pid: the cores a child
    is pinned to (so that no thread of a candidate can run beside the cores the reference had)."""
    allowed = sorted(os.sched_getaffinity(0))
    start = os.getpid() % len(allowed)
    return [allowed[(start + i) % len(allowed)] for i in range(min(max(1, count), len(allowed)))]


def _cpu_list(cores: list[int]) -> str:
    return ",".join(str(c) for c in cores)


def _create_v1(own: dict, mounts: list, name: str, max_processes: int, memory_bytes: int | None,
               cpus: float | None) -> Group | None:
    points = {c: m for m, fstype, opts in mounts if fstype == "cgroup" for c in opts}
    if "pids" not in points:
        return None
    wanted = {"pids": [("pids.max", max_processes)]}
    if memory_bytes and "memory" in points:
        wanted["memory"] = [("memory.limit_in_bytes", memory_bytes), ("memory.memsw.limit_in_bytes", memory_bytes)]
    if cpus and "cpu" in points:
        wanted["cpu"] = [("cpu.cfs_period_us", CPU_PERIOD_US), ("cpu.cfs_quota_us", int(cpus * CPU_PERIOD_US))]
    if "freezer" in points:
        wanted["freezer"] = []
    if cpus and "cpuset" in points:  # cpus before cpuset.cpus: a v1 cpuset needs both set to take tasks
        parent = points["cpuset"] + own.get("cpuset", "/")
        wanted["cpuset"] = [("cpuset.mems", _read(os.path.join(parent, "cpuset.mems")).strip() or "0"),
                            ("cpuset.cpus", _cpu_list(cores_for(int(cpus))))]
    dirs, caps = [], {}
    for controller, knobs in wanted.items():
        parent = points[controller] + own.get(controller, "/")
        if not os.access(parent, os.W_OK):
            continue
        _sweep_orphans(parent)
        path = _make(parent, name)
        if path is None:
            continue
        if controller == "cpuset":  # v1: the kturn level needs its cpus and mems before a child can
            for knob in ("cpuset.mems", "cpuset.cpus"):
                base = os.path.join(parent, PARENT, knob)
                if not _read(base).strip():
                    _write(base, _read(os.path.join(parent, knob)).strip())
        dirs.append(path)
        for knob, value in knobs:
            if _write(os.path.join(path, knob), str(value)):
                caps[knob] = value
        if controller == "freezer":
            caps["freezer"] = True
    return _keep_if_capped(Group("v1", dirs, caps))


def _v2_parents(own: dict, point: str) -> list[str]:
    """Where a kturn subtree may go: the hierarchy's root (root only: it is exempt from the
    no-internal-processes rule, so controllers can be enabled there), then our own group."""
    candidates = [point]
    if own.get("", "/") != "/":
        candidates.append(point + own[""])
    return [p for p in candidates if os.access(p, os.W_OK)]


def _create_v2(own: dict, mounts: list, name: str, max_processes: int, memory_bytes: int | None,
               cpus: float | None) -> Group | None:
    points = [m for m, fstype, _ in mounts if fstype == "cgroup2"]
    if not points or "" not in own:
        return None
    for parent in _v2_parents(own, points[0]):
        available = set(_read(os.path.join(parent, "cgroup.controllers")).split())
        enable = tuple(c for c in CONTROLLERS if c in available)
        for controller in enable:
            _write(os.path.join(parent, "cgroup.subtree_control"), f"+{controller}")
        _sweep_orphans(parent)
        path = _make(parent, name, enable)
        if path is None:
            continue
        caps = {}
        if _write(os.path.join(path, "pids.max"), str(max_processes)):
            caps["pids.max"] = max_processes
        if memory_bytes and _write(os.path.join(path, "memory.max"), str(memory_bytes)):
            caps["memory.max"] = memory_bytes
            _write(os.path.join(path, "memory.swap.max"), "0")
        quota = f"{int(cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}" if cpus else None
        if quota and _write(os.path.join(path, "cpu.max"), quota):
            caps["cpu.max"] = quota
        if cpus and _write(os.path.join(path, "cpuset.cpus"), _cpu_list(cores_for(int(cpus)))):
            caps["cpuset.cpus"] = _read(os.path.join(path, "cpuset.cpus")).strip()
        group = _keep_if_capped(Group("v2", [path], caps))
        if group is not None:
            return group
    return None


def _keep_if_capped(group: Group) -> Group | None:
    if "pids.max" in group.caps:
        return group
    group.remove()
    return None


def create(max_processes: int, memory_bytes: int | None = None, cpus: float | None = None) -> Group | None:
    """A fresh group with pids.max (and the memory cap and CPU quota, in cores, when given), or
    None when the host does not let us. cgroup v1's pids hierarchy first (hybrid hosts mount an
    empty v2 tree beside it), then v2."""
    name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    own, mounts = _own_cgroups(), _mounts()
    return (_create_v1(own, mounts, name, max_processes, memory_bytes, cpus)
            or _create_v2(own, mounts, name, max_processes, memory_bytes, cpus))
