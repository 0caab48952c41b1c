"""evaluate(): static checks, a reference child, a candidate child, the verdict.

Order of a pass: the reference child generates inputs from secret seeds and the expected
outputs (and the baseline timing unless the caller supplied one); the reference directory
is deleted; the candidate child runs compile, correctness, timing and verify phases (one
check trial after timing, so the timed calls must keep computing); the parent compares
outputs and turns the child's runtime observations into flags. A speedup above
settings.speedup_recheck_threshold is re-measured in a second pass (fresh processes,
fresh seeds) before it is believed.
"""
from __future__ import annotations

import re
import secrets
import traceback

from . import flags as F
from . import static_checks, timing
from .timing_audit import audit_flags, patch_flag
from .candidate import CandidateRun, run_candidate
from .correctness import compare_trial, describe_failure, outputs_identical, outputs_match
from .fingerprint import compiler_id, device_fingerprint
from .flags import FlagSet
from .reference import ReferenceRun, run_reference
from .result import EvalResult, Timing
from .sandbox import signal_name
from .settings import EvalSettings
from .workspace import Workspace

MAX_ERROR = 2000
EXTRA_WARMUP_MAX = 3  # secret extra warm-up calls per pass: 0..3


class _Verdict:
    """Mutable builder of an EvalResult."""

    def __init__(self, settings: EvalSettings, fingerprint: dict) -> None:
        self.settings = settings
        self.compiled = False
        self.correct = False
        self.runtime: Timing | None = None
        self.baseline: Timing | None = None
        self.speedup: float | None = None
        self.speedup_spread: float | None = None
        self.flags = FlagSet()
        self.error_kind: str | None = None
        self.error: str | None = None
        self.details: dict = {"warnings": []}
        self.fingerprint = dict(fingerprint)

    def fail(self, kind: str, message: str, **details) -> None:
        if self.error_kind is None:
            self.error_kind, self.error = kind, message[:MAX_ERROR]
            self.details.update(details)

    def result(self) -> EvalResult:
        strict = self.flags.strict(self.settings.strict_flags)
        error_kind, error = self.error_kind, self.error
        if strict:
            reasons = self.flags.reasons()
            text = "disqualified: " + "; ".join(f"{f} ({reasons[f][0]})" for f in strict)
            error = (text + (f" | also: {error}" if error else ""))[:MAX_ERROR]
            error_kind = "disqualified"
        meaningful = self.settings.timing_meaningful
        if not meaningful:
            self.flags.add(F.TIMING_NOT_MEANINGFUL, "Triton under the CPU interpreter: correctness only")
        self.details["flag_reasons"] = self.flags.reasons()
        return EvalResult(
            compiled=self.compiled, correct=self.correct, runtime=self.runtime if meaningful else None,
            baseline=self.baseline if meaningful else None, speedup=self.speedup if meaningful else None,
            speedup_spread=self.speedup_spread if meaningful else None, timing_meaningful=meaningful,
            flags=self.flags.names(), disqualified=bool(strict), error_kind=error_kind, error=error,
            details=self.details, fingerprint=self.fingerprint)


def evaluate(reference_src: str, solution_src: str, settings: EvalSettings = EvalSettings(),
             baseline: Timing | None = None) -> EvalResult:
    """Evaluate a solution against a reference. Raises only for invalid settings; whatever
    the solution does becomes an EvalResult (harness faults become error_kind "harness_error")."""
    settings.validate()
    fingerprint = device_fingerprint(settings.device)
    verdict = _Verdict(settings, fingerprint)
    try:
        _evaluate(verdict, reference_src, solution_src, settings, baseline)
    except Exception as exc:  # a harness bug must not take the worker down either
        verdict.error_kind, verdict.error = "harness_error", f"{type(exc).__name__}: {exc}"[:MAX_ERROR]
        verdict.details["traceback"] = traceback.format_exc()[-4000:]
    return verdict.result()


def _evaluate(v: _Verdict, reference_src: str, solution_src: str, settings: EvalSettings,
              baseline: Timing | None) -> None:
    static = static_checks.analyse(solution_src, reference_src)
    v.flags.merge(static.flags)
    if static.syntax_error:
        v.fail("compile_error", static.syntax_error, phase="compile", stage="python",
               compile_log=static.syntax_error)
        return
    if v.flags.strict(settings.strict_flags) and settings.skip_run_when_disqualified:
        v.details["not_run"] = "statically disqualified; no process was started"
        return
    first = _run_pass(v, reference_src, solution_src, settings, baseline, primary=True)
    if first is None or not (v.correct and settings.timing_meaningful) or v.flags.strict(settings.strict_flags):
        return
    _timing_verdict(v, first, baseline)
    if v.speedup is not None and v.speedup > settings.speedup_recheck_threshold:
        _recheck(v, reference_src, solution_src, settings)


def _new_seeds(n: int) -> list[int]:
    return [secrets.randbits(62) for _ in range(n)]


def _run_pass(v: _Verdict, reference_src: str, solution_src: str, settings: EvalSettings,
              baseline: Timing | None, primary: bool) -> tuple[ReferenceRun, CandidateRun] | None:
    """One reference child + one candidate child on fresh secret seeds. On the primary pass
    the verdict fields are filled in; a recheck pass only returns what it saw."""
    init_seed = secrets.randbits(31)
    n_calls = settings.warmup_runs + settings.timing_trials
    # where timing starts (and so which call is the check call after it) is not a constant
    # a solution could count towards
    extra_warmup = secrets.randbelow(EXTRA_WARMUP_MAX + 1)
    with Workspace() as ws:
        ref = run_reference(reference_src, settings, ws, _new_seeds(settings.correctness_trials),
                            _new_seeds(n_calls), init_seed,
                            do_timing=primary and baseline is None and settings.timing_meaningful,
                            final_seed=_new_seeds(1)[0], extra_warmup=extra_warmup)
        ws.drop_reference()  # expected outputs and seeds now exist only in this process
        if ref.error:
            if primary:
                v.fail("reference_error", ref.error)
            return None
        cand = run_candidate(solution_src, settings, ws, init_seed=init_seed,
                             n_trials=settings.correctness_trials, n_timing_sets=ref.timing_sets,
                             poison_sizes=ref.poison_sizes, do_timing=settings.timing_meaningful,
                             compiler_id=compiler_id(v.fingerprint), extra_warmup=extra_warmup)
    if primary:
        v.details["phase_wall_s"] = {"reference": ref.details.get("phase_wall_s"),
                                     "candidate": cand.outcome.phase_wall_s}
        # reported whatever the candidate did, so the caller can cache it
        v.baseline = baseline or (timing.summarise(ref.times_ms) if ref.times_ms else None)
        _judge(v, ref, cand, settings)
    return ref, cand


# --- judging one candidate run -------------------------------------------------------------

def _judge(v: _Verdict, ref: ReferenceRun, cand: CandidateRun, settings: EvalSettings) -> None:
    _note_sandbox(v, cand)
    _note_builds(v, cand)
    if cand.summary is None or len(cand.trials) != settings.correctness_trials:
        _record_failure(v, cand)
        return
    v.compiled = True
    _runtime_flags(v, ref, cand)
    v.correct = _check_outputs(v, ref, cand, settings)
    if v.correct and cand.times_ms is None and settings.timing_meaningful:
        _record_failure(v, cand)  # died, hung or raised while being timed
    elif v.correct and cand.final_outputs is None:
        _record_failure(v, cand)  # died, hung or raised in the check call after timing
        v.fail("runtime_error", "the check call after timing reported no output", phase="verify")
        v.correct = False


def _note_sandbox(v: _Verdict, cand: CandidateRun) -> None:
    hello = cand.outcome.first("hello")
    if hello is None:
        return
    v.fingerprint.update(network_isolated=hello["netns"], pid_namespace=hello["pidns"],
                         rlimits=hello["rlimits"], **cand.sandbox)
    if not hello["netns"]:
        v.details["warnings"].append("no network namespace: the candidate ran with network access")
    if not hello["pidns"]:
        v.details["warnings"].append("no PID namespace: descendants that leave the process group may survive")
    if cand.sandbox.get("process_cap", "").startswith("rlimit (not"):
        v.details["warnings"].append("no pids cgroup and running as root: the process count was not capped")


def _note_builds(v: _Verdict, cand: CandidateRun) -> None:
    v.details["builds"] = [{k: b[k] for k in ("name", "cached", "ok", "seconds")} for b in cand.builds]
    for build in cand.builds:
        if build["torch_calls"]:
            v.flags.add(F.TORCH_COMPUTE_OPS, f"extension {build['name']} calls ATen ops: "
                                             + ", ".join(build["torch_calls"][:8]))


def _record_failure(v: _Verdict, cand: CandidateRun) -> None:
    out = cand.outcome
    phase = out.phase
    if out.protocol_error:
        v.compiled = v.compiled or phase != "compile"
        v.flags.add(F.CRASHED, "result channel corrupted")
        v.fail("crashed", f"the solution corrupted the harness result channel ({out.protocol_error})",
               phase=phase)
    elif cand.error:
        _record_child_error(v, cand.error, phase)
    elif out.timed_out:
        v.compiled = v.compiled or phase != "compile"
        v.flags.add(F.TIMEOUT, f"phase {phase} exceeded its limit")
        v.fail("timeout", f"timed out during {phase} (limit {_limit(v.settings, phase):g} s)", phase=phase)
    elif not out.finished or cand.summary is None:
        v.compiled = v.compiled or phase != "compile"
        how = f"was killed by {signal_name(out.exit_signal)}" if out.exit_signal else \
            f"exited with code {out.exit_code}"
        v.flags.add(F.CRASHED, f"process {how} during {phase}")
        v.fail("crashed", f"the solution's process {how} during {phase} before reporting a result"
               + _crash_context(out.stderr_tail), phase=phase, stderr_tail=out.stderr_tail[-1500:])
    elif cand.unreadable_outputs:
        v.fail("runtime_error", f"the solution's outputs could not be read: {cand.unreadable_outputs}",
               phase=phase)


def _limit(settings: EvalSettings, phase: str) -> float:
    return settings.compile_timeout_s if phase == "compile" else settings.run_timeout_s


def _record_child_error(v: _Verdict, error: dict, phase: str) -> None:
    kind, where = error["kind"], error["phase"]
    if kind == "compile_error":
        info = error["compile"] or {}
        v.fail("compile_error", info.get("feedback") or error["message"] + "\n" + error["traceback"],
               phase="compile", compile_log=(info.get("log") or error["traceback"] or error["message"])[:8000],
               extension=info.get("extension"))
        return
    v.compiled = v.compiled or where not in ("import", "runner") or phase != "compile"
    if kind == "invalid_solution":
        v.compiled = True
        v.fail("invalid_solution", error["message"], phase=where)
        return
    if error["oom"]:
        v.flags.add(F.OUT_OF_MEMORY, f"memory exhausted during {where}")
    # the traceback ends with the exception line, so it replaces the message when present
    message = error["traceback"].strip() or error["message"]
    v.fail("runtime_error", f"{where}: {message}", phase=where, traceback=error["traceback"])


def _crash_context(stderr: str) -> str:
    """The faulthandler lines that point into the solution, if any."""
    keep = [l.strip() for l in stderr.splitlines()
            if "Fatal Python error" in l or "solution.py" in l or "Error" in l]
    keep = [re.sub(r'"?[^"\s]*/solution\.py"?', "solution.py", l) for l in keep][-6:]
    return (":\n" + "\n".join(keep)) if keep else ""


def _runtime_flags(v: _Verdict, ref: ReferenceRun, cand: CandidateRun) -> None:
    s = cand.summary
    if s["kernels_defined"] == 0:
        v.flags.add(F.NO_CUSTOM_KERNEL, "no extension was built and no Triton kernel was defined at run time")
    idle = [t["index"] for t in cand.trials if t["launches"] == 0]
    if idle and s["kernels_defined"]:
        v.flags.add(F.KERNEL_NEVER_LAUNCHED, f"forward() launched no custom kernel in trial(s) {idle}")
    if s["torch_ops"]:
        v.flags.add(F.TORCH_COMPUTE_OPS, "forward() ran torch compute ops: " + ", ".join(s["torch_ops"][:10]))
    if s["low_precision_casts"] and ref.outputs_fp32:
        v.flags.add(F.PRECISION_DOWNGRADE, "fp32 problem but forward() made low-precision tensors: "
                    + ", ".join(s["low_precision_casts"][:5]))
    for name in s["patched"]:
        v.flags.add(patch_flag(name), f"{name} was replaced")
    for flag, reason in audit_flags(cand, s["patched"]):
        v.flags.add(flag, reason)
    if s["new_threads"]:
        v.flags.add(F.THREADS_OR_SUBPROCESSES, f"{s['new_threads']} Python thread(s) still running after forward()")
    for got, expected in zip(cand.trials, ref.trials):
        aliases = sorted(set(got["aliases"]) - set(expected["aliases"]))
        if aliases:
            v.flags.add(F.OUTPUT_ALIASES_INPUT, f"output(s) {aliases} share storage with an input")
        mutated = sorted(set(got["mutated"]) - set(expected["mutated"]))
        if mutated:
            v.flags.add(F.INPUT_MUTATION, f"forward() modified input(s) {mutated} (trial {got['index']})")


def _check_outputs(v: _Verdict, ref: ReferenceRun, cand: CandidateRun, settings: EvalSettings) -> bool:
    if cand.unreadable_outputs or not _all_tensors(cand):
        v.fail("runtime_error", "the solution's outputs could not be read back: "
               + (cand.unreadable_outputs or "non-tensor values in the output files"))
        return False
    correct = True
    for index, (expected, got) in enumerate(zip(ref.outputs, cand.outputs)):
        failure = compare_trial(expected, got, settings, index)
        if failure is None:
            continue
        correct = False
        v.fail("incorrect", describe_failure(failure), **failure)
        earlier = [j for j in range(index) if outputs_identical(got, cand.outputs[j])]
        if earlier:
            v.flags.add(F.CACHED_RESULTS, f"trial {index} returned exactly the output of trial {earlier[0]} "
                                          "although its inputs were different")
        break
    if cand.second_run is not None and cand.outputs and not outputs_match(cand.outputs[0], cand.second_run, settings):
        v.flags.add(F.UNINITIALISED_OUTPUT, "two runs on identical inputs gave different outputs after the "
                                            "allocator was filled with different garbage")
        correct = False
        v.fail("incorrect", "outputs depend on uninitialised memory (two runs on identical inputs differ)",
               check="uninitialised", trial=0)
    if correct and cand.final_outputs is not None:
        correct = _check_final(v, ref, cand, settings)
    v.details["trials_run"] = len(cand.outputs)
    return correct


def _check_final(v: _Verdict, ref: ReferenceRun, cand: CandidateRun, settings: EvalSettings) -> bool:
    """The call after timing must still compute: it is what makes the timed calls count."""
    failure = compare_trial(ref.final_outputs, cand.final_outputs, settings, "after timing")
    if failure is None:
        return True
    v.fail("incorrect", describe_failure(failure) + ": correct during the correctness trials, "
           "wrong after the timing phase", **failure)
    earlier = [j for j, got in enumerate(cand.outputs) if outputs_identical(cand.final_outputs, got)]
    if earlier:
        v.flags.add(F.CACHED_RESULTS, f"the check call after timing returned exactly the output of trial "
                                      f"{earlier[0]} although its inputs were different")
    return False


def _all_tensors(cand: CandidateRun) -> bool:
    import torch
    runs = cand.outputs + [r for r in (cand.second_run, cand.final_outputs) if r is not None]
    return all(isinstance(t, torch.Tensor) for outputs in runs for t in outputs)


# --- timing --------------------------------------------------------------------------------

def _timing_verdict(v: _Verdict, run: tuple[ReferenceRun, CandidateRun], baseline: Timing | None) -> None:
    ref, cand = run
    if cand.times_ms:
        v.runtime = timing.summarise(cand.times_ms)
    v.baseline = v.baseline or baseline or (timing.summarise(ref.times_ms) if ref.times_ms else None)
    if v.baseline is None:
        v.details["warnings"].append("no baseline timing: the reference was not timed")
    if v.runtime and v.baseline:
        v.speedup, v.speedup_spread = timing.speedup(v.baseline, v.runtime)


def _recheck(v: _Verdict, reference_src: str, solution_src: str, settings: EvalSettings) -> None:
    """Re-run in fresh processes on fresh inputs; believe the speedup only if it holds up."""
    v.flags.add(F.SPEEDUP_RECHECKED, f"speedup {v.speedup:.2f} above {settings.speedup_recheck_threshold:g}")
    shadow = _Verdict(settings, v.fingerprint)
    run = _run_pass(shadow, reference_src, solution_src, settings, v.baseline, primary=False)
    if run is None:
        v.flags.add(F.SPEEDUP_UNCONFIRMED, "the recheck could not run the reference")
        v.speedup = v.speedup_spread = None
        return
    _judge(shadow, run[0], run[1], settings)
    recheck = {"correct": shadow.correct, "error": shadow.error, "flags": shadow.flags.names()}
    v.details["recheck"] = recheck
    v.flags.merge(shadow.flags)  # a hack that shows only on the second run still counts
    if not shadow.correct or shadow.error_kind:
        v.flags.add(F.SPEEDUP_UNCONFIRMED, f"the recheck failed: {shadow.error_kind}")
        v.correct = False
        v.fail(shadow.error_kind or "incorrect", f"speedup recheck failed: {shadow.error}",
               recheck_phase=shadow.details.get("phase"))
        v.speedup = v.speedup_spread = None
        return
    _timing_verdict(shadow, run, v.baseline)
    recheck.update(runtime=shadow.runtime and shadow.runtime.__dict__, speedup=shadow.speedup)
    if shadow.speedup is None:
        return
    ratio = max(shadow.speedup, v.speedup) / min(shadow.speedup, v.speedup)
    if ratio > settings.speedup_disagreement_factor:
        v.flags.add(F.SPEEDUP_UNCONFIRMED, f"speedups {v.speedup:.2f} and {shadow.speedup:.2f} disagree; "
                                           "the slower measurement is kept")
    if shadow.speedup < v.speedup:  # conservative: keep the slower of the two measurements
        v.runtime, v.speedup, v.speedup_spread = shadow.runtime, shadow.speedup, shadow.speedup_spread
