"""Content-addressed cache of built torch extensions (runs inside the sandboxed child).

load_inline / cpp_extension.load are wrapped so that every build goes to
<extensions_dir>/<sha256(name, sources, flags, torch version, compiler)>: two candidates
that name their extension alike never share a build directory, identical sources are
built once. Concurrent builds of one hash are serialised by an flock on
<hash>.lock; the build itself happens in a private temp dir that is renamed into place,
so a killed build never leaves a half-written entry. Deterministic compile failures are
cached too (their log), transient ones (OOM-killed compiler) are not.

Permissions, when the harness is root and candidates run as uids of their own (see
sandbox_user.py): the root is root:<sandbox gid>, mode 3770 (group-writable so builds can
be published, sticky so no uid can rename or delete another's entry). A build is made
read-only (a-w) before it is renamed into place, and the parent later seals it (chown to
root) so that a later candidate reusing the builder's uid cannot chmod it writable again.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import stat
import tempfile
import time

from . import compile_errors

META = "kturn-meta.json"
TRANSIENT_FAILURE_MARKERS = ("Killed signal", "out of memory", "virtual memory exhausted",
                             "Cannot allocate memory", "No space left")


class CompileError(RuntimeError):
    def __init__(self, name: str, feedback: str, log: str, cached: bool) -> None:
        super().__init__(f"building extension {name!r} failed:\n{feedback}")
        self.name, self.feedback, self.log, self.cached = name, feedback, log, cached


def ccache_env(root: str) -> dict:
    """Environment that routes c++/g++/gcc/cc (and nvcc) through ccache when it is installed."""
    ccache = shutil.which("ccache")
    if not ccache:
        return {}
    masquerade = os.path.join(root, ".ccache-bin")
    os.makedirs(masquerade, exist_ok=True)
    for compiler in ("c++", "g++", "gcc", "cc"):
        link = os.path.join(masquerade, compiler)
        if not os.path.lexists(link):
            with contextlib.suppress(FileExistsError):
                os.symlink(ccache, link)
    return {"PATH": masquerade + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
            "CCACHE_DIR": os.path.join(root, ".ccache"), "CCACHE_BASEDIR": root,
            "CCACHE_NOHASHDIR": "1", "PYTORCH_NVCC": f"{ccache} nvcc"}


SHARED_SUBDIRS = (".ccache", "triton")


@contextlib.contextmanager
def _locked(path: str):
    # read-only open: a lock file created by another uid (or root) is 0444/0644, and flock
    # does not need write access
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_only_mode(mode: int, is_dir: bool) -> int:
    """Readable (and searchable, for dirs) by every sandbox uid, writable by none."""
    keep = mode & 0o555
    return keep | (0o555 if is_dir else 0o444)


def make_read_only(top: str, owner: tuple[int, int] | None = None) -> None:
    """chmod a-w (and a+r) the tree, children before the top, optionally chown it; the top
    turning read-only is thus the last step and marks the entry sealed."""
    for dirpath, dirnames, filenames in os.walk(top, topdown=False):
        for name in filenames + dirnames:
            _fix(os.path.join(dirpath, name), owner)
    _fix(top, owner)


def _fix(path: str, owner: tuple[int, int] | None) -> None:
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            if owner is not None:
                os.lchown(path, *owner)
            return
        if owner is not None:
            os.chown(path, *owner)
        os.chmod(path, _read_only_mode(st.st_mode, stat.S_ISDIR(st.st_mode)))
    except OSError:
        pass  # sealed by the parent in the meantime, or not ours: the parent repairs it


# --- parent side (root): shared permissions and sealing ----------------------------------------

def share_with(root: str, gid: int | None) -> None:
    """Create the cache root; when root and candidates run unprivileged, open it to their
    group (sticky) and seal/repair every published entry (old root-only 0700 entries too)."""
    os.makedirs(root, exist_ok=True)
    if gid is None or os.geteuid() != 0:
        return
    for path in (root, *(os.path.join(root, d) for d in SHARED_SUBDIRS)):
        os.makedirs(path, exist_ok=True)
        os.chown(path, 0, gid)
        os.chmod(path, 0o3770)
    seal(root)


def _is_entry(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def seal(root: str) -> None:
    """Give every published entry to root, read-only. An entry that is already root's and
    read-only at the top is sealed (the top is done last) and skipped; a non-directory
    under an entry name is not ours to trust and is removed."""
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in filter(_is_entry, names):
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            with contextlib.suppress(OSError):
                os.unlink(path)
        elif not _has_meta(path):  # squatted by a candidate: would block the real build forever
            shutil.rmtree(path, ignore_errors=True)
        elif st.st_uid != 0 or st.st_mode & 0o222 or (st.st_mode & 0o005) != 0o005:
            make_read_only(path, owner=(0, 0))


def _has_meta(directory: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(os.path.join(directory, META)).st_mode)
    except OSError:
        return False


def remove_builds_of(root: str, uid: int) -> None:
    """Temp build dirs a finished candidate left (it was killed mid-build); the sticky root
    stops other uids from removing them, so the parent does."""
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        path = os.path.join(root, name)
        with contextlib.suppress(OSError):
            if ".tmp." in name and os.lstat(path).st_uid == uid:
                shutil.rmtree(path, ignore_errors=True)


def _read_meta(directory: str) -> dict | None:
    try:
        with open(os.path.join(directory, META)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _is_transient(log: str) -> bool:
    return any(marker in log for marker in TRANSIENT_FAILURE_MARKERS)


class ExtensionCache:
    def __init__(self, root: str, compiler_id: str, solution_src: str, on_build=None) -> None:
        self.root = root
        self.compiler_id = compiler_id
        self.solution_src = solution_src
        self.on_build = on_build or (lambda event: None)
        self._loaded: dict[str, object] = {}
        self.builds = 0

    # --- public wrappers (same signatures as torch's) ---------------------------------

    def wrap_load_inline(self, original):
        import inspect
        signature = inspect.signature(original)

        def load_inline(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            a = dict(bound.arguments)
            cpp = [a["cpp_sources"]] if isinstance(a["cpp_sources"], str) else list(a["cpp_sources"] or [])
            cuda = [a["cuda_sources"]] if isinstance(a["cuda_sources"], str) else list(a["cuda_sources"] or [])
            a["cpp_sources"], a["cuda_sources"] = cpp, cuda
            if not a.get("is_python_module", True):
                return original(**{**a, "build_directory": self._private_dir()})
            layout = compile_errors.layout_for_inline(cpp, cuda, bool(a.get("no_implicit_headers")))
            key = self._key("inline", a)

            def build(directory):
                return original(**{**a, "cpp_sources": list(cpp), "cuda_sources": list(cuda),
                                   "build_directory": directory, "verbose": False})
            return self._cached_build(key, a["name"], build, layout, cpp + cuda)

        return load_inline

    def wrap_load(self, original):
        import inspect
        signature = inspect.signature(original)

        def load(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            a = dict(bound.arguments)
            sources = [a["sources"]] if isinstance(a["sources"], str) else list(a["sources"])
            if not a.get("is_python_module", True) or a.get("is_standalone"):
                return original(**{**a, "build_directory": self._private_dir()})
            contents = []
            for path in sources:
                with open(path, errors="replace") as f:
                    contents.append(f.read())
            key = self._key("file", {**a, "sources": contents})
            sources = [os.path.abspath(p) for p in sources]

            def build(directory):
                return original(**{**a, "sources": sources, "build_directory": directory, "verbose": False})
            return self._cached_build(key, a["name"], build, [], contents)

        return load

    # --- internals -------------------------------------------------------------------------

    def _private_dir(self) -> str:
        return tempfile.mkdtemp(prefix="ext-", dir=os.environ.get("TMPDIR"))

    def _key(self, kind: str, args: dict) -> str:
        import torch
        material = {k: v for k, v in args.items() if k not in ("build_directory", "verbose", "keep_intermediates")}
        material.update(kind=kind, torch=torch.__version__, torch_cuda=torch.version.cuda,
                        compiler=self.compiler_id, machine=platform.machine(),
                        arch_list=os.environ.get("TORCH_CUDA_ARCH_LIST", ""))
        blob = json.dumps(material, sort_keys=True, default=repr).encode()
        return hashlib.sha256(blob).hexdigest()

    def _cached_build(self, key: str, name: str, build, layout: list, sources: list[str]):
        if key in self._loaded:
            return self._loaded[key]
        os.makedirs(self.root, exist_ok=True)
        final = os.path.join(self.root, key)
        started = time.monotonic()
        module = None
        with _locked(os.path.join(self.root, key + ".lock")):
            meta = _read_meta(final)
            cached = meta is not None
            if meta is None:
                self._remove_stale_builds(key)
                module, meta = self._build_into_place(key, build, final)
        self.builds += 1
        if not meta["ok"]:
            feedback, log = compile_errors.summarise(meta["log"], layout, self.solution_src)
            self._emit(name, cached, False, started, sources)
            raise CompileError(name, feedback, log, cached)
        if module is None:
            module = self._load_built(meta, final)
        self._emit(name, cached, True, started, sources)
        self._loaded[key] = module
        return module

    def _remove_stale_builds(self, key: str) -> None:
        """Temp dirs of this key left by a build that was killed (we hold the key's lock)."""
        prefix = key[:16] + ".tmp."
        for name in os.listdir(self.root):
            if name.startswith(prefix):
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)

    def _load_built(self, meta: dict, directory: str):
        from torch.utils.cpp_extension import _import_module_from_library
        return _import_module_from_library(meta["module_name"], directory, True)

    def _build_into_place(self, key: str, build, final: str):
        tmp = tempfile.mkdtemp(prefix=key[:16] + ".tmp.", dir=self.root)
        try:
            module = build(tmp)
            meta = {"ok": True, "module_name": module.__name__, "file": os.path.basename(module.__file__)}
        except (RuntimeError, OSError, ImportError) as exc:
            log = str(exc)
            if "Error building extension" not in log or _is_transient(log):
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            module, meta = None, {"ok": False, "log": log[-200_000:]}
        with open(os.path.join(tmp, META), "w") as f:
            json.dump(meta, f)
        make_read_only(tmp)  # before publishing: no later candidate of another uid may overwrite it
        os.rename(tmp, final)  # atomic: readers see nothing or a complete entry
        return module, meta

    def _emit(self, name: str, cached: bool, ok: bool, started: float, sources: list[str]) -> None:
        from .static_checks import cpp_compute_calls
        calls = sorted({c for s in sources for c in cpp_compute_calls(s)})
        self.on_build({"type": "build", "name": str(name)[:200], "cached": cached, "ok": ok,
                       "seconds": round(time.monotonic() - started, 3), "torch_calls": calls[:100]})
