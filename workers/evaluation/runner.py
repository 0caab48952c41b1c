"""Code that runs inside a sandboxed child:

    python -m workers.evaluation.runner --fd N --job JOB.json

role "reference": import the reference problem, generate inputs from the parent's secret
seeds, compute reference outputs (and optionally the baseline timing). The reference
module never exists in a candidate process.

role "candidate": load the inputs prepared by the reference child (then delete the files),
install the instrumentation, import the solution, run the correctness trials under a
dispatch recorder, then the timing trials (launches counted per call, the harness's own
globals checked before and after), then one check trial on inputs whose output only the
parent knows ("verify" phase). Outputs go to files; verdicts are made by the parent, which
also holds the reference outputs (the reference child computes the check trial's too).

Nothing here may import torch before isolation.enter() has run.
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import os
import sys
import traceback

from . import channel, isolation

POISON_BYTES = (0xFF, 0x41)  # fp32: NaN, then 12.078; uninitialised outputs differ between runs
OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "std::bad_alloc")
MAX_TRACEBACK = 2000


class Reporter:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self, message: dict) -> None:
        channel.send(self.fd, message)

    def phase(self, name: str) -> None:
        self({"type": "phase", "phase": name})

    def error(self, phase: str, kind: str, exc: BaseException | None, message: str = "",
              compile_info: dict | None = None, solution_path: str = "") -> None:
        text = message or _exception_line(exc)
        tb = _solution_traceback(exc, solution_path) if exc is not None else ""
        self({"type": "error", "phase": phase, "kind": kind, "message": text[:MAX_TRACEBACK],
              "traceback": tb, "oom": _is_oom(exc), "compile": compile_info})


def _exception_line(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[:MAX_TRACEBACK]


def _is_oom(exc: BaseException | None) -> bool:
    if exc is None:
        return False
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return any(marker in str(exc).lower() for marker in OOM_MARKERS)


HARNESS_DIR = os.path.dirname(os.path.abspath(__file__))


def _solution_traceback(exc: BaseException, solution_path: str) -> str:
    """Frames inside solution.py (and the innermost non-harness frame), with the path shortened."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(HARNESS_DIR)]
    keep = [f for f in frames if solution_path and f.filename == solution_path]
    if frames and (not keep or keep[-1] is not frames[-1]):
        keep.append(frames[-1])
    lines = traceback.format_list(keep) + traceback.format_exception_only(type(exc), exc)
    text = "".join(lines).replace(solution_path, "solution.py") if solution_path else "".join(lines)
    return text[-MAX_TRACEBACK:]


# --- shared helpers (torch is imported by now) -------------------------------------------

def _setup_torch(job: dict):
    import torch
    torch.set_num_threads(job["cpu_threads"])
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.set_grad_enabled(False)
    if job["device"] == "cpu":
        _prefer_heap_reuse()  # in both roles: allocation cost is part of what is timed
    from . import timing
    timing.bind_device_api()
    return torch


def _to_device(values: list, device: str) -> list:
    import torch
    return [v.to(device=device, copy=True) if isinstance(v, torch.Tensor) else v for v in values]


def _synchronize(device: str) -> None:
    if device == "cuda":
        import torch
        torch.cuda.synchronize()


def _same_bits(a, b) -> bool:
    import torch
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = a.detach().cpu().contiguous().reshape(-1), b.detach().cpu().contiguous().reshape(-1)
    if a.dtype.is_floating_point or a.dtype.is_complex:
        return torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    return torch.equal(a, b)


def _mutated(args: list, originals: list) -> list[int]:
    import torch
    return [i for i, (a, o) in enumerate(zip(args, originals))
            if isinstance(a, torch.Tensor) and not _same_bits(a, o)]


def _aliases(outputs: list, args: list) -> list[int]:
    """Indices of outputs whose storage is the storage of some input tensor."""
    import torch
    inputs = {a.untyped_storage().data_ptr() for a in args
              if isinstance(a, torch.Tensor) and a.untyped_storage().nbytes() > 0}
    return [i for i, o in enumerate(outputs)
            if o.untyped_storage().nbytes() > 0 and o.untyped_storage().data_ptr() in inputs]


def _clone_inputs(values: list) -> list:
    import torch
    return [v.clone() if isinstance(v, torch.Tensor) else v for v in values]


def _load_module(path: str, name: str):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --- reference child -------------------------------------------------------------------------

def run_reference(job: dict, report: Reporter) -> None:
    torch = _setup_torch(job)
    from . import payload, timing
    device, inputs_dir, out_dir = job["device"], job["inputs_dir"], job["outputs_dir"]
    try:
        module = _load_module(job["reference_path"], "kturn_reference_problem")
        torch.manual_seed(job["init_seed"])
        init_inputs = list(module.get_init_inputs())
        payload.save_values(os.path.join(inputs_dir, "init.pt"), init_inputs)
        torch.manual_seed(job["init_seed"])  # same seed right before Model and ModelNew
        model = module.Model(*init_inputs).to(device)
    except BaseException as exc:
        report.error("reference", "runtime_error", exc, solution_path=job["reference_path"])
        return
    report.phase("correctness")
    fp32 = True
    first_set_bytes = 0
    for index, seed in enumerate(job["seeds"]):
        torch.manual_seed(seed)
        inputs = list(module.get_inputs())
        first_set_bytes = first_set_bytes or payload.tensor_bytes(inputs)
        payload.save_values(os.path.join(inputs_dir, f"trial_{index}.pt"), inputs)
        args = _to_device(inputs, device)
        originals = _clone_inputs(args)
        outputs = payload.normalise_outputs(model(*args))
        _synchronize(device)
        fp32 = fp32 and all(o.dtype == torch.float32 for o in outputs)
        payload.save_values(os.path.join(out_dir, f"ref_{index}.pt"), [o.detach().cpu() for o in outputs])
        report({"type": "trial", "index": index, "launches": 0, "aliases": _aliases(outputs, args),
                "mutated": _mutated(args, originals), "n_outputs": len(outputs),
                "output_dtypes": [str(o.dtype) for o in outputs]})
    _reference_final_trial(job, module, model, torch, payload)
    n_sets = timing.input_set_count(job["warmup"], job["trials"], first_set_bytes, job["timing_budget_mb"])
    sets = []
    for k in range(n_sets if job["make_timing_inputs"] else 0):
        torch.manual_seed(job["timing_seeds"][k])
        inputs = list(module.get_inputs())
        payload.save_values(os.path.join(inputs_dir, f"timing_{k}.pt"), inputs)
        sets.append(inputs)
    report({"type": "reference_info", "timing_sets": len(sets), "outputs_fp32": fp32})
    if job["do_timing"] and sets:
        report.phase("timing")
        calls, warmup = _timing_calls(job, sets)
        times = timing.measure(model, calls, warmup, job["trials"], device, job["l2_flush_mb"])
        report({"type": "timing", "times_ms": [max(t, 1e-6) for t in times]})


def _timing_calls(job: dict, sets: list) -> tuple[list[tuple], int]:
    """The calls measure() gets and how many of them are warm-ups, identical in both roles:
    the parent's secret extra warm-ups come first, so the timed calls see the same input
    sets in the reference and the candidate."""
    from . import timing
    extra = job["extra_warmup"]
    calls = timing.prepare_calls(sets, extra, job["device"]) if extra else []
    calls += timing.prepare_calls(sets, job["warmup"] + job["trials"], job["device"])
    return calls, extra + job["warmup"]


def _reference_final_trial(job, module, model, torch, payload) -> None:
    """Expected output of the check trial the candidate runs after its timing phase."""
    device, inputs_dir, out_dir = job["device"], job["inputs_dir"], job["outputs_dir"]
    torch.manual_seed(job["final_seed"])
    inputs = list(module.get_inputs())
    payload.save_values(os.path.join(inputs_dir, "final.pt"), inputs)
    outputs = payload.normalise_outputs(model(*_to_device(inputs, device)))
    _synchronize(device)
    payload.save_values(os.path.join(out_dir, "ref_final.pt"), [o.detach().cpu() for o in outputs])


# --- candidate child -------------------------------------------------------------------------

class _Instrumentation:
    def __init__(self, job: dict, report: Reporter, solution_src: str) -> None:
        from . import hooks
        from .compile_cache import ExtensionCache
        self.hooks = hooks
        self.counter = hooks.LaunchCounter()
        self.proxy = hooks.RecorderProxy()
        self.cache = ExtensionCache(job["extensions_dir"], job["compiler_id"], solution_src, on_build=report)
        self.compute_ops: set[str] = set()
        self.low_precision: set[str] = set()

    def install(self, use_triton: bool) -> None:
        import torch.utils.cpp_extension as cpp_extension
        cached_inline = self.cache.wrap_load_inline(cpp_extension.load_inline)
        cached_load = self.cache.wrap_load(cpp_extension.load)

        def load_inline(*args, **kwargs):
            module = cached_inline(*args, **kwargs)
            self.counter.wrap_module(module)
            return module

        def load(*args, **kwargs):
            module = cached_load(*args, **kwargs)
            self.counter.wrap_module(module)
            return module
        cpp_extension.load_inline, cpp_extension.load = load_inline, load
        if use_triton:
            self.counter.install_triton(self.proxy)
        # Entering a TorchDispatchMode imports torch._dynamo, which rebinds torch.manual_seed;
        # import it first so the snapshot only sees what the candidate replaces.
        import torch._dynamo  # noqa: F401
        self.snapshot = self.hooks.AttributeSnapshot()
        self.threads_before = self.hooks.python_thread_count()

    def recorded_call(self, model, args: list):
        recorder = self.hooks.new_recorder()
        self.proxy.current = recorder
        try:
            with recorder:
                return model(*args)
        finally:
            self.proxy.current = None
            self.compute_ops |= recorder.compute_ops
            self.low_precision |= recorder.low_precision


def _poison(sizes: list[int], fill: int, device: str) -> None:
    """Fill freed allocator blocks of the expected output sizes with a byte pattern, so an
    output that is allocated but never written shows the pattern."""
    import torch
    blocks = [torch.full((max(1, n),), fill, dtype=torch.uint8, device=device) for n in sizes[:16]]
    _synchronize(device)
    del blocks


def _prefer_heap_reuse() -> None:
    # glibc serves big blocks with fresh (zeroed) mmaps; raising the mmap threshold makes
    # freed blocks get reused, so poisoning works for large outputs on CPU too. Setting it
    # switches off glibc's adaptive thresholds, so the trim threshold must go up as well:
    # otherwise a freed block at the heap top is returned to the OS and every call pays
    # page faults again, depending on heap layout (3x swings between processes).
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 512 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def run_candidate(job: dict, report: Reporter) -> None:
    torch = _setup_torch(job)
    from . import payload, timing
    from .compile_cache import CompileError
    device, inputs_dir, out_dir = job["device"], job["inputs_dir"], job["outputs_dir"]
    init_inputs = payload.load_values(os.path.join(inputs_dir, "init.pt"))
    trials = [payload.load_values(os.path.join(inputs_dir, f"trial_{i}.pt")) for i in range(job["n_trials"])]
    timing_sets = [payload.load_values(os.path.join(inputs_dir, f"timing_{k}.pt")) for k in range(job["n_timing_sets"])]
    final_inputs = payload.load_values(os.path.join(inputs_dir, "final.pt"))
    for name in os.listdir(inputs_dir):  # future inputs exist only in this process's memory
        os.remove(os.path.join(inputs_dir, name))
    solution_path = job["solution_path"]
    with open(solution_path) as f:
        solution_src = f.read()
    inst = _Instrumentation(job, report, solution_src)
    inst.install(job["use_triton"])
    # bound before the solution exists: it may rebind timing.measure or the timer behind it
    measure, guard = timing.measure, _harness_guard()

    phase = "import"
    try:
        module = _load_module(solution_path, "solution")
        model_cls = getattr(module, "ModelNew", None)
        if not isinstance(model_cls, type):
            report.error("import", "invalid_solution", None, "the solution does not define a class ModelNew")
            return
        phase = "init"
        torch.manual_seed(job["init_seed"])
        model = model_cls(*init_inputs)
        if isinstance(model, torch.nn.Module):
            model = model.to(device)
    except CompileError as exc:
        report.error(phase, "compile_error", None, str(exc),
                     compile_info={"extension": exc.name, "feedback": exc.feedback, "log": exc.log,
                                   "cached_failure": exc.cached})
        return
    except SyntaxError as exc:
        report.error(phase, "compile_error", exc, solution_path=solution_path)
        return
    except BaseException as exc:
        report.error(phase, "runtime_error", exc, solution_path=solution_path)
        return

    report.phase("correctness")
    try:
        _correctness_trials(job, report, inst, model, trials, torch, payload)
    except BaseException as exc:
        report.error("correctness", "runtime_error", exc, solution_path=solution_path)
        return
    report({"type": "correctness", "torch_ops": sorted(inst.compute_ops),
            "low_precision_casts": sorted(inst.low_precision), "patched": inst.snapshot.diff(),
            "new_threads": max(0, inst.hooks.python_thread_count() - inst.threads_before),
            "kernels_defined": inst.counter.kernels_defined, "launches_total": inst.counter.launches})
    if job["do_timing"] and timing_sets:
        report.phase("timing")
        try:
            times, audit = _timed_calls(job, inst, model, timing_sets, measure, guard)
        except BaseException as exc:
            report.error("timing", "runtime_error", exc, solution_path=solution_path)
            return
        report({"type": "timing", "times_ms": [max(t, 1e-6) for t in times]})
        report({"type": "timing_audit", **audit})
    report.phase("verify")
    try:
        _final_trial(job, report, inst, model, final_inputs, payload)
    except BaseException as exc:
        report.error("verify", "runtime_error", exc, solution_path=solution_path)


def _harness_guard():
    """Snapshot of the harness modules whose globals the timing phase relies on."""
    from . import channel, hooks, payload, timing
    from .timer_guard import ModuleGuard
    return ModuleGuard({"timing": timing, "runner": sys.modules[__name__], "channel": channel,
                        "payload": payload, "hooks": hooks})


def _timed_calls(job, inst, model, timing_sets, measure, guard) -> tuple[list[float], dict]:
    """measure() with launches counted per call (outside the timed region) and the harness
    globals checked right before and right after. A secret number of extra warm-up calls
    (chosen by the parent) keeps the position of the first timed call unpredictable."""
    device = job["device"]
    calls, warmup = _timing_calls(job, timing_sets)
    per_call, last = [], [inst.counter.launches]

    def count_launches() -> None:
        per_call.append(inst.counter.launches - last[0])
        last[0] = inst.counter.launches
    replaced = guard.replaced()
    times = measure(model, calls, warmup, job["trials"], device, job["l2_flush_mb"],
                    after_call=count_launches)
    replaced = sorted(set(replaced) | set(guard.replaced()))
    audit = {"calls": len(per_call), "idle_calls": sum(1 for n in per_call if n == 0),
             "replaced": replaced, "patched": inst.snapshot.diff()}
    return times, audit


def _final_trial(job, report, inst, model, inputs, payload) -> None:
    """One more call after timing, on inputs whose expected output only the parent holds:
    a solution that stops computing after some number of calls fails it."""
    device = job["device"]
    args = _to_device(inputs, device)
    before = inst.counter.launches
    outputs = payload.normalise_outputs(model(*args))
    _synchronize(device)
    payload.save_values(os.path.join(job["outputs_dir"], "cand_final.pt"), [o.detach().cpu() for o in outputs])
    report({"type": "final_trial", "launches": inst.counter.launches - before, "n_outputs": len(outputs)})


def _correctness_trials(job, report, inst, model, trials, torch, payload) -> None:
    device, out_dir = job["device"], job["outputs_dir"]
    for index, inputs in enumerate(trials):
        runs = POISON_BYTES if index == 0 else POISON_BYTES[:1]
        for run, fill in enumerate(runs):
            args = _to_device(inputs, device)
            originals = _clone_inputs(args)
            _poison(job["poison_sizes"], fill, device)
            launches_before = inst.counter.launches
            outputs = payload.normalise_outputs(inst.recorded_call(model, args))
            _synchronize(device)
            launches = inst.counter.launches - launches_before
            suffix = "" if run == 0 else "_b"
            payload.save_values(os.path.join(out_dir, f"cand_{index}{suffix}.pt"),
                                [o.detach().cpu() for o in outputs])
            if run == 0:
                report({"type": "trial", "index": index, "launches": launches,
                        "aliases": _aliases(outputs, args), "mutated": _mutated(args, originals),
                        "n_outputs": len(outputs), "output_dtypes": [str(o.dtype) for o in outputs]})
            del outputs, args, originals


# --- entry point -------------------------------------------------------------------------------

def _forget_job_file(path: str) -> None:
    # The job holds the secret extra warm-up count; the solution must not read it back.
    try:
        os.remove(path)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--job", required=True)
    args = parser.parse_args(argv)
    with open(args.job) as f:
        job = json.load(f)
    if job["role"] == "candidate":
        _forget_job_file(args.job)
    report = Reporter(args.fd)
    state = isolation.enter(job["limits"], report)
    faulthandler.enable()  # a segfault leaves a Python traceback on stderr
    try:
        report({"type": "hello", "role": job["role"], **state})
        if job["role"] == "reference":
            run_reference(job, report)
        else:
            run_candidate(job, report)
        report({"type": "done"})
    except BaseException as exc:  # never let a candidate's SystemExit or a broken pipe escape
        try:
            report.error("runner", "runtime_error", exc, solution_path=job.get("solution_path", ""))
        except BaseException:
            pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(0)  # skip atexit hooks and non-daemon threads the candidate may have left


if __name__ == "__main__":
    main()
