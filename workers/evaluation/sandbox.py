"""Parent side of the sandbox: spawn a fresh interpreter per job, watch its phases over
the result channel, enforce per-phase wall-clock limits and kill the whole process tree.

Measures (see isolation.py for the child side):
* fresh `sys.executable -m workers.evaluation.runner` (never a fork of the worker);
* own session and process group (start_new_session), killed with SIGKILL on timeout;
* network namespace and PID namespace when the host allows unshare;
* rlimits: AS (CPU device only), CPU, FSIZE, NPROC (when no pids cgroup), CORE=0;
* a pids cgroup per child (and a memory cgroup on CUDA) when the host lets us (cgroups.py);
* candidates run as an unprivileged uid of their own when we are root (sandbox_user.py);
* environment allowlist, private HOME/TMPDIR/cwd, stdin closed, stdout/stderr to files;
* results only over an inherited pipe fd (pass_fds), validated message by message.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import cgroups, channel, sandbox_user
from .settings import EvalSettings

HARNESS_ROOT = str(Path(__file__).resolve().parents[2])

# Variables passed through from the worker when set. Everything else (DATABASE_URL,
# REDIS_URL, cloud credentials, tokens, ...) is dropped.
PASSTHROUGH_ENV = (
    "PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ",
    "CUDA_HOME", "CUDA_PATH", "CUDA_VISIBLE_DEVICES", "CUDA_MODULE_LOADING",
    "LD_LIBRARY_PATH", "CC", "CXX", "TORCH_CUDA_ARCH_LIST",
    "TRITON_PTXAS_PATH", "TRITON_LIBCUDA_PATH",
)
STREAM_TAIL_BYTES = 4096
EXIT_GRACE_S = 10.0


@dataclass
class ChildOutcome:
    messages: list[dict] = field(default_factory=list)
    phase: str = "compile"
    timed_out: bool = False
    protocol_error: str | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    phase_wall_s: dict = field(default_factory=dict)

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m["type"] == kind]

    def first(self, kind: str) -> dict | None:
        found = self.of_type(kind)
        return found[0] if found else None

    @property
    def finished(self) -> bool:
        return self.first("done") is not None


def child_env(settings: EvalSettings, private_dir: str, sandbox_id: str, extra: dict | None = None) -> dict:
    env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    threads = str(settings.cpu_threads)
    tmp = os.path.join(private_dir, "tmp")
    os.makedirs(tmp, exist_ok=True)
    env.update({
        "HOME": private_dir,
        "TMPDIR": tmp,
        "PYTHONPATH": HARNESS_ROOT,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONUNBUFFERED": "1",
        "TORCH_EXTENSIONS_DIR": os.path.join(private_dir, "torch_extensions"),
        # inductor's default cache dir is named after getpass.getuser(), which fails for a
        # sandbox uid without a passwd entry
        "TORCHINDUCTOR_CACHE_DIR": os.path.join(private_dir, "inductor"),
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "MAX_JOBS": str(settings.max_build_jobs),
        # Names the evaluating process, so leftovers can be traced to the evaluation that made them.
        "KTURN_SANDBOX": f"{os.getpid()}-{sandbox_id}",
    })
    if settings.backend == "triton" and settings.device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    env.update(extra or {})
    return env


def rlimits_for(settings: EvalSettings) -> dict:
    total_s = settings.compile_timeout_s + 2 * settings.run_timeout_s
    return {
        # CUDA reserves huge virtual address ranges: RLIMIT_AS would break it. On GPU
        # boxes the memory cap has to come from a cgroup (memory.max) around the worker.
        "as_bytes": settings.memory_limit_mb << 20 if settings.device == "cpu" else None,
        "cpu_s": int(total_s * max(1, settings.cpu_threads) + 60),
        "fsize_bytes": settings.max_file_mb << 20,
        "nproc": settings.max_processes,
    }


@dataclass
class Confinement:
    """What the parent set up around one child beyond rlimits: its cgroup and its uid."""
    group: cgroups.Group | None = None
    user: sandbox_user.SandboxUser | None = None

    def job_limits(self, settings: EvalSettings, reach: tuple[str, ...] = ()) -> dict:
        """reach: directories the child needs besides the interpreter and the harness."""
        needed = [sys.base_prefix, sys.prefix, HARNESS_ROOT, *reach]
        return {**rlimits_for(settings),
                "cgroup_procs": self.group.procs_files if self.group else [],
                "user": [self.user.uid, self.user.gid] if self.user else None,
                "expose": sandbox_user.exposure_plan(needed) if self.user else []}

    def kill(self) -> None:
        if self.group is not None:
            self.group.kill()

    def describe(self, hello: dict | None) -> dict:
        """Fingerprint fields: what actually took effect (the child says whether it joined)."""
        joined = bool(self.group and hello and hello.get("cgroup"))
        uid = hello.get("uid") if hello else None
        if joined:
            cap = f"cgroup-{self.group.version}"
        elif uid is not None:
            cap = "rlimit"
        else:
            cap = "rlimit (not enforced for root)" if os.geteuid() == 0 else "rlimit"
        caps = self.group.describe() if joined else {}
        return {"process_cap": cap, "memory_cgroup": caps.get("memory.max", caps.get("memory.limit_in_bytes")),
                "sandbox_uid": uid}


@contextmanager
def confinement(settings: EvalSettings, unprivileged: bool):
    """A fresh cgroup (and, for candidates, a uid of their own) for one child; on exit every
    member of the group is killed and the group removed, the uid slot released."""
    memory = settings.memory_limit_mb << 20 if settings.device == "cuda" else None
    conf = Confinement(group=cgroups.create(settings.max_processes, memory))
    try:
        if unprivileged:
            conf.user = sandbox_user.acquire(settings.sandbox_uid, settings.sandbox_uid_pool)
        yield conf
    finally:
        if conf.group is not None:
            conf.group.remove()
        if conf.user is not None:
            conf.user.release()


def phase_limits(settings: EvalSettings) -> dict:
    return {"compile": settings.compile_timeout_s, "correctness": settings.run_timeout_s,
            "timing": settings.run_timeout_s, "verify": settings.run_timeout_s}


def _tail(f) -> str:
    """Read through the handle the child was given, never by path: the child owns its
    directory and could have swapped the file for a symlink to something of root's."""
    try:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - STREAM_TAIL_BYTES))
        return f.read().decode(errors="replace")
    except OSError:
        return ""


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group (the monitor and the namespaced child). Anything
    that left the group dies with the PID namespace's init. Called before the child is
    reaped, so the group id cannot have been recycled."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _PhaseClock:
    """Deadline bookkeeping: phases only move forward, each once, each with its own limit."""

    def __init__(self, limits: dict) -> None:
        self.limits = limits
        self.phase = "compile"
        self.started = time.monotonic()
        self.deadline = self.started + limits["compile"]
        self.hard_deadline = self.started + sum(limits.values()) + 30
        self.walls: dict = {}
        self.is_finishing = False

    def advance(self, phase: str) -> None:
        order = channel.PHASES
        if order.index(phase) <= order.index(self.phase):
            raise channel.ProtocolError(f"phase {phase!r} after {self.phase!r}")
        now = time.monotonic()
        self.walls[self.phase] = round(now - self.started, 3)
        self.phase, self.started = phase, now
        self.deadline = min(now + self.limits[phase], self.hard_deadline)

    def finishing(self) -> None:
        """The child reported its last result: allow only a short grace period for exit."""
        self.is_finishing = True
        self.deadline = min(self.deadline, time.monotonic() + EXIT_GRACE_S)

    def close(self) -> None:
        self.walls[self.phase] = round(time.monotonic() - self.started, 3)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def run_child(job_path: str, private_dir: str, env: dict, limits: dict,
              conf: Confinement | None = None) -> ChildOutcome:
    """Run one sandboxed job to completion, timeout or crash. Never raises for child behaviour."""
    read_fd, write_fd = os.pipe()
    outcome = ChildOutcome()
    with open(os.path.join(private_dir, "stdout.txt"), "w+b") as out, \
            open(os.path.join(private_dir, "stderr.txt"), "w+b") as err:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "workers.evaluation.runner", "--fd", str(write_fd), "--job", job_path],
                cwd=private_dir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                pass_fds=(write_fd,), start_new_session=True, close_fds=True,
            )
        finally:
            os.close(write_fd)
        try:
            _pump(proc, read_fd, outcome, limits)
        finally:
            os.close(read_fd)
            if proc.poll() is None:
                try:
                    proc.wait(timeout=EXIT_GRACE_S if not outcome.timed_out else 0.1)
                except subprocess.TimeoutExpired:
                    pass
            kill_tree(proc)
            if conf is not None:
                conf.kill()  # descendants that left the process group and the PID namespace
            proc.wait()
        _record_exit(proc, outcome)
        outcome.stdout_tail = _tail(out)
        outcome.stderr_tail = _tail(err)
    return outcome


def _pump(proc: subprocess.Popen, read_fd: int, outcome: ChildOutcome, limits: dict) -> None:
    clock = _PhaseClock(limits)
    buffer = channel.MessageBuffer()
    try:
        while True:
            remaining = clock.remaining()
            if remaining <= 0:
                # after "done", a leftover descendant holding the pipe is not the candidate's timeout
                outcome.timed_out = not clock.is_finishing
                kill_tree(proc)
                break
            ready, _, _ = select.select([read_fd], [], [], min(remaining, 1.0))
            if not ready:
                continue
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break  # every writer closed: the child and its descendants are gone
            for raw in buffer.feed(chunk):
                message = channel.validate(raw)
                if message["type"] == "phase":
                    clock.advance(message["phase"])
                elif message["type"] == "done":
                    clock.finishing()
                outcome.messages.append(message)
                if len(outcome.messages) > 100_000:
                    raise channel.ProtocolError("too many messages")
    except channel.ProtocolError as exc:
        outcome.protocol_error = str(exc)
        kill_tree(proc)
    clock.close()
    outcome.phase = clock.phase
    outcome.phase_wall_s = clock.walls


def _record_exit(proc: subprocess.Popen, outcome: ChildOutcome) -> None:
    # With a PID namespace the monitor reports the child's status as the last message;
    # without one the child is the process itself and only its return code counts.
    hello = outcome.first("hello")
    exits = outcome.of_type("exit")
    monitor_report = exits[-1] if exits and hello and hello["pidns"] else None
    if monitor_report is not None:
        outcome.exit_code = monitor_report["code"]
        outcome.exit_signal = monitor_report["signal"]
    elif proc.returncode is not None and proc.returncode < 0:
        outcome.exit_signal = -proc.returncode
    else:
        outcome.exit_code = proc.returncode


def signal_name(signum: int | None) -> str:
    if signum is None:
        return ""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
