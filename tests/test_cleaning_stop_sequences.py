"""bench/stop_sequences.py replays SGLang's stop strings on the corpus; keep its findings honest."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "stop_sequences.py"


@pytest.fixture(scope="module")
def stops():
    spec = importlib.util.spec_from_file_location("stop_sequences", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def cases(stops):
    return stops.load_corpus()


def test_first_stop_is_the_earliest_match(stops):
    assert stops.first_stop("ab\n\n\n\n```\n```", stops.DEFAULT_STOPS) == 2
    assert stops.first_stop("nothing here", stops.DEFAULT_STOPS) is None


def test_python_fence_stop_never_cuts_a_legit_answer(stops, cases):
    tally = stops.tally(cases, ["```python\n```python"])
    assert tally.legit_cut == []
    assert "degenerate_python_fence_loop" in tally.degenerate_stopped


def test_bare_fence_stop_cuts_adjacent_blocks(stops, cases):
    # "```\n```" also matches a block closing right before the next one opens.
    tally = stops.tally(cases, ["```\n```"])
    assert "legit_adjacent_blocks" in tally.legit_code_changed


def test_four_newlines_cut_code_with_three_blank_lines(stops, cases):
    tally = stops.tally(cases, ["\n\n\n\n"])
    assert "legit_triple_blank_lines" in tally.legit_code_changed


def test_table_has_one_row_per_stop_and_a_total(stops, cases):
    rows = stops.table(cases, markdown=True).splitlines()
    assert len(rows) == 2 + len(stops.DEFAULT_STOPS) + 1
