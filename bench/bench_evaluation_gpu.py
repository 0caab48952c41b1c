"""GPU evaluation cost, on a CUDA host (scripts/gpu_check.sh runs it):

    python bench/bench_evaluation_gpu.py [--evaluations 8] [--json FILE]

For each problem (the bundled 64x4096 ReLU and 2^18-element scaled add, and a 4096x4096 ReLU),
the recorded correct CUDA answer of the GPU demo is evaluated in a steady stream, one after the
other as an evaluate worker would: the first evaluation builds the extension (reported apart),
the others load the ready build. Per evaluation: the phase breakdown the harness stores with the
turn, the kernels' own timed work (the batches' windows) and the overhead beyond it; over the
stream: how busy the GPU was (nvidia-smi sampled every 100 ms). Goals (issue 8): at most 5 s of
overhead per level-1 evaluation with a ready build, the GPU busy at least 70 % of the time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workers.cleaning import clean_response  # noqa: E402
from workers.evaluation import EvalSettings, evaluate  # noqa: E402

PROBLEMS = ROOT / "orchestrator" / "data" / "problems" / "level1"
ANSWERS = ROOT / "orchestrator" / "data" / "demo_answers_cuda.jsonl"
BIG_RELU = PROBLEMS.joinpath("1_ReLU.py").read_text().replace("batch_size = 64", "batch_size = 4096")


def correct_answer(problem: str) -> str:
    answers = [json.loads(line) for line in ANSWERS.read_text().splitlines()]
    last = max((a for a in answers if a["problem"] == problem), key=lambda a: a["turn"])
    return clean_response(last["text"]).code


class GpuBusy:
    """Samples nvidia-smi's utilization.gpu (percent of time a kernel ran) while it is open."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                       "-i", "0", "-lms", "100"], stdout=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            if line.strip().isdigit():
                self.samples.append(float(line))

    def close(self) -> float | None:
        self._proc.terminate()
        self._proc.wait()
        return statistics.mean(self.samples) if self.samples else None


def stream(name: str, reference: str, solution: str, evaluations: int, settings: EvalSettings) -> dict:
    first = evaluate(reference, solution, settings)  # builds the extension
    assert first.correct, first.error
    busy, rows, started = GpuBusy(), [], time.monotonic()
    for _ in range(evaluations):
        began = time.monotonic()
        result = evaluate(reference, solution, settings)
        wall = time.monotonic() - began
        assert result.correct, result.error
        phases = result.details["phase_wall_s"]
        rows.append({"wall_s": round(wall, 3), "timed_work_s": phases.get("windows_s"),
                     "overhead_s": round(wall - phases.get("windows_s", 0.0), 3), "speedup": result.speedup,
                     "phases": phases})
    stream_s = time.monotonic() - started
    gpu_busy = busy.close()
    summary = {"problem": name, "first_evaluation_s": first.details["phase_wall_s"],
               "evaluations": evaluations, "stream_s": round(stream_s, 2),
               "median_wall_s": statistics.median(r["wall_s"] for r in rows),
               "median_overhead_s": statistics.median(r["overhead_s"] for r in rows),
               "median_timed_work_s": statistics.median(r["timed_work_s"] for r in rows),
               "gpu_busy_percent": gpu_busy, "speedups": [round(r["speedup"], 3) for r in rows],
               "fingerprint": {k: first.fingerprint.get(k) for k in ("device_name", "sandbox", "memory_cap",
                                                                     "private_proc", "gpu_nodes", "sandbox_uid")},
               "per_evaluation": rows}
    print(f"[{name}] {evaluations} evaluations in {stream_s:.1f} s: median wall {summary['median_wall_s']:.2f} s, "
          f"timed work {summary['median_timed_work_s']:.2f} s, overhead {summary['median_overhead_s']:.2f} s, "
          f"GPU busy {gpu_busy if gpu_busy is None else round(gpu_busy, 1)} %", flush=True)
    print(f"[{name}] phases of the last: {json.dumps(rows[-1]['phases'])}", flush=True)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--evaluations", type=int, default=8)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    import torch
    if not torch.cuda.is_available():
        print("no CUDA GPU: this benchmark runs on a GPU host", file=sys.stderr)
        return 2
    relu, add = correct_answer("level1/1_ReLU"), correct_answer("level1/2_Scaled_Add")
    with tempfile.TemporaryDirectory(prefix="kturn-bench-gpu-") as extensions:
        settings = EvalSettings(backend="cuda", device="cuda", extensions_dir=extensions)
        figures = [stream("relu_64x4096", PROBLEMS.joinpath("1_ReLU.py").read_text(), relu, args.evaluations, settings),
                   stream("scaled_add_2^18", PROBLEMS.joinpath("2_Scaled_Add.py").read_text(), add, args.evaluations, settings),
                   stream("relu_4096x4096", BIG_RELU, relu, args.evaluations, settings)]
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
