"""Evaluation settings: everything keyword-constructible, frozen, JSON-serialisable."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .flags import DEFAULT_STRICT_FLAGS

BACKENDS = ("cpp", "cuda", "triton")
CUDA_ARCH_LIST = re.compile(r"[0-9]+\.[0-9]+[af]?(\+PTX)?([ ;][0-9]+\.[0-9]+[af]?(\+PTX)?)*")
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class EvalSettings:
    # The backend the model was asked to write for (the prompt says so). The evaluation itself
    # uses the backend the code is written in; one the device cannot run is a backend mismatch.
    backend: str = "cpp"            # "cpp" | "cuda" | "triton"
    device: str = "cpu"             # "cpu" | "cuda"
    correctness_trials: int = 5       # at least this many calls on fresh inputs are compared
    atol: float = 1e-4              # fp32 tolerances
    rtol: float = 1e-4
    low_precision_tol: float = 1e-2  # fp16/bf16: used as both atol and rtol (and as the norm tolerance)
    norm_rtol: float = 1e-3          # |got - expected| / |expected| over all compared values (fp32)
    warmup_runs: int = 3              # warm-up batches (compared, not timed; at least three when timing)
    timing_trials: int = 20           # timed batches: each one sample of the per-call time
    timing_batch_ms: float = 10.0     # a batch makes enough calls to take about this long
    max_calls_per_batch: int = 1000
    batch_memory_mb: int = 4096       # inputs and outputs of one batch's calls, on the device
    verify_mb_per_batch: int = 4      # output bytes compared with the reference's per batch (chosen at random)
    compile_timeout_s: float = 600.0  # bounds the child's start-up, the solution's import and its builds
    run_timeout_s: float = 120.0      # bounds each request of the run (a batch, a store)
    evaluation_timeout_s: float = 1800.0  # bounds a whole pass (set-up, batches, baseline) whatever each request takes
    max_builds: int = 8               # extensions one answer may have built
    extensions_cache_mb: int = 20480  # the build cache is kept under this size (oldest entries go first)
    memory_limit_mb: int = 4096       # memory cgroup per child (RLIMIT_AS on a CPU host without one)
    tmp_mb: int = 1024                # each private tmpfs (/tmp, /var/tmp, /dev/shm) of a child
    cpu_threads: int = 1              # same for reference and candidate
    speedup_recheck_threshold: float = 10.0
    speedup_disagreement_factor: float = 2.0  # recheck speedup off by more than this: not believed
    extensions_dir: str | None = None  # default $KTURN_EXTENSIONS_DIR or ~/.cache/kturn/extensions
    max_build_jobs: int = 2
    cuda_arch_list: str | None = None  # TORCH_CUDA_ARCH_LIST for builds (default: torch's choice for the visible GPU)
    strict_flags: tuple[str, ...] = DEFAULT_STRICT_FLAGS  # flags that disqualify (reward 0)
    skip_run_when_disqualified: bool = True  # a static strict flag ends the evaluation before any child runs
    max_processes: int = 512          # pids cgroup per child; RLIMIT_NPROC where no cgroup
    max_file_mb: int = 2048           # RLIMIT_FSIZE (at least memory_limit_mb: a batch's inputs are one file)
    # When the harness runs as root, each child runs as a uid of its own from
    # [sandbox_uid, sandbox_uid + sandbox_uid_pool), group sandbox_uid (see sandbox/users.py).
    # Unassigned ids by default: no host account or file belongs to them. 0 turns it off.
    sandbox_uid: int = 1_000_000_000
    sandbox_uid_pool: int = 4096

    def __post_init__(self) -> None:
        # settings round-trip through JSON (run configs): lists come back, keep it hashable
        object.__setattr__(self, "strict_flags", tuple(self.strict_flags))

    def resolved_extensions_dir(self) -> str:
        if self.extensions_dir:
            return os.path.abspath(self.extensions_dir)
        env = os.environ.get("KTURN_EXTENSIONS_DIR")
        if env:
            return os.path.abspath(env)
        return os.path.join(os.path.expanduser("~"), ".cache", "kturn", "extensions")

    def tolerance_for(self, dtype_name: str) -> tuple[float, float]:
        """(atol, rtol) for an output dtype given as str(torch.dtype)."""
        if dtype_name in ("torch.float16", "torch.bfloat16"):
            return self.low_precision_tol, self.low_precision_tol
        return self.atol, self.rtol

    def norm_tolerance_for(self, dtype_name: str) -> float:
        """How large the error's norm may be next to the output's norm."""
        if dtype_name in ("torch.float16", "torch.bfloat16"):
            return self.low_precision_tol
        return self.norm_rtol

    @property
    def timing_meaningful(self) -> bool:
        # Triton on CPU runs under TRITON_INTERPRET=1: numbers would time the interpreter.
        return not (self.backend == "triton" and self.device == "cpu")

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.backend == "cuda" and self.device != "cuda":
            raise ValueError("backend 'cuda' needs device 'cuda'")
        if self.correctness_trials < 1 or self.timing_trials < 1 or self.warmup_runs < 0:
            raise ValueError("correctness_trials and timing_trials must be >= 1, warmup_runs >= 0")
        if self.timing_batch_ms <= 0 or self.max_calls_per_batch < 1 or self.verify_mb_per_batch < 1:
            raise ValueError("timing_batch_ms, max_calls_per_batch and verify_mb_per_batch must be positive")
        if self.cuda_arch_list is not None and not CUDA_ARCH_LIST.fullmatch(self.cuda_arch_list):
            raise ValueError(f"cuda_arch_list {self.cuda_arch_list!r} is not a TORCH_CUDA_ARCH_LIST such as '9.0' or '8.0;9.0+PTX'")
