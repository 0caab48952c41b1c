"""The corpus (tests/cleaning_corpus/) through the public clean_response()."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workers.cleaning import CleaningSettings, clean_response
from workers.cleaning.thinking import split_thinking

CORPUS = Path(__file__).parent / "cleaning_corpus"
CASE_DIRS = sorted(p for p in CORPUS.iterdir() if (p / "expected.json").is_file())
SETTINGS = CleaningSettings()


def _read(case_dir: Path, name: str | None) -> str | None:
    return None if name is None else (case_dir / name).read_text(encoding="utf-8")


def load(case_dir: Path) -> tuple[str, dict]:
    expected = json.loads((case_dir / "expected.json").read_text(encoding="utf-8"))
    expected["cleaned"] = _read(case_dir, "cleaned.md")
    expected["code"] = _read(case_dir, expected["code"])
    if expected["thinking"]:
        expected["thinking"] = _read(case_dir, expected["thinking"])
    return _read(case_dir, "raw.md"), expected


def test_corpus_is_big_and_balanced():
    flags = [load(d)[1]["degenerate"] for d in CASE_DIRS]
    assert len(flags) >= 30
    assert sum(flags) >= 12 and len(flags) - sum(flags) >= 12


@pytest.mark.parametrize("case_dir", CASE_DIRS, ids=[d.name for d in CASE_DIRS])
def test_corpus_case(case_dir: Path):
    raw, expected = load(case_dir)
    result = clean_response(raw)
    assert result.cleaned == expected["cleaned"]
    assert result.code == expected["code"]
    assert result.degenerate is expected["degenerate"]
    assert result.no_code_reason == expected["no_code_reason"]
    assert result.thinking == expected["thinking"]
    assert len(result.extra_sources) == expected["extra_sources"]
    assert (result.truncated_at is not None) is expected["truncated"]
    assert (result.code is None) is (result.no_code_reason is not None)


@pytest.mark.parametrize("case_dir", CASE_DIRS, ids=[d.name for d in CASE_DIRS])
def test_corpus_loop_figures_are_consistent(case_dir: Path):
    raw, expected = load(case_dir)
    result = clean_response(raw)
    if not expected["degenerate"]:
        assert (result.severity, result.period, result.repeats, result.covered) == (0.0, None, 0, 0.0)
        assert result.chars_removed == 0
        return
    assert 0.0 < result.severity <= result.covered <= 1.0
    assert result.repeats >= SETTINGS.min_repeats_long_unit
    assert 1 <= result.period <= SETTINGS.max_period
    assert result.chars_removed == len(raw) - result.truncated_at
    # The loop covers at least what was removed (the cut keeps one unit of it).
    assert result.covered * len(raw) >= result.chars_removed


@pytest.mark.parametrize("case_dir", CASE_DIRS, ids=[d.name for d in CASE_DIRS])
def test_corpus_text_before_the_cut_is_untouched(case_dir: Path):
    raw, _ = load(case_dir)
    result = clean_response(raw)
    split = split_thinking(raw)
    end = len(raw) if result.truncated_at is None else result.truncated_at
    if split.only_reasoning:
        assert result.cleaned == ""
        assert result.thinking == raw[split.reasoning_start:end].strip()
        return
    kept = raw[split.answer_start:end]
    assert result.cleaned.startswith(kept)
    # The only change allowed after the kept text: a fence closing what the cut left open.
    assert result.cleaned[len(kept):] in ("", "```", "\n```")
    if result.truncated_at is None:
        assert result.cleaned == kept


@pytest.mark.parametrize("case_dir", CASE_DIRS, ids=[d.name for d in CASE_DIRS])
def test_corpus_result_is_json_serialisable(case_dir: Path):
    raw, _ = load(case_dir)
    data = clean_response(raw).as_dict()
    assert json.loads(json.dumps(data)) == data
    for key in ("cleaned", "thinking", "code", "degenerate", "severity", "truncated_at", "warnings"):
        assert key in data
