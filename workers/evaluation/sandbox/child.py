"""A sandboxed child as the parent sees it: started through the launcher (control groups,
resource limits) and bubblewrap (namespaces, its own filesystem view), spoken to over the
wire with a deadline on every reply, and killed with everything it started.

Every request carries a fresh nonce the reply must echo, and the channel must be silent
before a request is sent: a message the child wrote ahead of time is a protocol violation,
not an answer.
"""
from __future__ import annotations

import os
import secrets
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import text, wire
from ..settings import EvalSettings
from . import bwrap, cgroups, memory, users

LAUNCHER = str(Path(__file__).with_name("launcher.py"))
PASSTHROUGH_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "CUDA_HOME", "CUDA_PATH", "CUDA_VISIBLE_DEVICES",
                   "CUDA_MODULE_LOADING", "LD_LIBRARY_PATH", "CC", "CXX", "TRITON_PTXAS_PATH", "TRITON_LIBCUDA_PATH")
MAX_MESSAGES = 20_000
TAIL_BYTES = 4096
EXIT_GRACE_S = 5.0


class ChildFailed(Exception):
    """The child reported a failure of its own (an error message)."""

    def __init__(self, header: dict) -> None:
        super().__init__(header.get("message", ""))
        self.header = header


class ChildTimeout(Exception):
    """No reply before the deadline."""


@dataclass
class Exit:
    code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    peak_bytes: int | None = None
    stderr_tail: str = ""
    stdout_tail: str = ""


@dataclass
class Spec:
    """What to start: a role ("reference", "candidate" or "build"), where, with what."""
    role: str
    settings: EvalSettings
    workdir: str
    files: dict[str, str] = field(default_factory=dict)     # sandbox path -> host file
    writable: dict[str, str] = field(default_factory=dict)  # sandbox path -> host directory
    env: dict[str, str] = field(default_factory=dict)


def is_root() -> bool:
    return os.geteuid() == 0


class Child:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.group: cgroups.Group | None = None
        self.isolation = bwrap.probe(spec.settings.device, is_root())  # None: bwrap works here
        self.user = users.acquire(spec.settings.sandbox_uid, spec.settings.sandbox_uid_pool)
        if self.user is not None and self.isolation is not None and not _reachable_by_others(bwrap.readable_paths()):
            # without a sandbox the child sees the host's files as they are: an interpreter under a
            # root-only directory could not be started as another uid
            self.user.release()
            self.user = None
        self.proc: subprocess.Popen | None = None
        self.sock = None
        self.messages = 0
        self.closed: Exit | None = None
        self.inner_pid: int | None = None  # what the child calls itself in its PID namespace
        self.held: set[int] | None = None   # stopped: by SIGSTOP (these pids) or the freezer
        self.frozen_whole = False           # held by the cgroup freezer, the child in its group
        self.facts: dict = {}

    # --- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        settings = self.spec.settings
        cpus = settings.max_build_jobs if self.spec.role == "build" else settings.cpu_threads
        self.group = cgroups.create(settings.max_processes, settings.memory_limit_mb << 20, cpus)
        parent_end, child_end = wire.channel_pair()
        self.sock = parent_end
        inner = [sys.executable, "-s", "-m", "workers.evaluation.inside", "--channel", str(child_end.fileno())]
        if self.user is not None:
            inner += ["--uid", str(self.user.uid), "--gid", str(self.user.gid)]
        if self.spec.role == "build":
            inner.append("--build")
        sandboxed = self.isolation is None
        argv = bwrap.command(self._view(), inner, is_root()) if sandboxed else inner
        config = {"cgroup_procs": self.group.procs_files if self.group else [], "limits": self._rlimits(), "argv": argv}
        out = open(os.path.join(self.spec.workdir, f"{self.spec.role}.stdout"), "w+b")
        err = open(os.path.join(self.spec.workdir, f"{self.spec.role}.stderr"), "w+b")
        self._streams = (out, err)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", LAUNCHER, __import__("json").dumps(config)],
                cwd=self.spec.workdir if not sandboxed else "/", env=self._environment(sandboxed),
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, pass_fds=(child_end.fileno(),),
                start_new_session=True)
        finally:
            child_end.close()
        self.facts = self._describe(sandboxed)

    def path_for(self, dest: str) -> str:
        """Where the child finds a file handed over at `dest` (its host path without a sandbox)."""
        return dest if self.isolation is None else self.spec.files.get(dest, self.spec.writable.get(dest, dest))

    def _view(self) -> bwrap.View:
        return bwrap.View(device=self.spec.settings.device, files=self.spec.files, writable=self.spec.writable,
                          tmp_mb=self.spec.settings.tmp_mb)

    def _rlimits(self) -> dict:
        s = self.spec.settings
        memory_capped = bool(self.group and ("memory.max" in self.group.caps or "memory.limit_in_bytes" in self.group.caps))
        return {"as_bytes": s.memory_limit_mb << 20 if s.device == "cpu" and not memory_capped else None,
                "cpu_s": int((s.compile_timeout_s + 4 * s.run_timeout_s) * max(1, s.cpu_threads) + 60),
                # a batch's inputs are one file (a memfd): whatever fits in memory must fit in a file
                "fsize_bytes": max(s.max_file_mb, s.memory_limit_mb) << 20,
                "nproc": None if self.group else s.max_processes}

    def _environment(self, sandboxed: bool) -> dict:
        s = self.spec.settings
        tmp = "/tmp" if sandboxed else self._private_tmp()
        env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        threads = str(s.cpu_threads)
        env.update({
            "HOME": tmp, "TMPDIR": tmp, "USER": "kturn", "LOGNAME": "kturn",
            "PYTHONPATH": os.pathsep.join(python_path()), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1",
            "PYTHONUNBUFFERED": "1", "PYTHONHASHSEED": "0",
            "TORCH_EXTENSIONS_DIR": f"{tmp}/torch_extensions", "TORCHINDUCTOR_CACHE_DIR": f"{tmp}/inductor",
            "TRITON_CACHE_DIR": f"{tmp}/triton", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads, "MAX_JOBS": str(s.max_build_jobs),
            # names the evaluating process, so a leftover can be traced to the evaluation that made it
            "KTURN_SANDBOX": f"{os.getpid()}-{self.spec.role}-{secrets.token_hex(6)}",
        })
        if s.cuda_arch_list:
            env["TORCH_CUDA_ARCH_LIST"] = s.cuda_arch_list
        if s.backend == "triton" and s.device == "cpu":
            env["TRITON_INTERPRET"] = "1"
        env.update(self.spec.env)
        return env

    def _private_tmp(self) -> str:
        path = os.path.join(self.spec.workdir, f"{self.spec.role}-tmp")
        os.makedirs(path, exist_ok=True)
        if self.user is not None:
            os.chown(path, self.user.uid, self.user.gid)
        return path

    def _describe(self, sandboxed: bool) -> dict:
        """What confinement took effect, as the parent set it up (fingerprint fields)."""
        caps = self.group.describe() if self.group else {}
        memory = caps.get("memory.max", caps.get("memory.limit_in_bytes"))
        return {
            "sandbox": "bwrap" if sandboxed else "none",
            "sandbox_unavailable": self.isolation,
            "filesystem_isolated": sandboxed, "network_isolated": sandboxed, "pid_namespace": sandboxed,
            "private_proc": sandboxed,
            "process_cap": f"cgroup-{self.group.version}" if self.group else "rlimit",
            "cpu_quota": bool(caps.get("cpu.max") or caps.get("cpu.cfs_quota_us")),
            "cpu_cores": caps.get("cpuset.cpus"),
            "memory_cap": (f"cgroup-{self.group.version}" if memory else
                           ("rlimit-as" if self.spec.settings.device == "cpu" else None)),
            "memory_limit_mb": self.spec.settings.memory_limit_mb if memory or self.spec.settings.device == "cpu" else None,
            "sandbox_uid": self.user.uid if self.user else (os.geteuid() if not is_root() else 0),
            "gpu_nodes": bwrap.gpu_nodes() if sandboxed and self.spec.settings.device == "cuda" else [],
        }

    def close(self) -> Exit:
        """Wait briefly, kill whatever is left (process group, then control group), reap.
        Closing again returns the same account."""
        if self.closed is not None:
            return self.closed
        self.release()  # a frozen process would not even die
        result = self.closed = Exit()
        if self.sock is not None:
            self.sock.close()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=EXIT_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            self.kill()
            self.proc.wait()
            result.code, result.signal = _exit_status(self.proc.returncode)
        if self.group is not None:
            result.oom_killed, result.peak_bytes = self.group.oom_killed(), self.group.peak_bytes()
            self.group.remove()
        if self.user is not None:
            self.user.release()
        out, err = getattr(self, "_streams", (None, None))
        if out is not None:
            result.stdout_tail, result.stderr_tail = _tail(out), _tail(err)
            out.close()
            err.close()
        return result

    # --- reading a frozen child's memory -----------------------------------------------------------

    def host_pid(self) -> int | None:
        if self.proc is None:
            return None
        if self.isolation is not None:  # no sandbox: the launcher exec'd the child itself
            return self.proc.pid
        family = self.group.members() if self.group else _descendants(self.proc.pid)
        return memory.host_pid(family, self.inner_pid) if self.inner_pid else None

    def _hold(self) -> None:
        """Stop every process of the child where it stands (cgroup freezer, else SIGSTOP), so that
        nothing it runs can change its memory while the parent reads it."""
        if self.held is not None:
            return
        group = self.group
        if group is not None and group.can_freeze:
            # every process of the child, those it starts included, stays stopped until released
            # (processes stopped by signals could set each other going: `frozen_whole` says which)
            if group.freeze() and group.freezes_anyone():
                self.held, self.frozen_whole = set(), True
                return
            group.thaw()  # a freeze that did not take must not take later
        self.held = group.members() if group else _descendants(self.proc.pid)
        _signal_all(self.held, signal.SIGSTOP)
        _wait_stopped(self.held)

    def release(self) -> None:
        if self.held is None:
            return
        if self.frozen_whole:
            self.group.thaw()
        else:
            _signal_all(self.held, signal.SIGCONT)
        self.held, self.frozen_whole = None, False

    def read(self, address: int, length: int) -> bytes:
        pid = self.host_pid()
        if pid is None:
            raise OSError("the child's process could not be found")
        return memory.read(pid, address, length)

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.group is not None:
            self.group.kill()

    # --- the conversation ---------------------------------------------------------------------------

    def request(self, header: dict, reply: str, timeout: float, fds: tuple[int, ...] = (),
                serve=None, hold: bool = False, serve_allowance: float = 0.0, inside=None) -> tuple[wire.Message, float]:
        """Send a request; return the reply of type `reply` and the seconds between sending and
        receiving it on the parent's clock. `serve(message)` answers requests the child makes
        meanwhile (build requests). With `hold`, the child is frozen the moment its reply arrives,
        before it is even read, and stays frozen until release() or the next request. The time
        the parent spends serving is added to `timeout`, up to `serve_allowance` seconds (a build
        is the parent's work, bounded by its own limit). `inside()` is work of the parent's own
        done after the clock starts, before the request goes. Raises ChildFailed, ChildTimeout,
        wire.PeerClosed or wire.ProtocolError, and whatever `inside()` raises."""
        return self.await_reply(self.send_request(header, fds, inside), reply, timeout, serve, hold, serve_allowance)

    def send_request(self, header: dict, fds: tuple[int, ...] = (), inside=None) -> tuple[int, float]:
        """Send a request without waiting (await_reply takes what this returns)."""
        self._expect_silence()
        nonce = secrets.randbits(62)
        sent = time.perf_counter()  # before the thaw and the send: all the child does after them is charged
        if inside is not None:
            inside()
        self.release()
        try:
            wire.send(self.sock, {**header, "n": nonce}, fds=fds)
        except OSError as error:  # the child is gone (or closed its end)
            raise wire.PeerClosed(str(error)) from None
        return nonce, sent

    def await_reply(self, sent_request: tuple[int, float], reply: str, timeout: float,
                    serve=None, hold: bool = False, serve_allowance: float = 0.0) -> tuple[wire.Message, float]:
        nonce, sent = sent_request
        deadline = time.monotonic() + timeout
        while True:
            self._wait_readable(deadline)
            received = time.perf_counter()
            if hold:
                self._hold()
            message = self._next_message()
            if message.type == "error":
                raise ChildFailed(text.clean_tree(message.header, 8000))
            if message.type == "build" and serve is not None:
                self.release()
                started = time.monotonic()
                serve(message)
                extra = min(time.monotonic() - started, serve_allowance)
                deadline, serve_allowance = deadline + extra, serve_allowance - extra
                continue
            if message.type != reply or message.header.get("n") != nonce:
                wire.close_all(message.fds)
                raise wire.ProtocolError(f"expected {reply!r}, got {text.clean(message.type, 40)!r}")
            return message, received - sent

    def _expect_silence(self) -> None:
        if select.select([self.sock], [], [], 0)[0]:
            message = self._next_message()
            wire.close_all(message.fds)
            if message.type == "error":
                raise ChildFailed(text.clean_tree(message.header, 8000))
            raise wire.ProtocolError(f"unrequested {text.clean(message.type, 40)!r} message")

    def _wait_readable(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([self.sock], [], [], remaining)[0]:
            raise ChildTimeout()

    def _next_message(self) -> wire.Message:
        self.messages += 1
        if self.messages > MAX_MESSAGES:
            raise wire.ProtocolError("too many messages")
        return wire.receive(self.sock)

    def send(self, header: dict, fds: tuple[int, ...] = ()) -> None:
        """A reply to a request the child made (a build result)."""
        try:
            wire.send(self.sock, header, fds=fds)
        except OSError as error:
            raise wire.PeerClosed(str(error)) from None


def _descendants(root: int) -> set[int]:
    """root and every process below it, from /proc (for hosts without a control group)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    family, grew = {root}, True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in family and pid not in family:
                family.add(pid)
                grew = True
    return family


def _signal_all(pids: set[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_stopped(pids: set[int], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                break
            if state in ("T", "t", "Z", "X"):
                break
            time.sleep(0.0005)


def _reachable_by_others(paths: list[str]) -> bool:
    """Whether every directory on the way to these paths lets other uids pass."""
    for path in paths:
        current = "/"
        for part in Path(path).parts[1:]:
            current = os.path.join(current, part)
            try:
                st = os.stat(current)
            except OSError:
                return False
            if os.path.isdir(current) and not st.st_mode & 0o001:
                return False
    return True


def python_path() -> list[str]:
    """The child's import path: the harness root, then the worker's own PYTHONPATH entries."""
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.isdir(p)]
    return list(dict.fromkeys([str(bwrap.HARNESS_ROOT), *extra]))


def _exit_status(returncode: int | None) -> tuple[int | None, int | None]:
    """(exit code, signal). bwrap exits with 128 + N when the sandboxed process died of signal N."""
    if returncode is None:
        return None, None
    if returncode < 0:
        return None, -returncode
    if 128 < returncode <= 128 + 64:
        return None, returncode - 128
    return returncode, None


def _tail(f) -> str:
    """Read through the handle the child was given, never by path."""
    try:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - TAIL_BYTES))
        return text.clean(f.read().decode(errors="replace"), TAIL_BYTES)
    except OSError:
        return ""


def signal_name(signum: int | None) -> str:
    if signum is None:
        return ""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
