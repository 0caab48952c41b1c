"""torch.utils.cpp_extension.load_inline / load, answered by the parent.

The candidate never compiles anything itself: its call is sent to the parent as a build
request (sources and flags); the parent builds it in a build sandbox of its own (or finds the
build in its cache), inspects the result and hands back a descriptor of the shared object,
which is loaded from /proc/self/fd. What is counted here (kernels defined, launches) is the
candidate's own account: the parent uses it only against the candidate (a kernel never
launched), never to pay it.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import inspect
import os

from .. import wire

# Build arguments that change what is built; the rest (build_directory, verbose, ...) do not.
INLINE_ARGS = ("name", "cpp_sources", "cuda_sources", "functions", "extra_cflags", "extra_cuda_cflags",
               "extra_ldflags", "extra_include_paths", "with_cuda", "is_python_module",
               "with_pytorch_error_handling", "no_implicit_headers")
FILE_ARGS = ("name", "extra_cflags", "extra_cuda_cflags", "extra_ldflags", "extra_include_paths",
             "with_cuda", "is_python_module", "is_standalone")


class CompileError(RuntimeError):
    """A build the parent reports as failed (the parent has the log; this is only the signal)."""


class Extensions:
    def __init__(self, channel) -> None:
        self.channel = channel
        self.kernels_defined = 0
        self.launches = 0
        self.uncounted = False  # operator libraries (torch.ops) cannot be counted here
        self._wrapped: set[int] = set()

    def install(self, use_triton: bool) -> None:
        import torch.utils.cpp_extension as cpp_extension
        inline, load = cpp_extension.load_inline, cpp_extension.load
        cpp_extension.load_inline = self._replacement("inline", inline, INLINE_ARGS)
        cpp_extension.load = self._replacement("file", load, FILE_ARGS)
        if use_triton:
            self._count_triton()

    def _replacement(self, kind: str, original, keep: tuple[str, ...]):
        signature = inspect.signature(original)

        def build(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            request = {k: _plain(bound.arguments.get(k)) for k in keep}
            if kind == "file":
                request["sources"] = _read_sources(bound.arguments["sources"])
            return self._load(kind, request)
        build.__name__ = original.__name__
        return build

    def _load(self, kind: str, request: dict):
        wire.send(self.channel, {"type": "build", "kind": kind, "args": request})
        reply = wire.receive(self.channel)
        if reply.type != "built" or not reply.header.get("ok") or not reply.fds:
            wire.close_all(reply.fds)
            raise CompileError(f"building extension {request.get('name')!r} failed (the build log is "
                               "in the evaluation's feedback)")
        path = f"/proc/self/fd/{reply.fds[0]}"
        self.kernels_defined += 1
        if not request.get("is_python_module", True):
            import torch
            torch.ops.load_library(path)
            self.uncounted = True
            return path
        name = reply.header["module"]
        loader = importlib.machinery.ExtensionFileLoader(name, path)
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
        loader.exec_module(module)
        self._count_calls(module)
        return module

    def _count_calls(self, module) -> None:
        if id(module) in self._wrapped:
            return
        self._wrapped.add(id(module))
        for name in dir(module):
            fn = getattr(module, name)
            if not name.startswith("__") and type(fn).__name__ == "builtin_function_or_method":
                setattr(module, name, self._counted(fn))
            elif isinstance(fn, type) and type(fn).__name__ == "pybind11_type":
                self._count_methods(fn)

    def _count_methods(self, cls) -> None:
        """The methods of a class the extension binds (a kernel kept on a C++ object)."""
        for name, method in list(vars(cls).items()):
            if not name.startswith("__") and type(method).__name__ == "instancemethod":
                setattr(cls, name, self._counted(method.__func__))

    def _counted(self, fn):
        extensions = self

        def counted(*args, **kwargs):
            extensions.launches += 1
            return fn(*args, **kwargs)
        counted.__name__, counted.__doc__ = getattr(fn, "__name__", "kernel"), getattr(fn, "__doc__", None)
        return counted

    def _count_triton(self) -> None:
        try:
            from triton.runtime import jit
        except Exception:
            return
        classes = [jit.JITFunction]
        try:
            from triton.runtime.interpreter import InterpretedFunction
            classes.append(InterpretedFunction)
        except Exception:
            pass
        for cls in classes:
            self._patch_triton(cls)

    def _patch_triton(self, cls) -> None:
        extensions, original_run, original_init = self, cls.run, cls.__init__

        def run(self, *args, **kwargs):
            if not kwargs.get("warmup"):
                extensions.launches += 1
            return original_run(self, *args, **kwargs)

        def init(self, *args, **kwargs):
            extensions.kernels_defined += 1
            original_init(self, *args, **kwargs)
        cls.run, cls.__init__ = run, init


def _plain(value):
    """JSON-safe build arguments (strings, numbers, lists, dicts of those); anything else is refused."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"build arguments must be strings, numbers and lists, not {type(value).__name__}")


def _read_sources(sources) -> list[list[str]]:
    """[[file name, contents], ...] of cpp_extension.load's source files."""
    paths = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    found = []
    for path in paths:
        with open(path, errors="replace") as f:
            found.append([os.path.basename(os.fspath(path)), f.read()])
    return found
