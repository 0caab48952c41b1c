"""Throughput of the response cleaner on 1 MB and 4 MB inputs of every loop shape.

Table (MB/s per shape at 1 MB and 4 MB, and the 4 MB / 1 MB time ratio):

    /work/main/.venv/bin/python bench/bench_cleaning.py

pytest-benchmark (same inputs, one benchmark per shape and size):

    /work/main/.venv/bin/pytest bench/bench_cleaning.py --benchmark-only

Targets: >= 20 MB/s for every shape, and 4 MB time <= 5x the 1 MB time.
The table times CPU time of this process (see best_time) and shows wall time
for 4 MB alongside; pytest-benchmark times wall clock.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from workers.cleaning import StreamingLoopDetector, clean_response  # noqa: E402

CORPUS = ROOT / "tests" / "cleaning_corpus"
MB = 1 << 20
SIZES = {"1MB": MB, "4MB": 4 * MB}
TARGET_MB_S = 20.0
MAX_RATIO = 5.0


def _legit_answers() -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted(CORPUS.glob("legit_*/cleaned.md"))]


def _vary(text: str, rng: random.Random) -> str:
    """Same shape of text, different numbers, so copies are not verbatim repeats."""
    return "".join(str(rng.randint(0, 9)) if ch.isdigit() else ch for ch in text)


def normal_text(size: int) -> str:
    rng = random.Random(size)
    answers = _legit_answers()
    parts, total = [], 0
    while total < size:
        part = _vary(rng.choice(answers), rng) + f"\n<!-- answer {len(parts)} -->\n\n"
        parts.append(part)
        total += len(part)
    return "".join(parts)[:size]


PREFIX = (
    "<think>\nOkay, I need a custom CUDA kernel for the element-wise addition.\n</think>\n\n"
    "Here is the optimized model:\n\n```python\nimport torch\nimport torch.nn as nn\n\n\n"
    "class ModelNew(nn.Module):\n    def forward(self, a, b):\n        return a + b\n```\n\n"
)


def _fill(prefix: str, unit: str, size: int) -> str:
    return (prefix + unit * (size // len(unit) + 1))[:size]


def _irregular_lines(choices: list[str], size: int, seed: int) -> str:
    rng = random.Random(seed)
    lines, total = [], 0
    while total < size:
        line = rng.choice(choices) + "\n"
        lines.append(line)
        total += len(line)
    return "".join(lines)


BLOCK_UNIT = (
    "    if (idx < size) {\n        float va = a[idx];\n        float vb = b[idx];\n"
    "        out[idx] = va + vb;\n        idx += blockDim.x * gridDim.x;\n    }\n"
)
PARAGRAPH = (
    "Wait, I need to make sure the block size is right. If the tensor has N elements and each block has 256 "
    "threads, then the number of blocks is (N + 255) / 256. Let me also check the data types again.\n\n"
)

SHAPES: dict[str, Callable[[int], str]] = {
    "normal text (legit answers)": normal_text,
    "fence loop n/```python": lambda n: _fill(PREFIX + "n\n", "```python\n", n),
    "closing fence flood ```": lambda n: _fill(PREFIX[:-2], "```\n", n),
    "empty code blocks": lambda n: _fill(PREFIX, "```python\n```\n", n),
    "newline flood": lambda n: _fill(PREFIX, "\n", n),
    "space flood": lambda n: _fill(PREFIX + "x = 1", " ", n),
    "sentence loop": lambda n: _fill(PREFIX, "Let me recheck the indexing. ", n),
    "line loop in open block": lambda n: _fill(PREFIX + "```python\n", "        x = x + self.bias\n", n),
    "multi-line block loop": lambda n: _fill(PREFIX + "```python\nsrc = '''\n", BLOCK_UNIT, n),
    "paragraph loop, open think": lambda n: _fill("<think>\nOkay.\n", PARAGRAPH, n),
    "irregular fence flood": lambda n: (PREFIX + "```python\n```python\n" + _irregular_lines(
        ["```python", "```", "```py", "``` python", "n", ""], n, 1))[:n],
    "irregular whitespace flood": lambda n: (PREFIX + _irregular_lines(["", " ", "\t", "  ", " \t"], n, 2))[:n],
}


def best_time(func: Callable[[], object], repeats: int, clock: Callable[[], float] = time.process_time) -> float:
    """Best of `repeats` runs. The default clock is this process's CPU time: the cleaner is
    single-threaded, so on an idle machine it equals wall time, and other jobs sharing the
    two cores (compiles, test runs) do not skew it."""
    times = []
    for _ in range(repeats):
        started = clock()
        func()
        times.append(clock() - started)
    return min(times)


def measure(shape: str) -> dict[str, float]:
    make = SHAPES[shape]
    row: dict[str, float] = {}
    for label, size in SIZES.items():
        text = make(size)
        seconds = best_time(lambda: clean_response(text), repeats=7 if size == MB else 5)
        row[label] = len(text) / seconds / 1e6
        row[f"{label} s"] = seconds
        if size == 4 * MB:
            row["4MB wall"] = len(text) / best_time(lambda: clean_response(text), 3, time.perf_counter) / 1e6
    row["ratio"] = row["4MB s"] / row["1MB s"]
    return row


def streaming_row() -> dict[str, float]:
    row: dict[str, float] = {}
    for label, size in SIZES.items():
        text = normal_text(size)

        def run() -> None:
            detector = StreamingLoopDetector()
            for i in range(0, len(text), 16):
                detector.feed(text[i:i + 16])

        seconds = best_time(run, repeats=1)
        row[label] = len(text) / seconds / 1e6
        row[f"{label} s"] = seconds
    row["4MB wall"] = float("nan")
    row["ratio"] = row["4MB s"] / row["1MB s"]
    return row


def main() -> int:
    import logging

    logging.getLogger("kturn.cleaning").setLevel(logging.ERROR)
    print("MB/s from CPU time (best of 5-7); '4MB wall' from wall-clock time (best of 3)")
    print(f"{'shape':34} {'1MB MB/s':>9} {'4MB MB/s':>9} {'4MB/1MB':>8} {'4MB wall':>9}")
    failed = []
    for shape in SHAPES:
        row = measure(shape)
        ok = min(row["1MB"], row["4MB"]) >= TARGET_MB_S and row["ratio"] <= MAX_RATIO
        failed += [] if ok else [shape]
        print(f"{shape:34} {row['1MB']:9.1f} {row['4MB']:9.1f} {row['ratio']:8.2f} {row['4MB wall']:9.1f}"
              f"{'' if ok else '  <-- below target'}")
    row = streaming_row()
    print(f"{'streaming, 16-char chunks (normal)':34} {row['1MB']:9.1f} {row['4MB']:9.1f} {row['ratio']:8.2f}"
          f" {'':9}  (info)")
    print("all shapes meet the targets" if not failed else f"below target: {', '.join(failed)}")
    return 0 if not failed else 1


# --- pytest-benchmark ----------------------------------------------------------------

try:
    import pytest
except ImportError:  # plain-script use without pytest installed
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="module", params=list(SIZES), ids=list(SIZES))
    def size(request):
        return SIZES[request.param]

    @pytest.mark.parametrize("shape", list(SHAPES))
    def test_clean_response_throughput(benchmark, shape, size):
        text = SHAPES[shape](size)
        result = benchmark(clean_response, text)
        if benchmark.stats is not None:  # None under --benchmark-disable
            benchmark.extra_info["MB/s"] = len(text) / benchmark.stats.stats.min / 1e6
        assert result.degenerate is (shape != "normal text (legit answers)")


if __name__ == "__main__":
    raise SystemExit(main())
