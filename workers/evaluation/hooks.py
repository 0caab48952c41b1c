"""Runtime instrumentation installed in the candidate child *before* the solution is
imported: kernel launch counting (C++/CUDA extension functions and Triton launches),
a torch dispatch recorder that sees every ATen op run during forward (including ATen
calls made from inside a C++ extension), and a snapshot of torch/time attributes to
detect monkeypatching however it was spelled."""
from __future__ import annotations

import contextlib
import functools
import threading
import time

# ATen ops that allocate, view, move or describe data without computing results.
ALLOWED_ATEN_OPS = frozenset({
    "empty", "empty_like", "empty_strided", "empty_permuted", "new_empty", "new_empty_strided",
    "zeros", "zeros_like", "new_zeros", "ones", "ones_like", "new_ones", "full", "full_like",
    "new_full", "fill_", "zero_", "view", "_unsafe_view", "reshape", "_reshape_alias", "view_as",
    "t", "transpose", "permute", "expand", "expand_as", "unsqueeze", "squeeze", "select", "slice",
    "narrow", "as_strided", "alias", "detach", "detach_", "lift_fresh", "lift_fresh_copy", "clone",
    "contiguous", "_to_copy", "to", "copy_", "split", "split_with_sizes", "chunk", "unbind",
    "resize_", "set_", "arange", "scalar_tensor", "_local_scalar_dense", "record_stream",
    "is_same_size", "is_pinned", "_pin_memory", "pin_memory", "movedim", "flatten", "unflatten",
    "unfold", "diagonal", "unsafe_split", "sym_size", "sym_stride", "sym_numel",
    "sym_storage_offset", "_has_compatible_shallow_copy_type", "item", "size", "stride", "numel",
    "dim", "is_contiguous", "storage_offset", "_conj", "_neg_view", "resolve_conj", "resolve_neg",
})
COMPUTE_NAMESPACES = ("aten", "prims")


class LaunchCounter:
    def __init__(self) -> None:
        self.launches = 0
        self.kernels_defined = 0
        self._wrapped: set[int] = set()

    def wrap_module(self, module) -> None:
        """Replace each compiled function on an extension module by a counting wrapper."""
        if id(module) in self._wrapped:
            return
        self._wrapped.add(id(module))
        self.kernels_defined += 1
        for name in dir(module):
            fn = getattr(module, name)
            if name.startswith("__") or type(fn).__name__ != "builtin_function_or_method":
                continue
            setattr(module, name, self._counted(fn))

    def _counted(self, fn):
        counter = self

        def counted(*args, **kwargs):
            counter.launches += 1
            return fn(*args, **kwargs)
        counted.__name__ = getattr(fn, "__name__", "kernel")
        counted.__doc__ = getattr(fn, "__doc__", None)
        return counted

    def install_triton(self, recorder: "RecorderProxy") -> bool:
        try:
            from triton.runtime import jit
        except Exception:
            return False
        classes = [jit.JITFunction]
        try:
            from triton.runtime.interpreter import InterpretedFunction
            classes.append(InterpretedFunction)
        except Exception:
            pass
        for cls in classes:
            self._patch_triton_class(cls, recorder)
        return True

    def _patch_triton_class(self, cls, recorder: "RecorderProxy") -> None:
        counter = self
        original_run, original_init = cls.run, cls.__init__

        def run(self, *args, grid, warmup, **kwargs):
            if warmup:
                return original_run(self, *args, grid=grid, warmup=warmup, **kwargs)
            counter.launches += 1
            with recorder.suspended():  # the interpreter's own tensor traffic is not the candidate's
                return original_run(self, *args, grid=grid, warmup=warmup, **kwargs)

        def init(self, *args, **kwargs):
            counter.kernels_defined += 1
            original_init(self, *args, **kwargs)
        cls.run, cls.__init__ = run, init


@functools.lru_cache(maxsize=1)
def _make_recorder_class():
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    low = {torch.float16, torch.bfloat16}

    class ComputeRecorder(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.compute_ops: set[str] = set()
            self.low_precision: set[str] = set()
            self._suspended = 0

        @contextlib.contextmanager
        def suspended(self):
            self._suspended += 1
            try:
                yield
            finally:
                self._suspended -= 1

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if not self._suspended:
                self._record(func, kwargs)
            return func(*args, **kwargs)

        def _record(self, func, kwargs) -> None:
            parts = str(func).split(".")
            namespace, name = parts[0], parts[1] if len(parts) > 1 else parts[0]
            if namespace in COMPUTE_NAMESPACES and name not in ALLOWED_ATEN_OPS and len(self.compute_ops) < 200:
                self.compute_ops.add(f"{namespace}.{name}")
            if kwargs.get("dtype") in low and len(self.low_precision) < 50:
                self.low_precision.add(f"{name}(dtype={kwargs['dtype']})")
    return ComputeRecorder


def new_recorder():
    return _make_recorder_class()()


class RecorderProxy:
    """Lets Triton's patched run() reach whichever recorder is current."""

    def __init__(self) -> None:
        self.current = None

    @contextlib.contextmanager
    def suspended(self):
        if self.current is None:
            yield
        else:
            with self.current.suspended():
                yield


def _snapshot_targets() -> dict:
    import torch
    import torch.nn.functional as F
    targets = {"torch": torch, "torch.Tensor": torch.Tensor, "torch._C.TensorBase": torch._C.TensorBase,
               "torch.nn.functional": F, "torch.nn.Module": torch.nn.Module, "torch.cuda": torch.cuda,
               "torch.utils.cpp_extension": torch.utils.cpp_extension, "time": time}
    if hasattr(torch.cuda, "Event"):
        targets["torch.cuda.Event"] = torch.cuda.Event
    return targets


class AttributeSnapshot:
    """Identity snapshot of callables on torch and time; diff() names whatever was replaced."""

    def __init__(self) -> None:
        self._values = {}
        for prefix, obj in _snapshot_targets().items():
            for name, value in list(vars(obj).items()):
                if callable(value) or isinstance(value, (staticmethod, classmethod, property)):
                    self._values[(prefix, name)] = (obj, value)

    def diff(self) -> list[str]:
        changed = []
        for (prefix, name), (obj, value) in self._values.items():
            if vars(obj).get(name, None) is not value:
                changed.append(f"{prefix}.{name}")
        return sorted(changed)[:500]


def python_thread_count() -> int:
    return threading.active_count()
