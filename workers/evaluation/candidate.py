"""Parent side of the candidate child: run it, collect its messages and output files."""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

from . import compile_cache, payload, sandbox
from .settings import EvalSettings
from .workspace import Workspace

ONCE_ONLY = ("correctness", "timing", "timing_audit", "final_trial")


@dataclass
class CandidateRun:
    outcome: sandbox.ChildOutcome
    trials: list = field(default_factory=list)     # trial messages, by index
    outputs: list = field(default_factory=list)    # per completed trial: list of CPU tensors
    second_run: list | None = None                 # trial 0 again, other allocator poison
    summary: dict | None = None                    # the "correctness" message
    times_ms: list | None = None
    timing_audit: dict | None = None               # launches per timed call, harness rebinding
    timing_wall_s: float | None = None             # the parent's clock over the timing phase
    final_trial: dict | None = None                # the check trial after timing
    final_outputs: list | None = None
    repeated_messages: list = field(default_factory=list)  # once-only message types sent twice
    error: dict | None = None                      # the child's "error" message
    unreadable_outputs: str | None = None
    builds: list = field(default_factory=list)
    sandbox: dict = field(default_factory=dict)    # what confinement took effect (fingerprint)


def run_candidate(solution_src: str, settings: EvalSettings, ws: Workspace, *, init_seed: int,
                  n_trials: int, n_timing_sets: int, poison_sizes: list[int], do_timing: bool,
                  compiler_id: str, extra_warmup: int = 0) -> CandidateRun:
    ext_dir = settings.resolved_extensions_dir()
    use_triton = settings.backend == "triton" or "triton" in solution_src
    with sandbox.confinement(settings, unprivileged=True) as conf:
        compile_cache.share_with(ext_dir, conf.user.gid if conf.user else None)
        job = {
            "role": "candidate", "limits": conf.job_limits(settings, reach=(ext_dir,)), "device": settings.device,
            "cpu_threads": settings.cpu_threads, "solution_path": ws.write(ws.cand, "solution.py", solution_src),
            "inputs_dir": ws.inputs, "outputs_dir": ws.outputs, "n_trials": n_trials,
            "n_timing_sets": n_timing_sets, "init_seed": init_seed, "do_timing": do_timing,
            "warmup": settings.warmup_runs, "trials": settings.timing_trials, "l2_flush_mb": settings.l2_flush_mb,
            "extensions_dir": ext_dir, "compiler_id": compiler_id, "poison_sizes": poison_sizes,
            "use_triton": use_triton, "extra_warmup": extra_warmup,
        }
        extra_env = compile_cache.ccache_env(ext_dir)
        if use_triton:
            extra_env["TRITON_CACHE_DIR"] = os.path.join(ext_dir, "triton")
        env = sandbox.child_env(settings, ws.cand, f"cand-{uuid.uuid4().hex[:12]}", extra_env)
        ws.hand_over(conf.user)
        outcome = sandbox.run_child(ws.write_job(ws.cand, job), ws.cand, env, sandbox.phase_limits(settings), conf)
        if conf.user is not None:  # while the uid is still ours: no other child can be using it
            compile_cache.seal(ext_dir)
            compile_cache.remove_builds_of(ext_dir, conf.user.uid)
        sandbox_facts = conf.describe(outcome.first("hello"))
    run = CandidateRun(outcome=outcome, sandbox=sandbox_facts)
    run.error = outcome.first("error")
    run.builds = outcome.of_type("build")
    run.summary = outcome.first("correctness")
    timing = outcome.first("timing")
    run.times_ms = timing["times_ms"] if timing else None
    run.timing_audit = outcome.first("timing_audit")
    run.timing_wall_s = outcome.phase_wall_s.get("timing")
    run.final_trial = outcome.first("final_trial")
    # the harness sends each of these once; a second one was written by the solution
    run.repeated_messages = [k for k in ONCE_ONLY if len(outcome.of_type(k)) > 1]
    run.trials = _unique_trials(outcome.of_type("trial"))
    _load_outputs(run, ws, poison_sizes)
    return run


def _unique_trials(messages: list[dict]) -> list[dict]:
    """First report per index (a forged duplicate cannot replace it), indices 0..n-1 only."""
    by_index: dict[int, dict] = {}
    for m in messages:
        by_index.setdefault(m["index"], m)
    trials = []
    while len(trials) in by_index:
        trials.append(by_index[len(trials)])
    return trials


def _load_outputs(run: CandidateRun, ws: Workspace, poison_sizes: list[int]) -> None:
    # an output can legitimately be larger than the reference's only if it is wrong; cap the read
    limit = 4 * sum(poison_sizes) + (16 << 20)
    try:
        for trial in run.trials:
            path = os.path.join(ws.outputs, f"cand_{trial['index']}.pt")
            run.outputs.append(payload.load_values(path, max_bytes=limit))
        second = os.path.join(ws.outputs, "cand_0_b.pt")
        if run.trials and os.path.exists(second):
            run.second_run = payload.load_values(second, max_bytes=limit)
        final = os.path.join(ws.outputs, "cand_final.pt")
        if run.final_trial is not None and os.path.exists(final):
            run.final_outputs = payload.load_values(final, max_bytes=limit)
    except Exception as exc:  # a candidate may have scribbled over its output files
        run.unreadable_outputs = f"{type(exc).__name__}: {exc}"[:500]
