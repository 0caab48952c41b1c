"""Builds of candidates' extensions, made in a build sandbox and published by the parent alone.

A candidate's load_inline / load call arrives as a request (inside/extensions.py). The
parent validates it, derives the cache key from everything the build depends on — the
sources and every argument, the compiler's identity, torch and CUDA versions, the target
architectures and the exact environment the build runs with — and looks it up in
`<extensions_dir>/<key>/`. On a miss it compiles in a fresh build sandbox (no network, its own
uid, a private output directory, nothing of the candidate's process), checks what came out
(a plain ELF file within a size limit), reads the ATen functions it imports, and publishes it
atomically. Candidates never see the cache: the shared object reaches them as a file
descriptor. A poisoned build can therefore only ever poison its own key, and a failure is
served only to the identical build. A build that did not finish (out of time or memory, or
killed) is the answer's failure like any other, but it is not cached. The build writes
nothing to the host's disk: it works in its own size-limited /tmp and hands the shared object
back as a file descriptor.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace

from . import binary_checks, compile_errors, text, wire
from .sandbox.child import Child, ChildFailed, ChildTimeout, Spec
from .settings import EvalSettings
from .static_checks import has_own_compute

KEY_VERSION = "kturn-build-2"
META = "meta.json"
MAX_SOURCE_BYTES = 4 << 20
MAX_FLAGS = 64
MAX_FLAG_CHARS = 1024
MAX_MODULE_BYTES = 512 << 20
MAX_LOG = 200_000
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
SOURCE_FILE = re.compile(r"[A-Za-z0-9_.-]{1,100}\.(?:cpp|cc|cxx|c|cu|h|hpp|cuh)")
LIST_ARGS = ("cpp_sources", "cuda_sources", "extra_cflags", "extra_cuda_cflags", "extra_ldflags", "extra_include_paths")
BOOL_ARGS = ("with_cuda", "is_python_module", "with_pytorch_error_handling", "no_implicit_headers", "is_standalone")


class BuildRequestError(ValueError):
    """A request the parent will not build (malformed or oversized arguments)."""


@dataclass
class BuildRecord:
    name: str
    key: str = ""
    ok: bool = False
    cached: bool = False
    seconds: float = 0.0
    feedback: str = ""
    log: str = ""
    aten_calls: list[str] = field(default_factory=list)
    own_compute: bool = True
    path: str | None = None          # the published shared object

    def summary(self) -> dict:
        return {"name": self.name, "key": self.key[:16], "ok": self.ok, "cached": self.cached,
                "seconds": round(self.seconds, 3), "aten_calls": self.aten_calls[:20]}


def _strings(value, what: str) -> list[str]:
    items = [value] if isinstance(value, str) else (value or [])
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise BuildRequestError(f"{what} must be a string or a list of strings")
    return list(items)


def validate(kind: str, args: dict) -> dict:
    """The request's arguments, normalised (lists for sources and flags), or BuildRequestError."""
    if kind not in ("inline", "file") or not isinstance(args, dict):
        raise BuildRequestError("unknown build request")
    name = args.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise BuildRequestError(f"extension name {str(name)[:60]!r} must be a Python identifier of at most 100 characters")
    clean: dict = {"name": name}
    for key in LIST_ARGS:
        if key in args:
            clean[key] = _strings(args[key], key)
    for key in ("extra_cflags", "extra_cuda_cflags", "extra_ldflags", "extra_include_paths"):
        flags = clean.get(key, [])
        if len(flags) > MAX_FLAGS or any(len(f) > MAX_FLAG_CHARS for f in flags):
            raise BuildRequestError(f"{key}: at most {MAX_FLAGS} entries of {MAX_FLAG_CHARS} characters")
    for key in BOOL_ARGS:
        if args.get(key) is not None:
            if not isinstance(args[key], bool):
                raise BuildRequestError(f"{key} must be True or False")
            clean[key] = args[key]
    if kind == "inline":
        clean.setdefault("cpp_sources", [])
        functions = args.get("functions")
        if functions is not None:
            names = [functions] if isinstance(functions, str) else list(functions)
            if not all(isinstance(f, str) and NAME.fullmatch(f) for f in names):
                raise BuildRequestError("functions must name C++ functions")
            clean["functions"] = functions if isinstance(functions, dict) else names
    else:
        sources = args.get("sources")
        if not isinstance(sources, list) or not sources or not all(
                isinstance(s, list) and len(s) == 2 and isinstance(s[1], str) and SOURCE_FILE.fullmatch(str(s[0]))
                for s in sources):
            raise BuildRequestError("load() sources must be C++/CUDA files (.cpp, .cu, ...)")
        clean["sources"] = [[s[0], s[1]] for s in sources]
    if len(json.dumps(clean)) > MAX_SOURCE_BYTES:
        raise BuildRequestError(f"the extension's sources exceed {MAX_SOURCE_BYTES >> 20} MB")
    return clean


def source_texts(kind: str, args: dict) -> list[str]:
    if kind == "inline":
        return args.get("cpp_sources", []) + args.get("cuda_sources", [])
    return [s[1] for s in args["sources"]]


class Builder:
    """Serves one candidate's build requests; keeps a record of each for the verdict."""

    def __init__(self, settings: EvalSettings, solution_src: str, toolchain: dict, workdir: str) -> None:
        self.settings = settings
        self.solution_src = solution_src
        self.toolchain = toolchain
        self.workdir = workdir
        self.root = settings.resolved_extensions_dir()
        self.records: list[BuildRecord] = []

    def serve(self, child: Child, message: wire.Message) -> None:
        """Answer a child's build request with the module's descriptor, or a refusal."""
        wire.close_all(message.fds)
        kind, args = message.header.get("kind"), message.header.get("args")
        try:
            if len(self.records) >= self.settings.max_builds:
                raise BuildRequestError(f"more than {self.settings.max_builds} extensions requested")
            args = validate(kind, args)
        except BuildRequestError as error:
            name = args.get("name") if isinstance(args, dict) else None
            self.records.append(BuildRecord(name=text.clean(name or "?", 100), feedback=str(error)))
            child.send({"type": "built", "ok": False})
            return
        record = self.build(kind, args)
        self.records.append(record)
        if not record.ok:
            child.send({"type": "built", "ok": False})
            return
        fd = sealed_copy(record.path)
        try:
            child.send({"type": "built", "ok": True, "module": args["name"]}, fds=(fd,))
        finally:
            os.close(fd)

    def key(self, kind: str, args: dict, environment: dict) -> str:
        material = {"version": KEY_VERSION, "kind": kind, "args": args, "toolchain": self.toolchain,
                    "environment": environment}
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    def build(self, kind: str, args: dict) -> BuildRecord:
        started = time.monotonic()
        environment = build_environment(self.settings)
        key = self.key(kind, args, environment)
        entry = os.path.join(self.root, key)
        os.makedirs(self.root, exist_ok=True)
        with _locked(os.path.join(self.root, key + ".lock")):
            meta, cached = _read_meta(entry), True
            if meta is None:
                cached = False
                meta = self._compile(kind, args, key, environment)
                if "stopped" not in meta:
                    _publish(self.root, key, meta.pop("_module_path", None), meta)
                    _evict(self.root, self.settings.extensions_cache_mb << 20, keep=key)
        record = BuildRecord(name=args["name"], key=key, cached=cached, seconds=time.monotonic() - started,
                             own_compute=has_own_compute(source_texts(kind, args)))
        if "stopped" in meta:
            record.feedback = f"building extension {args['name']} failed: {meta['stopped']}"
        elif meta["ok"]:
            # read from the published file every time: the check may have learned since it was built
            record.ok, record.path = True, os.path.join(entry, meta["file"])
            record.aten_calls = binary_checks.aten_compute_calls(record.path)
        else:
            layout = (compile_errors.layout_for_inline(args.get("cpp_sources", []), args.get("cuda_sources", []),
                                                       bool(args.get("no_implicit_headers"))) if kind == "inline" else [])
            record.feedback, record.log = compile_errors.summarise(meta["log"], layout, self.solution_src)
        return record

    def _compile(self, kind: str, args: dict, key: str, environment: dict) -> dict:
        """Run the build sandbox. The meta to publish; `"stopped"` in it when the build did not
        finish (time, memory, a crash): the answer's fault like any failed build, but not cached,
        since the same sources may build on a later try."""
        settings = replace(self.settings, device="cuda" if self.settings.device == "cuda" else "cpu")
        child = Child(Spec(role="build", settings=settings, workdir=self.workdir, env=environment))
        module_fd, meta = None, None
        try:
            child.start()
            reply, _ = child.request({"type": "job", "kind": kind, "args": args}, "built", self.settings.compile_timeout_s)
            if reply.header.get("ok") and reply.fds:
                module_fd = reply.fds.pop(0)
            else:
                meta = {"ok": False, "log": text.clean(reply.blob.decode(errors="replace"), MAX_LOG)}
            wire.close_all(reply.fds)
        except ChildTimeout:
            meta = {"ok": False, "stopped": f"the build did not finish within {self.settings.compile_timeout_s:g} s"}
        except (ChildFailed, wire.ProtocolError):
            meta = {"ok": False, "stopped": "the build sandbox stopped before the build finished"}
        finally:
            outcome = child.close()
        if outcome.oom_killed:
            meta = {"ok": False, "stopped": f"the build ran out of memory (cap {self.settings.memory_limit_mb} MB)"}
        if meta is not None:
            if module_fd is not None:
                os.close(module_fd)
            return meta
        staged = os.path.join(self.workdir, f"{key}.so")
        try:
            _copy_plain_elf(module_fd, staged)
        except ValueError as error:
            return {"ok": False, "log": str(error)}
        finally:
            os.close(module_fd)
        return {"ok": True, "module": args["name"], "file": f"{args['name']}.so", "_module_path": staged}


def build_environment(settings: EvalSettings) -> dict:
    """The environment every build runs with: part of the key, so two hosts (or two worker
    configurations) never share a build made under different conditions."""
    env = {"PATH": os.pathsep.join(dict.fromkeys([os.path.dirname(sys.executable),
                                                   *os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(os.pathsep)])),
           "MAX_JOBS": str(settings.max_build_jobs)}
    for name in ("CC", "CXX", "CUDA_HOME", "CUDA_PATH", "LD_LIBRARY_PATH"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    if settings.cuda_arch_list:
        env["TORCH_CUDA_ARCH_LIST"] = settings.cuda_arch_list
    return env


@contextlib.contextmanager
def _locked(path: str):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_meta(entry: str) -> dict | None:
    try:
        with open(os.path.join(entry, META)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and isinstance(meta.get("ok"), bool) else None


def _publish(root: str, key: str, module_path: str | None, meta: dict) -> None:
    """Atomically: readers see no entry or a complete one."""
    staging = tempfile.mkdtemp(prefix=f"{key[:16]}.tmp.", dir=root)
    try:
        if module_path is not None:
            shutil.copyfile(module_path, os.path.join(staging, meta["file"]))
        with open(os.path.join(staging, META), "w") as f:
            json.dump(meta, f)
        os.chmod(staging, 0o755)
        os.rename(staging, os.path.join(root, key))
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if _read_meta(os.path.join(root, key)) is None:
            raise


@dataclass(frozen=True)
class CacheEntry:
    """A published build as it travels between hosts: its key, its meta, the module's bytes (None
    for a cached failure)."""
    key: str
    meta: dict
    module: bytes | None


def read_entry(root: str, key: str) -> CacheEntry | None:
    """A published entry of this host's cache; None when there is none (a build that stopped)."""
    entry = os.path.join(root, key)
    meta = _read_meta(entry)
    if meta is None:
        return None
    module = None
    if meta["ok"]:
        try:
            with open(os.path.join(entry, meta["file"]), "rb") as f:
                module = f.read(MAX_MODULE_BYTES + 1)
        except (OSError, KeyError, TypeError):
            return None
    return CacheEntry(key, meta, module)


def install_entry(root: str, entry: CacheEntry) -> bool:
    """Publish a build made on another host under its key, unless this host has it already. The
    same checks as a local build's output: a plain ELF module within the size limit. False when
    the entry is refused."""
    if not re.fullmatch(r"[0-9a-f]{64}", entry.key) or not isinstance(entry.meta.get("ok"), bool):
        return False
    os.makedirs(root, exist_ok=True)
    with _locked(os.path.join(root, entry.key + ".lock")):
        if _read_meta(os.path.join(root, entry.key)) is not None:
            return True
        if not entry.meta["ok"]:
            _publish(root, entry.key, None, {"ok": False, "log": text.clean(str(entry.meta.get("log", "")), MAX_LOG)})
            return True
        name = entry.meta.get("module")
        if not isinstance(name, str) or not NAME.fullmatch(name) or entry.module is None:
            return False
        fd = os.memfd_create("kturn-import", os.MFD_CLOEXEC)
        staged = tempfile.mkdtemp(prefix=f"{entry.key[:16]}.in.", dir=root)
        try:
            with os.fdopen(os.dup(fd), "wb") as f:
                f.write(entry.module[:MAX_MODULE_BYTES + 1])
            _copy_plain_elf(fd, os.path.join(staged, "module.so"))
            _publish(root, entry.key, os.path.join(staged, "module.so"), {"ok": True, "module": name, "file": f"{name}.so"})
        except (ValueError, OSError):
            return False
        finally:
            os.close(fd)
            shutil.rmtree(staged, ignore_errors=True)
    return True


def sealed_copy(path: str) -> int:
    """A memfd holding the published module, sealed against every change: what the candidate gets.
    A descriptor of the cache file itself could be reopened for writing through /proc/self/fd
    by a sandbox that owns it (a worker that is not root), poisoning the cache."""
    fd = os.memfd_create("kturn-module", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    with open(path, "rb") as source, os.fdopen(os.dup(fd), "wb") as target:
        shutil.copyfileobj(source, target, length=1 << 20)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _evict(root: str, limit: int, keep: str) -> None:
    """Keep the cache under `limit` bytes: the least recently published entries go first. (A
    reader holding an entry's module open is unaffected: the file lives on until closed.)"""
    entries = []
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if len(name) == 64 and os.path.isdir(path):
            try:
                files = [os.path.join(path, f) for f in os.listdir(path)]
                entries.append((os.stat(path).st_mtime, sum(os.path.getsize(f) for f in files), path))
            except OSError:
                continue
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= limit:
            break
        if os.path.basename(path) != keep:
            shutil.rmtree(path, ignore_errors=True)
            total -= size


def _copy_plain_elf(fd: int, destination: str) -> None:
    """Copy the build's shared object from its descriptor: a regular ELF file within the size limit."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or not 0 < st.st_size <= MAX_MODULE_BYTES:
        raise ValueError("the build produced no loadable shared object (not a regular file of a sane size)")
    with open(fd, "rb", closefd=False) as source, open(destination, "wb") as target:
        source.seek(0)
        if source.read(4) != b"\x7fELF":
            raise ValueError("the build produced no loadable shared object (not an ELF file)")
        source.seek(0)
        shutil.copyfileobj(source, target, length=1 << 20)
        if target.tell() > MAX_MODULE_BYTES:
            raise ValueError("the build produced a shared object over the size limit")
