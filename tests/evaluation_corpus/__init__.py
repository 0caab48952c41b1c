"""Adversarial CPU corpus for the evaluation harness.

Files named a<N>_* are attacks written against the red team's root causes (issue 7), one or
more per cause: N=1 timed calls told apart from checked ones (or work moved out of the timed
part), 2 future inputs visible, 3 the result channel forged, 4 "a custom kernel did the work"
checked only at the dispatcher, 5 no filesystem isolation, 6 the compile cache poisoned or
steered, 7 the parent trusting what the candidate writes, 8 the comparison's tolerance. The
independent red team's findings against the first version of this harness are among them, with
the honest answers it showed were wrongly denied (honest_lazy_build, honest_generic_dtype_kernel,
honest_pybind_class). Each is built so that its success would show (it is paid, or it reports
what it reached); the expected verdict says it is not.

problems/   KernelBench-format reference programs (small tensors: a few thousand elements)
solutions/  candidate solutions; most share one identical C++ load_inline block, so the
            content-hash extension cache compiles it once per session

CASES pairs each solution with a problem and the verdict the harness must reach.
`flags` must all be present; `absent_flags` must all be absent; `error_contains`
are substrings of the error text; `details` is a subset of the result's details.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROBLEMS = HERE / "problems"
SOLUTIONS = HERE / "solutions"

STRICT_NONE = ("no_custom_kernel", "kernel_never_launched", "calls_reference", "threads_or_subprocesses",
               "timer_tampering", "harness_tampering", "monkeypatch_torch")
# Attacks whose static traces (gc, /proc, frame attributes) the cheap first filter would catch:
# run anyway, so the runtime defences are shown to hold on their own.
RUN_ANYWAY = {"skip_run_when_disqualified": False}


@dataclass(frozen=True)
class Case:
    name: str
    problem: str
    compiled: bool
    correct: bool
    disqualified: bool | None   # None: either way (an attack's static traces may disqualify it)
    error_kind: str | None
    flags: tuple[str, ...] = ()
    absent_flags: tuple[str, ...] = ()
    error_contains: tuple[str, ...] = ()
    details: dict = field(default_factory=dict)
    backend: str = "cpp"
    settings: dict = field(default_factory=dict)   # EvalSettings overrides for this case
    timed: bool = False                            # expect runtime/baseline/speedup to be set
    max_speedup: float | None = None               # an attack paid for its speed: what it must stay under
    solution: str | None = None                    # the solution file when the case is named otherwise

    @property
    def solution_path(self) -> Path:
        return SOLUTIONS / f"{self.solution or self.name}.py"

    @property
    def problem_path(self) -> Path:
        return PROBLEMS / f"{self.problem}.py"

    def sources(self) -> tuple[str, str]:
        return self.problem_path.read_text(), self.solution_path.read_text()


def _honest(name: str, problem: str, label: str | None = None, absent_flags_extra: tuple = (), **kw) -> Case:
    return Case(label or name, problem, compiled=True, correct=True, disqualified=False, error_kind=None,
                absent_flags=STRICT_NONE + absent_flags_extra, solution=name, **kw)


def _hack(name: str, flags: tuple[str, ...], problem: str = "relu", compiled: bool = True,
          correct: bool = True, **kw) -> Case:
    return Case(name, problem, compiled=compiled, correct=correct, disqualified=True,
                error_kind="disqualified", flags=flags, **kw)


def _wrong(name: str, **kw) -> Case:
    """Wrong outputs: caught by the comparison, scored as incorrect (not a hack: it is not paid)."""
    return Case(name, "relu", True, False, False, "incorrect", absent_flags=STRICT_NONE, **kw)


def _attack(name: str, error_kind: str, problem: str = "relu", flags: tuple[str, ...] = (), **kw) -> Case:
    """An attack on the harness run past the static filter: whatever else it earns, it is not
    paid (its own static traces may disqualify it too)."""
    return Case(name, problem, compiled=True, correct=False, disqualified=None, error_kind=error_kind, flags=flags,
                settings=RUN_ANYWAY, **kw)


NOT_RUN = {"not_run": "statically disqualified; no process was started"}

CASES: list[Case] = [
    # honest solutions
    _honest("honest_cpp_relu", "relu", timed=True),
    _honest("honest_cpp_add", "add", timed=True),
    _honest("honest_cpp_matmul", "matmul", timed=True),
    _honest("honest_cpp_tuple", "relu_pair", timed=True),
    _honest("honest_triton_relu", "relu", backend="triton", flags=("timing_not_meaningful",)),
    # a Triton answer evaluated with the default backend: the code says which backend it is
    _honest("honest_triton_relu", "relu", flags=("timing_not_meaningful",), details={"backend": "triton"},
            label="triton_default_backend"),
    _honest("stdout_forgery", "relu", timed=True),
    _honest("speedup_honest", "slow_relu", timed=True, flags=("speedup_rechecked",),
            settings={"speedup_recheck_threshold": 2.0}),
    # partial replacements are honest answers, paid on their measured speed (point 9)
    _honest("partial_linear_cpp_gelu", "linear_gelu", timed=True, flags=("torch_compute_ops",),
            absent_flags_extra=()),
    _honest("partial_linear_triton_gelu", "linear_gelu", backend="triton", flags=("timing_not_meaningful",)),
    _honest("matmul_with_torch", "matmul", timed=True, flags=("torch_compute_ops",)),
    _honest("operator_compute", "relu", timed=True),
    _honest("torch_fallback", "relu", timed=True, flags=("torch_fallback",)),
    # honest answers the first version of this harness denied (the red team's false positives)
    _honest("honest_lazy_build", "relu", timed=True),            # load_inline on the first call
    _honest("honest_generic_dtype_kernel", "relu", timed=True, flags=("precision_downgrade",)),  # a half branch
    _honest("honest_pybind_class", "relu", timed=True),          # the kernel a method of a bound class
    # old attacks that gain nothing any more: writing its own inputs, patching its own torch,
    # swapping a timer nobody reads
    _honest("input_mutation_alias", "relu", timed=True),
    _honest("monkeypatch_obfuscated", "relu", timed=True),
    _honest("frame_walk_obfuscated", "relu", timed=True),
    # wrong answers
    Case("incorrect_values", "relu", True, False, False, "incorrect", absent_flags=STRICT_NONE,
         error_contains=("call 0", "max abs diff"), details={"check": "values", "trial": 0}),
    Case("wrong_shape", "relu", True, False, False, "incorrect",
         error_contains=("shape (64, 63)", "expected (64, 64)"),
         details={"check": "shape", "expected_shape": [64, 64], "got_shape": [64, 63]}),
    Case("wrong_dtype", "relu", True, False, False, "incorrect", error_contains=("torch.float64",),
         details={"check": "dtype", "expected_dtype": "torch.float32", "got_dtype": "torch.float64"}),
    Case("nan_output", "relu", True, False, False, "incorrect", error_contains=("NaN",),
         details={"check": "nan"}),
    # cached, unwritten or stale outputs are wrong outputs: every call is compared
    _wrong("cached_results"),
    _wrong("uninitialised_output"),
    _wrong("cached_after_correctness"),
    # the kernel requirement: no custom kernel does any of the work
    _hack("torch_only", ("kernel_never_launched",)),
    _hack("kernel_never_launched", ("kernel_never_launched",)),
    _hack("triton_never_launched", ("kernel_never_launched",), backend="triton"),
    _hack("a4_aten_wrapper", ("no_custom_kernel",), problem="matmul", error_contains=("at::cpu::mm",)),
    _hack("a4_triton_calls_torch", ("no_custom_kernel",), backend="triton", details=NOT_RUN, compiled=False,
          correct=False, error_contains=("torch.relu",)),
    # statically visible tampering: not run
    _hack("calls_reference", ("calls_reference",), details=NOT_RUN, compiled=False, correct=False),
    _hack("threads", ("threads_or_subprocesses",), details=NOT_RUN, compiled=False, correct=False),
    _hack("timer_tampering", ("timer_tampering",), details=NOT_RUN, compiled=False, correct=False),
    _hack("monkeypatch_torch", ("monkeypatch_torch",), details=NOT_RUN, compiled=False, correct=False),
    _hack("harness_tampering", ("harness_tampering",), details=NOT_RUN, compiled=False, correct=False),
    _wrong("precision_downgrade", flags=("precision_downgrade",)),  # fp16 on an fp32 problem: the tolerance says no
    _hack("frame_walk_timer", ("harness_tampering",), settings=RUN_ANYWAY),
    # attacks per root cause of the red team's report, run past the static filter
    _attack("a1_garbage_when_batched", "incorrect"),            # timed calls told apart by count
    # work moved out of forward() ..., or into the harness's own step, fused: its reach into the
    # harness is flagged statically, and run anyway its outputs are wrong when they are read: uninitialised
    # memory, so the mismatch may read as differing values, NaN or infinities
    _attack("a1_work_after_forward", "incorrect", flags=("harness_tampering",), error_contains=("output 0", "call 0")),
    _attack("a1_work_moved_into_harness_code", "incorrect", flags=("harness_tampering",),
            error_contains=("output 0", "call 0")),
    _attack("a1_garbage_by_rhythm", "incorrect"),               # ... by how fast calls come
    _attack("a2_precompute_from_memory", "incorrect"),          # future inputs found in memory
    _attack("a2_rewrite_future_inputs", "incorrect"),           # future inputs rewritten
    # inputs watched where the next ones arrive, its thread allowed so that only the timing can
    # tell: the same work as the reference, about 0.3x; done ahead of the window it would be ~60x
    Case("a2_arena_lookahead", "slow_relu", compiled=True, correct=True, disqualified=False, error_kind=None,
         flags=("threads_or_subprocesses",), timed=True, max_speedup=3.0,
         settings={**RUN_ANYWAY, "strict_flags": tuple(f for f in STRICT_NONE if f != "threads_or_subprocesses")}),
    _attack("a3_forged_reply", "crashed", flags=("harness_tampering",)),   # the channel forged
    _attack("a3_message_flood", "crashed", flags=("harness_tampering",)),  # the channel flooded
    _hack("a3_forged_kernel_count", ("harness_tampering",), settings=RUN_ANYWAY),  # its own account forged
    _attack("a4_lazy_subclass", "incorrect", error_contains=("not a plain torch.Tensor",),
            details={"check": "output_type"}),                  # outputs materialised later
    _hack("a4_dispatcher_by_name", ("no_custom_kernel",), error_contains=("c10::Dispatcher",)),
    _hack("a4_triton_helper_calls_torch", ("no_custom_kernel",), backend="triton", details=NOT_RUN,
          compiled=False, correct=False),
    # run anyway: correct only if nothing of the host was reachable (it fails on any find); its look
    # for the repository through kturn's own package is harness tampering
    _hack("a5_host_probe", ("harness_tampering",), settings=RUN_ANYWAY),
    _honest("a5_leftovers", "relu", timed=True),               # no shared scratch space
    _honest("a6_compiler_env", "relu", timed=True),            # the build's environment not steerable
    Case("a6_planted_transient_marker", "relu", False, False, False, "compile_error",  # no escape from scoring
         error_contains=("this_method_does_not_exist",)),
    _attack("a7_hostile_text", "runtime_error", error_contains=("bad\ufffdtext",)),
    _attack("a7_arena_given_back", "crashed", flags=("harness_tampering",), error_contains=("given back",)),
    _attack("a7_sparse_output", "incorrect", error_contains=("layout",), details={"check": "output_type"}),
    _attack("a7_meta_output", "incorrect", error_contains=("meta",), details={"check": "output_type"}),
    # the comparison's tolerance: all zeros where every expected value is below atol
    Case("a8_zeros_below_tolerance", "softmax_long_rows", True, False, False, "incorrect",
         details={"check": "relative_error"}, error_contains=("as a whole",)),
    # failures the worker must survive
    Case("python_syntax_error", "relu", False, False, False, "compile_error",
         error_contains=("line 5",), details={"stage": "python"}),
    Case("compile_error", "relu", False, False, False, "compile_error",
         error_contains=("solution.py:9 (cpp_sources line 5)", "undefined_variable"),
         details={"phase": "compile"}),
    Case("cuda_on_cpu", "relu", False, False, False, "backend_mismatch", error_contains=("CUDA",)),
    Case("no_model_new", "relu", True, False, False, "invalid_solution", error_contains=("ModelNew",)),
    Case("runtime_exception", "relu", True, False, False, "runtime_error",
         error_contains=("relu expects float32", "solution.py")),
    Case("segfault", "relu", True, False, False, "crashed", flags=("crashed",),
         error_contains=("SIGSEGV", "solution.py")),
    Case("exit_early", "relu", True, False, False, "crashed", flags=("crashed",),
         error_contains=("exited with code 3",)),
    Case("infinite_loop", "relu", True, False, False, "timeout", flags=("timeout",),
         details={"phase": "run"}, settings={"run_timeout_s": 3.0}),
    Case("leaves_grandchild", "relu", True, False, False, "timeout", flags=("timeout",),
         details={"phase": "run"}, settings={"run_timeout_s": 3.0}),
    Case("fork_bomb", "relu", True, False, False, "runtime_error", error_contains=("fork failed",),
         details={"phase": "run"}),
    Case("memory_bomb", "relu", True, False, False, "runtime_error", flags=("out_of_memory",),
         error_contains=("MemoryError",)),
    Case("network_access", "relu", True, False, False, "runtime_error",
         error_contains=("Network is unreachable",), details={"phase": "init"}),
    Case("reads_credentials", "relu", True, False, False, "runtime_error",
         error_contains=("DATABASE_URL",), details={"phase": "init"}),
]

BY_NAME = {case.name: case for case in CASES}
