"""Benchmarks of the evaluation harness (figures, not pass/fail tests).

    .venv/bin/python bench/bench_evaluation.py [--solutions 20] [--distinct 4] [--repeats 5]

1. Throughput: evaluations per minute on CPU for N honest C++ solutions built from
   D distinct kernel sources, first with a cold extension cache (fresh directory), then
   warm (same directory again). Default EvalSettings otherwise.
2. Calibration: the reference's own torch code wrapped as ModelNew (kernel requirement
   relaxed through strict_flags) on a 1M-element ReLU, evaluated R times: the speedup
   must sit within 1.00 +/- 0.05 when reference and candidate are timed alike.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workers.evaluation import EvalSettings, evaluate  # noqa: E402
from workers.evaluation.flags import DEFAULT_STRICT_FLAGS, KERNEL_REQUIREMENT_FLAGS  # noqa: E402

CORPUS = ROOT / "tests" / "evaluation_corpus"
RELU = (CORPUS / "problems" / "relu.py").read_text()
BIG_RELU = (CORPUS / "problems" / "big_relu.py").read_text()
HONEST = (CORPUS / "solutions" / "honest_cpp_relu.py").read_text()
WRAPPED = (CORPUS / "solutions" / "torch_wrapped_reference.py").read_text()


def variant(index: int) -> str:
    """A distinct kernel source (distinct content hash) doing the same work."""
    return HONEST.replace('CPP_SOURCE = r"""', f'CPP_SOURCE = r"""\n// variant {index}', 1)


def throughput(solutions: list[str], settings: EvalSettings) -> tuple[float, int]:
    started = time.monotonic()
    correct = 0
    for source in solutions:
        result = evaluate(RELU, source, settings)
        correct += result.correct and not result.disqualified
    return time.monotonic() - started, correct


def bench_throughput(n: int, distinct: int) -> None:
    solutions = [variant(i % distinct) for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="kturn-bench-ext-") as ext:
        settings = EvalSettings(extensions_dir=ext)
        for label in ("cold", "warm"):
            wall, correct = throughput(solutions, settings)
            print(f"[throughput] {label:4s} cache: {n} evaluations ({distinct} distinct kernels) in {wall:6.1f} s"
                  f" = {60 * n / wall:5.1f} evaluations/min, {correct}/{n} correct", flush=True)


def bench_calibration(repeats: int) -> bool:
    strict = tuple(f for f in DEFAULT_STRICT_FLAGS if f not in KERNEL_REQUIREMENT_FLAGS)
    settings = EvalSettings(strict_flags=strict, timing_trials=100, warmup_runs=10)
    speedups = []
    for i in range(repeats):
        result = evaluate(BIG_RELU, WRAPPED, settings)
        assert result.correct and not result.disqualified, result.error
        speedups.append(result.speedup)
        print(f"[calibration] run {i + 1}: baseline {result.baseline.median_ms:.4f} ms "
              f"(IQR {result.baseline.spread_ms:.4f}), candidate {result.runtime.median_ms:.4f} ms "
              f"(IQR {result.runtime.spread_ms:.4f}), speedup {result.speedup:.3f} ± {result.speedup_spread:.3f}",
              flush=True)
    ok = all(0.95 <= s <= 1.05 for s in speedups)
    print(f"[calibration] speedups mean {statistics.mean(speedups):.3f}, min {min(speedups):.3f}, "
          f"max {max(speedups):.3f}: {'within' if ok else 'OUTSIDE'} 1.00 ± 0.05")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--solutions", type=int, default=20)
    parser.add_argument("--distinct", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    if not args.skip_throughput:
        bench_throughput(args.solutions, args.distinct)
    return 0 if bench_calibration(args.repeats) else 1


if __name__ == "__main__":
    sys.exit(main())
