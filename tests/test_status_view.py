"""`kturn status` as people read it: at 80 columns and piped, with KernelBench's real problem names."""
from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from rich.console import Console

from orchestrator.status_view import turns_table

LONG_NAMES = ["level2/42_ConvTranspose2d_GlobalAvgPool_BiasAdd_LogSumExp_Sum_Multiply",
              "level4/12_google-electra-small-discriminator_bs1024_seq32", "level1/19_ReLU"]


def row(problem: str, sample: int, turn: int, **values) -> dict:
    base = {"problem": problem, "sample": sample, "turn": turn, "turn_id": 1, "state": "done", "attempts": 1, "finish_reason": "stop",
            "tokens_after_onset": None, "degenerate": False, "has_code": True, "compiled": True, "correct": True, "runtime_ms": 1.0,
            "baseline_ms": 2.0, "speedup": 1.87, "flags": [], "reward": 1.27, "return": 1.5, "trajectory_status": "completed", "error": None}
    return base | values


ROWS = [row(name, sample, turn) for name in LONG_NAMES for sample in range(2) for turn in range(3)]
ROWS[1] |= {"finish_reason": "loop", "degenerate": True, "has_code": False, "compiled": None, "correct": None, "speedup": None, "reward": 0.0}
ROWS[2] |= {"state": "failed", "compiled": None, "correct": None, "speedup": None, "reward": None, "return": None,
            "error": "generate failed 3 times; last: GenerationError: sglang server at http://gpu-host:30000 unreachable after 5 attempts"}


@pytest.mark.parametrize("width", [80, 120, 160])
def test_every_turn_shows_its_sample_turn_state_and_reward_within_the_width(width):
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=False, color_system=None).print(turns_table(SimpleNamespace(id=7, status="completed_with_failures"), ROWS))
    text = out.getvalue()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "…" not in text  # nothing collapsed to an ellipsis
    flat = "".join(line.strip().split("  ")[0] for line in lines)  # the problem column, its folded lines rejoined
    for name in LONG_NAMES:
        assert name in flat
    counted = [line for line in lines if " done " in line or " failed " in line]
    assert len(counted) == len(ROWS)
    assert "loop, degenerate," in text
    assert "correct 1.87x" in text and "1.27" in text and "unreachable" in text
