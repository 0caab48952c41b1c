"""Pre-flight of a problem: its reference program alone, once, in the sandbox on the chosen
device, before any generation is paid for. It imports (no network, no package the host lacks),
builds its Model, generates one input set and computes one output within the memory and time
limits, or it says plainly why not; its forward() time and the peak memory of its process come
back for the run's limits and for the record."""
from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass

from . import text
from .arena import Arena
from .sandbox.child import Child, Spec
from .session import PROBLEM, ReferenceFault, Workspace, go, job_for, make_inputs, out_of_memory, output_bytes, reference_step
from .settings import EvalSettings

FIRST_CHUNK = 1 << 30


@dataclass(frozen=True)
class ProblemCheck:
    ok: bool
    error: str | None = None
    transient: bool = False          # running it again may succeed (a timeout, a crash)
    forward_ms: float | None = None  # one call of the reference's forward(), inputs in place
    setup_s: float | None = None     # start, import, Model(...)
    peak_memory_mb: float | None = None
    input_mb: float | None = None
    output_mb: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def preflight(reference_src: str, settings: EvalSettings) -> ProblemCheck:
    settings.validate()
    with Workspace() as ws:
        child = Child(Spec("reference", settings, ws.root, files={PROBLEM: ws.write("problem.py", reference_src)}))
        try:
            child.start()
            job = job_for(child, "reference", settings, secrets.randbits(31))
            _, setup_s = reference_step(lambda: child.request(job, "ready", settings.compile_timeout_s))
            seeds = [secrets.randbits(62)]
            handover = make_inputs(child, seeds, settings.run_timeout_s) if settings.device == "cpu" else None
            try:
                with Arena() as arena:
                    batch = reference_step(lambda: go(child, seeds, FIRST_CHUNK, handover, True, settings.run_timeout_s,
                                                      arena=arena))
            finally:
                if handover is not None:
                    handover.close()
        except ReferenceFault as fault:
            exit_ = child.close()
            fault = out_of_memory(fault, exit_, settings)
            return ProblemCheck(ok=False, error=text.clean(str(fault), 2000), transient=fault.transient,
                                peak_memory_mb=_mb(exit_.peak_bytes))
        exit_ = child.close()
    return ProblemCheck(ok=True, forward_ms=round(batch.forward_s * 1e3, 4), setup_s=round(setup_s, 3),
                        peak_memory_mb=_mb(exit_.peak_bytes), input_mb=_mb(batch.input_bytes),
                        output_mb=_mb(sum(output_bytes(batch.signature))))


def _mb(nbytes: int | None) -> float | None:
    return None if nbytes is None else round(nbytes / (1 << 20), 1)
