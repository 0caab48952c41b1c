"""Building a candidate's extensions ahead of its evaluation, on a CPU host (the build stage).

The candidate's solution is imported and its ModelNew constructed on the CPU in the candidate
sandbox, and every load_inline / load it asks for is built by the parent's Builder exactly as
during an evaluation, with the evaluation's own settings (CUDA sources for the run's
TORCH_CUDA_ARCH_LIST). The builds land in this host's extension cache under the keys the
evaluation will look up, from where they travel to the evaluate worker (`read_entry` /
`install_entry`). What cannot be built here — a ModelNew that needs the GPU while it is
constructed, an extension built lazily in forward() — is simply missing, and the evaluate
worker builds it itself, as it always could. Nothing here scores the answer: a failed build is
cached like any build and becomes its compile error at evaluation.
"""
from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, replace

from . import text, wire
from .builds import Builder, BuildRecord, CacheEntry, read_entry
from .fingerprint import device_fingerprint, toolchain
from .sandbox.child import Child, ChildFailed, ChildTimeout, Spec
from .session import PROBLEM, SOLUTION, Workspace, job_for
from .settings import EvalSettings

# What a solution must mention to build anything: both of torch's ways in go through this module.
BUILD_CALL = re.compile(r"\bcpp_extension\b|\bload_inline\b")


@dataclass(frozen=True)
class Prebuilt:
    builds: list[BuildRecord]
    entries: list[CacheEntry]       # the published builds, ready to travel with the turn
    stopped: str | None             # why the import or construction on the CPU ended early
    seconds: float

    def summary(self) -> dict:
        return {"builds": [b.summary() for b in self.builds], "stopped": self.stopped, "seconds": round(self.seconds, 3)}


def not_ahead(solution_src: str, settings: EvalSettings) -> str | None:
    """Why this answer is not built ahead (None: it is)."""
    if not BUILD_CALL.search(solution_src):
        return "no extension to build"
    if settings.device == "cuda" and not settings.cuda_arch_list:
        # without a target list a build host would pick architectures that need not include the
        # GPU's: the evaluate worker builds for its own GPU instead
        return "a CUDA run without cuda_arch_list (kturn run --cuda-arch): built on the GPU host"
    return None


def prebuild(reference_src: str, solution_src: str, settings: EvalSettings) -> Prebuilt:
    settings.validate()
    started = time.monotonic()
    on_cpu = replace(settings, device="cpu", backend="cpp" if settings.backend == "cuda" else settings.backend)
    with Workspace() as ws:
        files = {PROBLEM: ws.write("problem.py", reference_src), SOLUTION: ws.write("solution.py", solution_src)}
        candidate = Child(Spec("candidate", on_cpu, ws.root, files=files))
        builder = Builder(settings, solution_src, toolchain(device_fingerprint("cpu")), ws.root)
        stopped = None
        try:
            candidate.start()
            job = job_for(candidate, "candidate", on_cpu, secrets.randbits(31), solution_src)
            candidate.request(job, "ready", settings.compile_timeout_s, serve=lambda m: builder.serve(candidate, m))
        except (ChildFailed, ChildTimeout, wire.ProtocolError) as error:
            stopped = text.clean(f"{type(error).__name__}: {error}", 500)
        finally:
            candidate.close()
    root = settings.resolved_extensions_dir()
    entries = [e for b in builder.records if b.key and (e := read_entry(root, b.key)) is not None]
    return Prebuilt(builder.records, entries, stopped, time.monotonic() - started)
