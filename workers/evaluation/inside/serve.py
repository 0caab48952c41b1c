"""One sandboxed child, reference or candidate: set up the model, then serve the parent.

    job       -> set up (import, build requests, init) -> ready
    make      -> (reference, CPU) generate a batch's inputs into a memfd -> made
    arena     -> (CPU) map and populate the shared memory later batches' inputs arrive in -> mapped
    go        -> take the batch's inputs (on the CPU, from the arena the parent has just filled;
                 generated on the GPU from the seeds just revealed),
                 call forward() on each, synchronise -> computed, with where the outputs are
                 (CPU: the parent reads them from this process's memory while it is frozen) or
                 their checksums (GPU)
    store     -> (GPU) write the chosen byte ranges of the outputs into the parent's memfd -> stored
    finish    -> finished (the candidate's own account of its kernels), then exit

Every request carries a nonce that the reply echoes. The reference child's phase times are
trusted (it runs the problem's own code); the candidate's are ignored by the parent.
"""
from __future__ import annotations

import os
import sys
import time
import traceback

from .. import wire
from . import inputs, outputs, problem

MAX_TEXT = 4000
OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "std::bad_alloc")


class Child:
    def __init__(self, channel) -> None:
        self.channel = channel
        self.job: dict = {}
        self.phase = "import"
        self.model = None
        self.problem: problem.Problem | None = None
        self.extensions = None
        self.flat: list[list] = []  # the last batch's outputs: per call, per output, uint8 bytes
        self.arena = None  # CPU: the shared memory each batch's inputs arrive in
        self._synchronize = _nothing

    # --- replies --------------------------------------------------------------------------------

    def reply(self, request: wire.Message, header: dict, blob: bytes = b"", fds: tuple[int, ...] = ()) -> None:
        wire.send(self.channel, {**header, "n": request.header.get("n")}, blob, fds)

    def report_error(self, kind: str, exc: BaseException | None, message: str = "") -> None:
        text = message or "".join(traceback.format_exception_only(type(exc), exc)).strip()
        own_code = self.job.get("solution_path") or self.job.get("problem_path", "")
        wire.send(self.channel, {"type": "error", "phase": self.phase, "kind": kind, "message": text[:MAX_TEXT],
                                 "traceback": _traceback(exc, own_code), "oom": _is_oom(exc)})

    # --- set-up ------------------------------------------------------------------------------------

    def setup(self, request: wire.Message) -> None:
        self.job = job = request.header
        clock = _Stopwatch()
        torch = _setup_torch(job)
        clock.lap("torch_import_s")
        if job["device"] == "cuda":
            torch.zeros(1, device="cuda")
            self._synchronize = torch.cuda.synchronize
            clock.lap("cuda_init_s")
        candidate = job["role"] == "candidate"
        self.problem = problem.load(job["problem_path"], keep_model=not candidate)
        init = problem.init_inputs(self.problem, job["init_seed"])
        model_class = self._solution_class() if candidate else self.problem.model_class
        if model_class is None:
            return
        clock.lap("import_s")
        self.phase = "init"
        torch.manual_seed(job["init_seed"])  # Model and ModelNew draw their weights alike
        model = model_class(*init)
        self.model = model.to(job["device"]) if isinstance(model, torch.nn.Module) else model
        self._synchronize()
        clock.lap("init_s")
        self.reply(request, {"type": "ready", "times": clock.laps, "pid": os.getpid()})

    def _solution_class(self):
        from .extensions import Extensions
        self.extensions = Extensions(self.channel)
        self.extensions.install(self.job["use_triton"])
        module = _load_module(self.job["solution_path"], "solution")
        model_class = getattr(module, "ModelNew", None)
        if not isinstance(model_class, type):
            self.report_error("invalid_solution", None, "the solution does not define a class ModelNew")
            return None
        return model_class

    # --- batches -----------------------------------------------------------------------------------

    def make(self, request: wire.Message) -> None:
        calls = [problem.generate(self.problem, seed, "cpu") for seed in request.header["seeds"]]
        fd, template, call_bytes = inputs.pack(calls)
        input_bytes = _tensor_bytes(calls[0])
        del calls  # before answering: this process is frozen the moment it answers
        try:
            self.reply(request, {"type": "made", "template": template, "call_bytes": call_bytes,
                                 "input_bytes": input_bytes}, fds=(fd,))
        finally:
            os.close(fd)

    def go(self, request: wire.Message) -> None:
        self.phase = "run"
        device, chunk, h = self.job["device"], request.header["chunk_bytes"], request.header
        self.flat = []
        started = time.perf_counter()
        if "template" in h:
            calls = inputs.views(self.arena, h["template"], h["call_bytes"], h["calls"], device)
        else:
            calls = [problem.generate(self.problem, seed, device) for seed in h["seeds"]]
        self._synchronize()
        generated = time.perf_counter()
        results = [outputs.normalise(self.model(*args)) for args in calls]
        self._synchronize()
        computed = time.perf_counter()
        header = self._describe(results, chunk)
        # CPU: where the output bytes are (the parent reads them itself, with this process frozen);
        # GPU: checksums of them, taken on the device before this reply (the parent cannot read
        # device memory, so the bytes it is later handed must match these)
        if device == "cpu":
            header["addresses"] = [[flat.data_ptr(), flat.numel()] for call in self.flat for flat in call]
            blob = b""
        else:
            blob = self._checksums(chunk)
        header.update(input_bytes=_tensor_bytes(calls[0]) if calls else 0)
        del calls, results  # inside the window: the process is frozen the moment it answers
        header.update(type="computed", times=[generated - started, computed - generated, time.perf_counter() - computed])
        self.reply(request, header, blob)

    def take_arena(self, request: wire.Message) -> None:
        """A new arena (the first batch's, or one that outgrew the last), mapped and populated
        before any batch uses it (the last one is unmapped once no view of it is left)."""
        self.arena = inputs.map_arena(request.fds[0])
        os.close(request.fds[0])
        self.reply(request, {"type": "mapped"})

    def _describe(self, results: list[list], chunk: int) -> dict:
        """The first call's output signature, the first call that differs from it, and the first
        output that is not a plain dense tensor. Bytes are taken only when all outputs are plain."""
        signature = [_signature(o) for o in results[0]] if results else []
        mismatch = next((i for i, r in enumerate(results) if [_signature(o) for o in r] != signature), None)
        device = self.job["device"]
        invalid = next((p for r in results for i, o in enumerate(r) if (p := outputs.problem_with(i, o, device))), None)
        if mismatch is None and invalid is None:
            self.flat = [[outputs.flat_bytes(o) for o in r] for r in results]
        return {"signature": signature, "mismatch": mismatch, "invalid": invalid}

    def _checksums(self, chunk: int) -> bytes:
        if not self.flat or not self.flat[0]:
            return b""
        return outputs.batch_checksums(self.flat, chunk).cpu().numpy().astype("<i8").tobytes()

    def store(self, request: wire.Message) -> None:
        fd = request.fds[0]
        try:
            for call, output, start, length, offset in request.header["items"]:
                outputs.write_range(fd, self.flat[call][output], start, length, offset)
        finally:
            os.close(fd)
        self.reply(request, {"type": "stored"})

    def finish(self, request: wire.Message) -> None:
        ext = self.extensions
        self.reply(request, {"type": "finished", "kernels_defined": ext.kernels_defined if ext else 0,
                             "launches": ext.launches if ext else 0, "uncounted": bool(ext and ext.uncounted)})


def serve(channel) -> None:
    child = Child(channel)
    job = wire.receive(channel)
    try:
        child.setup(job)
    except BaseException as exc:
        _report_setup_failure(child, exc)
        return
    if child.model is None:
        return
    handlers = {"make": child.make, "go": child.go, "arena": child.take_arena, "store": child.store,
                "finish": child.finish}
    while True:
        request = wire.receive(channel)
        try:
            handlers[request.type](request)
        except BaseException as exc:
            child.report_error("runtime_error", exc)
            return
        if request.type == "finish":
            return


def _report_setup_failure(child: Child, exc: BaseException) -> None:
    from .extensions import CompileError
    if isinstance(exc, CompileError):
        child.report_error("compile_error", exc)
    elif isinstance(exc, SyntaxError) and child.job.get("role") == "candidate":
        child.report_error("compile_error", exc)
    else:
        child.report_error("runtime_error", exc)


# --- helpers -----------------------------------------------------------------------------------------

def _setup_torch(job: dict):
    import torch
    torch.set_num_threads(job["cpu_threads"])
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.set_grad_enabled(False)
    if job["device"] == "cpu":
        _prefer_heap_reuse()
    return torch


def _prefer_heap_reuse() -> None:
    # glibc serves big blocks with fresh mmaps (page faults on every call); a raised mmap
    # threshold (and trim threshold, which setting it freezes) keeps freed blocks for reuse,
    # so a call's cost does not depend on the process's heap layout.
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 512 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _nothing() -> None:
    return None


class _Stopwatch:
    """Where a child's set-up time goes (diagnostics: a candidate's own account proves nothing)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 4)
        self._last = now


def _signature(value) -> list:
    import torch
    if isinstance(value, torch.Tensor):
        return [list(value.shape), str(value.dtype), value.device.type]
    return [[], type(value).__name__, "none"]


def _tensor_bytes(values: list) -> int:
    import torch
    return sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor))


def _load_module(path: str, name: str):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _is_oom(exc: BaseException | None) -> bool:
    if exc is None:
        return False
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return any(marker in str(exc).lower() for marker in OOM_MARKERS)


HARNESS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _traceback(exc: BaseException | None, own_code: str) -> str:
    """Frames inside the child's own program (the solution, or the reference's problem file) and
    the innermost frame outside the harness, with the path shortened to the file's name."""
    if exc is None:
        return ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(HARNESS_DIR)]
    keep = [f for f in frames if own_code and f.filename == own_code]
    if frames and (not keep or keep[-1] is not frames[-1]):
        keep.append(frames[-1])
    text = "".join(traceback.format_list(keep) + traceback.format_exception_only(type(exc), exc))
    return (text.replace(own_code, os.path.basename(own_code)) if own_code else text)[-MAX_TEXT:]
