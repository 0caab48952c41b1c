"""Parent side of the reference child: expected outputs, input files and the baseline."""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

from . import payload, sandbox
from .settings import EvalSettings
from .workspace import Workspace


@dataclass
class ReferenceRun:
    outputs: list = field(default_factory=list)      # per trial: list of CPU tensors
    final_outputs: list = field(default_factory=list)  # the check trial run after timing
    trials: list = field(default_factory=list)       # per trial: the child's trial message
    outputs_fp32: bool = True
    timing_sets: int = 0
    times_ms: list | None = None
    error: str | None = None
    details: dict = field(default_factory=dict)

    @property
    def poison_sizes(self) -> list[int]:
        return [t.numel() * t.element_size() for t in (self.outputs[0] if self.outputs else [])]


def run_reference(reference_src: str, settings: EvalSettings, ws: Workspace, seeds: list[int],
                  timing_seeds: list[int], init_seed: int, do_timing: bool, final_seed: int,
                  extra_warmup: int = 0) -> ReferenceRun:
    job = {
        "role": "reference", "device": settings.device,
        "cpu_threads": settings.cpu_threads, "reference_path": ws.write(ws.ref, "reference.py", reference_src),
        "inputs_dir": ws.inputs, "outputs_dir": ws.ref, "seeds": seeds, "timing_seeds": timing_seeds,
        "final_seed": final_seed, "extra_warmup": extra_warmup,
        "init_seed": init_seed, "make_timing_inputs": settings.timing_meaningful, "do_timing": do_timing,
        "warmup": settings.warmup_runs, "trials": settings.timing_trials,
        "timing_budget_mb": settings.timing_input_budget_mb, "l2_flush_mb": settings.l2_flush_mb,
    }
    env = sandbox.child_env(settings, ws.ref, f"ref-{uuid.uuid4().hex[:12]}")
    # The reference is trusted and keeps the worker's uid: it must write the candidate's
    # inputs, and a shared uid with candidates would expose its expected outputs to them.
    with sandbox.confinement(settings, unprivileged=False) as conf:
        job["limits"] = conf.job_limits(settings)
        outcome = sandbox.run_child(ws.write_job(ws.ref, job), ws.ref, env, sandbox.phase_limits(settings), conf)
    run = ReferenceRun()
    run.details = {"phase_wall_s": outcome.phase_wall_s}
    problem = _problem_with(outcome, len(seeds))
    if problem:
        run.error = problem
        return run
    run.trials = sorted(outcome.of_type("trial"), key=lambda m: m["index"])
    info = outcome.first("reference_info")
    run.outputs_fp32, run.timing_sets = info["outputs_fp32"], info["timing_sets"]
    timing = outcome.first("timing")
    run.times_ms = timing["times_ms"] if timing else None
    run.outputs = [payload.load_values(os.path.join(ws.ref, f"ref_{i}.pt")) for i in range(len(seeds))]
    run.final_outputs = payload.load_values(os.path.join(ws.ref, "ref_final.pt"))
    return run


def _problem_with(outcome: sandbox.ChildOutcome, n_trials: int) -> str | None:
    error = outcome.first("error")
    if error:
        text = error["message"]
        if error["traceback"]:
            text += "\n" + error["traceback"]
        return f"the reference program failed: {text}"
    if outcome.protocol_error:
        return f"reference child protocol error: {outcome.protocol_error}"
    if outcome.timed_out:
        return f"the reference program timed out in phase {outcome.phase}"
    if not outcome.finished or outcome.first("reference_info") is None:
        why = sandbox.signal_name(outcome.exit_signal) or f"exit code {outcome.exit_code}"
        return f"the reference child died ({why}): {outcome.stderr_tail[-800:]}"
    if len(outcome.of_type("trial")) != n_trials:
        return "the reference child reported the wrong number of trials"
    return None
