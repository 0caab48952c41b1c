"""python -m workers.evaluation --problem REF.py --solution SOL.py [--device cpu|cuda]
[--backend cpp|cuda|triton] [--timeout S] [--json]

Prints the EvalResult (one JSON object with --json). Exit 0 whenever an evaluation was
produced, failing or not; 2 for unusable arguments."""
from __future__ import annotations

import argparse
import json
import os
import sys

from .settings import BACKENDS, DEVICES


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workers.evaluation", description=__doc__.split("\n")[0])
    p.add_argument("--problem", required=True, help="KernelBench-style reference program (Model, get_inputs, ...)")
    p.add_argument("--solution", required=True, help="candidate module defining ModelNew")
    p.add_argument("--device", choices=DEVICES, default="cpu")
    p.add_argument("--backend", choices=BACKENDS, default=None, help="default: cpp on cpu, cuda on cuda")
    p.add_argument("--timeout", type=float, default=None, help="seconds for each of correctness and timing")
    p.add_argument("--compile-timeout", type=float, default=None)
    p.add_argument("--trials", type=int, default=None, help="correctness trials")
    p.add_argument("--timing-trials", type=int, default=None)
    p.add_argument("--extensions-dir", default=None)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    for path in (args.problem, args.solution):
        if not os.path.isfile(path):
            parser.error(f"no such file: {path}")  # exits with status 2
    backend = args.backend or ("cuda" if args.device == "cuda" else "cpp")
    overrides = {"run_timeout_s": args.timeout, "compile_timeout_s": args.compile_timeout,
                 "correctness_trials": args.trials, "timing_trials": args.timing_trials,
                 "extensions_dir": args.extensions_dir}
    from .harness import evaluate
    from .settings import EvalSettings
    try:
        settings = EvalSettings(backend=backend, device=args.device,
                                **{k: v for k, v in overrides.items() if v is not None})
        settings.validate()
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    with open(args.problem) as f:
        reference_src = f.read()
    with open(args.solution) as f:
        solution_src = f.read()
    result = evaluate(reference_src, solution_src, settings)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        _print_human(result)
    return 0


def _print_human(result) -> None:
    status = "DISQUALIFIED" if result.disqualified else ("correct" if result.correct else "not correct")
    print(f"compiled={result.compiled} {status} error_kind={result.error_kind}")
    if result.flags:
        print("flags: " + ", ".join(result.flags))
    if result.speedup is not None:
        print(f"runtime {result.runtime.median_ms:.4f} ms, baseline {result.baseline.median_ms:.4f} ms, "
              f"speedup {result.speedup:.3f} ± {result.speedup_spread:.3f}")
    if result.error:
        print(result.error)


if __name__ == "__main__":
    sys.exit(main())
