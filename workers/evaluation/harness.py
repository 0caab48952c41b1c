"""evaluate(): static checks, one evaluation pass (session.py), the verdict.

The verdict depends only on what the parent checked itself: the outputs it compared with the
reference's, the times on its own clock, the builds it made and inspected. What the
candidate's process reports (its kernels, its launches, its errors) is used only against it.
A speedup above settings.speedup_recheck_threshold is measured again in a second pass (fresh
processes, fresh seeds) and the slower figure is kept.
"""
from __future__ import annotations

import re
import statistics
import time
import traceback
from dataclasses import replace

from . import flags as F
from . import static_checks, text, timing, wire
from .correctness import describe_failure
from .fingerprint import device_fingerprint, toolchain
from .flags import FlagSet
from .result import EvalResult, Timing
from .sandbox.child import ChildFailed, ChildTimeout, signal_name
from .session import PassOutcome, ReferenceFault, Session
from .settings import EvalSettings

MAX_ERROR = 2000


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
            self.error_kind, self.error = kind, text.clean(message, MAX_ERROR)
            self.details.update(text.clean_tree(details, 8000))

    def result(self) -> EvalResult:
        strict = self.flags.strict(self.settings.strict_flags)
        error_kind, error = self.error_kind, self.error
        if strict:
            if error_kind:
                self.details["underlying_error_kind"] = error_kind
            reasons = self.flags.reasons()
            summary = "disqualified: " + "; ".join(f"{f} ({reasons[f][0]})" for f in strict)
            error = text.clean(summary + (f" | also: {error}" if error else ""), MAX_ERROR)
            error_kind = "disqualified"
        meaningful = self.settings.timing_meaningful
        if not meaningful:
            self.flags.add(F.TIMING_NOT_MEANINGFUL, "Triton under the CPU interpreter: correctness only")
        self.details["flag_reasons"] = text.clean_tree(self.flags.reasons(), 300)
        return EvalResult(
            compiled=self.compiled, correct=self.correct, runtime=self.runtime if meaningful else None,
            baseline=self.baseline if meaningful else None, speedup=self.speedup if meaningful else None,
            speedup_spread=self.speedup_spread if meaningful else None, timing_meaningful=meaningful,
            flags=self.flags.names(), disqualified=bool(strict), error_kind=error_kind, error=error,
            details=self.details, fingerprint=self.fingerprint)


def evaluate(reference_src: str, solution_src: str, settings: EvalSettings = EvalSettings()) -> EvalResult:
    """Evaluate a solution against a reference. Raises only for invalid settings; whatever the
    solution does becomes an EvalResult (harness faults become error_kind "harness_error",
    reference failures "reference_error", code for a backend the device cannot run
    "backend_mismatch")."""
    settings.validate()
    verdict = _Verdict(settings, device_fingerprint(settings.device))
    try:
        _evaluate(verdict, reference_src, solution_src, settings)
    except ReferenceFault as fault:
        verdict.fail("reference_error", str(fault), reference_transient=fault.transient)
    except Exception as exc:  # a harness bug must not take the worker down either
        verdict.error_kind, verdict.error = "harness_error", text.clean(f"{type(exc).__name__}: {exc}", MAX_ERROR)
        verdict.details["traceback"] = traceback.format_exc()[-4000:]
    return verdict.result()


def _evaluate(v: _Verdict, reference_src: str, solution_src: str, settings: EvalSettings) -> None:
    static = static_checks.analyse(solution_src, reference_src)
    v.flags.merge(static.flags)
    if static.syntax_error:
        v.fail("compile_error", static.syntax_error, phase="compile", stage="python", compile_log=static.syntax_error)
        return
    backend = static_checks.detect_backend(solution_src)
    v.details["backend"] = backend
    if backend == "cuda" and settings.device != "cuda":
        v.fail("backend_mismatch", f"the solution is written for CUDA, but this evaluation runs on {settings.device}: "
               "it was not run", phase="setup")
        return
    settings = replace(settings, backend=backend)
    v.settings = settings
    if v.flags.strict(settings.strict_flags) and settings.skip_run_when_disqualified:
        v.details["not_run"] = "statically disqualified; no process was started"
        return
    first = Session(reference_src, solution_src, settings, toolchain(v.fingerprint)).run()
    _judge(v, first)
    if not v.correct or not settings.timing_meaningful or v.flags.strict(settings.strict_flags):
        return
    _timing_verdict(v, first)
    if v.speedup is not None and v.speedup > settings.speedup_recheck_threshold:
        _recheck(v, reference_src, solution_src, settings)


# --- judging one pass --------------------------------------------------------------------------------

def _judge(v: _Verdict, run: PassOutcome) -> None:
    _note_sandbox(v, run)
    _note_builds(v, run)
    v.details["phase_wall_s"] = {**v.details.get("phase_wall_s", {}), **run.walls}
    v.details.update(calls=run.calls, verified_calls=run.verified_calls, verified_bytes=run.verified_bytes)
    failed_build = next((b for b in run.builds if not b.ok), None)
    if failed_build is not None:
        _record_build_failure(v, failed_build)
        return
    v.compiled = run.ready
    if run.fault is not None:
        _record_fault(v, run)
        return
    if run.mismatch is not None:
        _record_mismatch(v, run)
        return
    v.correct = run.summary is not None
    _runtime_flags(v, run)


def _note_sandbox(v: _Verdict, run: PassOutcome) -> None:
    v.fingerprint.update(run.facts)
    if run.facts.get("sandbox") == "none":
        v.details["warnings"].append(f"not sandboxed ({run.facts.get('sandbox_unavailable')}): the candidate saw the "
                                     "host's files, network and processes")
    if run.facts.get("memory_cap") is None:
        v.details["warnings"].append("no memory cap: no memory cgroup could be created on this host")


def _note_builds(v: _Verdict, run: PassOutcome) -> None:
    v.details["builds"] = [b.summary() for b in run.builds]
    for build in run.builds:
        if not (build.ok and build.aten_calls):
            continue
        calls = ", ".join(build.aten_calls[:6])
        if build.own_compute:
            v.flags.add(F.TORCH_COMPUTE_OPS, f"extension {build.name} also calls ATen: {calls}")
        else:
            v.flags.add(F.NO_CUSTOM_KERNEL, f"extension {build.name} only wraps ATen functions ({calls}) "
                                            "and computes nothing itself")


def _record_build_failure(v: _Verdict, build) -> None:
    v.fail("compile_error", build.feedback or f"building extension {build.name} failed",
           phase="compile", compile_log=build.log[:8000], extension=build.name)


def _record_fault(v: _Verdict, run: PassOutcome) -> None:
    fault, exit_ = run.fault, run.candidate_exit
    cause, phase = fault.cause, fault.phase
    if isinstance(cause, ChildFailed):
        _record_child_error(v, cause.header, phase)
    elif isinstance(cause, ChildTimeout):
        v.flags.add(F.TIMEOUT, f"the {phase} exceeded its limit")
        limit = v.settings.compile_timeout_s if phase == "setup" else v.settings.run_timeout_s
        v.fail("timeout", f"timed out during {phase} (limit {limit:g} s)", phase=phase)
    elif isinstance(cause, wire.PeerClosed):
        _record_crash(v, exit_, phase)
    else:
        v.flags.add(F.HARNESS_TAMPERING, f"the result channel was not used as the harness uses it: {cause}")
        v.flags.add(F.CRASHED, "protocol violation")
        v.fail("crashed", f"the solution's process broke the evaluation protocol ({cause})", phase=phase)


def _record_crash(v: _Verdict, exit_, phase: str) -> None:
    if exit_ is not None and exit_.oom_killed:
        v.flags.add(F.OUT_OF_MEMORY, f"killed at the memory cap ({v.settings.memory_limit_mb} MB) during {phase}")
        v.fail("crashed", f"the solution's process ran out of memory (cap {v.settings.memory_limit_mb} MB) during {phase}",
               phase=phase)
        return
    how = (f"was killed by {signal_name(exit_.signal)}" if exit_ and exit_.signal else
           f"exited with code {exit_.code if exit_ else '?'}")
    v.flags.add(F.CRASHED, f"process {how} during {phase}")
    stderr = exit_.stderr_tail if exit_ else ""
    v.fail("crashed", f"the solution's process {how} during {phase} before answering" + _crash_context(stderr),
           phase=phase, stderr_tail=stderr[-1500:])


def _record_child_error(v: _Verdict, error: dict, phase: str) -> None:
    kind = error.get("kind")
    phase = error.get("phase") if error.get("phase") in ("import", "init", "run") else phase
    # past the import, the solution and its builds were usable: "compiled" (worth no more than
    # any compiling answer, so the child's word on its phase is enough here)
    v.compiled = v.compiled or phase in ("init", "run") or kind == "invalid_solution"
    message = text.clean(error.get("traceback") or "", 4000).strip() or text.clean(error.get("message", ""), 2000)
    if kind == "compile_error":
        v.fail("compile_error", message, phase="compile", compile_log=message[:8000])
        return
    if kind == "invalid_solution":
        v.fail("invalid_solution", text.clean(error.get("message", ""), 2000), phase=phase)
        return
    if error.get("oom"):
        v.flags.add(F.OUT_OF_MEMORY, f"memory exhausted during {phase}")
    v.fail("runtime_error", f"{phase}: {message}", phase=phase, traceback=text.clean(error.get("traceback", ""), 4000))


def _crash_context(stderr: str) -> str:
    """The faulthandler lines that point into the solution, if any."""
    keep = [l.strip() for l in stderr.splitlines() if "Fatal Python error" in l or "solution.py" in l or "Error" in l]
    keep = [re.sub(r'"?[^"\s]*/solution\.py"?', "solution.py", l) for l in keep][-6:]
    return (":\n" + "\n".join(keep)) if keep else ""


def _record_mismatch(v: _Verdict, run: PassOutcome) -> None:
    mismatch = run.mismatch
    if mismatch.tampered:
        v.flags.add(F.HARNESS_TAMPERING, mismatch.tampered)
        v.fail("incorrect", mismatch.tampered, **mismatch.details)
        return
    v.fail("incorrect", describe_failure(mismatch.details), **mismatch.details)


def _runtime_flags(v: _Verdict, run: PassOutcome) -> None:
    """The candidate's own account of its kernels, used only against it."""
    s = run.summary
    if s is None:
        return
    if s["kernels_defined"] == 0:
        v.flags.add(F.NO_CUSTOM_KERNEL, "no extension was loaded and no Triton kernel was defined at run time")
    elif s["launches"] == 0 and not s["uncounted"]:
        v.flags.add(F.KERNEL_NEVER_LAUNCHED, f"no custom kernel was launched in {run.calls} calls")


# --- timing ---------------------------------------------------------------------------------------------

def _timing_verdict(v: _Verdict, run: PassOutcome) -> None:
    if not run.batches:
        v.details["warnings"].append("no timed batch")
        return
    v.baseline = timing.summarise([b.reference_ms() for b in run.batches])
    v.runtime = timing.summarise([b.candidate_ms() for b in run.batches])
    v.speedup, v.speedup_spread = timing.speedup(v.baseline, v.runtime)
    v.details["timing"] = {
        "calls_per_batch": run.batches[-1].calls, "batches": len(run.batches),
        "credit_ms": round(statistics.median(b.credit_s for b in run.batches) * 1e3, 4),
        "method": "parent clock: each side's window less the reference's round trip and inputs; the "
                  "reference timed alone after the candidate's processes are gone"}


def _recheck(v: _Verdict, reference_src: str, solution_src: str, settings: EvalSettings) -> None:
    """Run again in fresh processes on fresh inputs; believe the speedup only if it holds up."""
    v.flags.add(F.SPEEDUP_RECHECKED, f"speedup {v.speedup:.2f} above {settings.speedup_recheck_threshold:g}")
    shadow = _Verdict(settings, v.fingerprint)
    started = time.monotonic()
    run = Session(reference_src, solution_src, settings, toolchain(v.fingerprint)).run()
    v.details["phase_wall_s"]["recheck_s"] = round(time.monotonic() - started, 3)
    _judge(shadow, run)
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
    _timing_verdict(shadow, run)
    recheck.update(runtime=shadow.runtime and shadow.runtime.__dict__, speedup=shadow.speedup)
    if shadow.speedup is None:
        return
    ratio = max(shadow.speedup, v.speedup) / min(shadow.speedup, v.speedup)
    if ratio > settings.speedup_disagreement_factor:
        v.flags.add(F.SPEEDUP_UNCONFIRMED, f"speedups {v.speedup:.2f} and {shadow.speedup:.2f} disagree; "
                                           "the slower measurement is kept")
    if shadow.speedup < v.speedup:  # conservative: keep the slower of the two measurements
        v.runtime, v.baseline = shadow.runtime, shadow.baseline
        v.speedup, v.speedup_spread = shadow.speedup, shadow.speedup_spread
