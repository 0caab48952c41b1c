"""How the default SGLang stop sequences behave on the cleaning corpus.

    /work/main/.venv/bin/python bench/stop_sequences.py [--markdown]

SGLang ends generation at the first occurrence of any stop string anywhere in
the output, <think> reasoning included, and drops the stop string itself. For
each stop sequence this replays that on every corpus response and reports

* on legitimate answers: how many it cuts, how many of those cuts land inside
  the reasoning, and how many change the extracted ModelNew code (the cut
  answer no longer yields the expected code: a lost or broken solution);
* on degenerate answers: how many it stops, how many it stops *before* the loop
  (losing visible text the cleaner would have kept), how many still yield the expected
  code, and the median share of the response it saves.

The corpus is hand-built (tests/cleaning_corpus/), so the counts say which
legitimate patterns a stop string hits, not how often they occur in real rollouts.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from workers.cleaning import clean_response  # noqa: E402
from workers.cleaning.thinking import split_thinking  # noqa: E402

CORPUS = ROOT / "tests" / "cleaning_corpus"
DEFAULT_STOPS = ["```\n```", "```python\n```python", "\n\n\n\n"]
# Stricter variants of the two that hit legitimate answers, measured for comparison.
ALTERNATIVE_STOPS = ["```\n```\n```", "\n" * 8]


@dataclass
class Case:
    name: str
    raw: str
    degenerate: bool
    code: str | None


@dataclass
class Tally:
    legit_cut: list[str] = field(default_factory=list)
    legit_cut_in_reasoning: list[str] = field(default_factory=list)
    legit_code_changed: list[str] = field(default_factory=list)
    degenerate_stopped: list[str] = field(default_factory=list)
    stopped_before_loop: list[str] = field(default_factory=list)
    code_kept: list[str] = field(default_factory=list)
    saved_share: list[float] = field(default_factory=list)


def load_corpus() -> list[Case]:
    cases = []
    for directory in sorted(p for p in CORPUS.iterdir() if (p / "expected.json").is_file()):
        expected = json.loads((directory / "expected.json").read_text(encoding="utf-8"))
        code = (directory / expected["code"]).read_text(encoding="utf-8") if expected["code"] else None
        raw = (directory / "raw.md").read_text(encoding="utf-8")
        cases.append(Case(directory.name, raw, expected["degenerate"], code))
    return cases


def first_stop(text: str, stops: list[str]) -> int | None:
    hits = [text.find(stop) for stop in stops]
    hits = [hit for hit in hits if hit >= 0]
    return min(hits) if hits else None


def tally(cases: list[Case], stops: list[str]) -> Tally:
    result = Tally()
    for case in cases:
        cut = first_stop(case.raw, stops)
        if cut is None:
            continue
        stopped = clean_response(case.raw[:cut])
        if not case.degenerate:
            result.legit_cut.append(case.name)
            split = split_thinking(case.raw)
            if split.has_reasoning and cut < split.reasoning_end:
                result.legit_cut_in_reasoning.append(case.name)
            if stopped.code != case.code:
                result.legit_code_changed.append(case.name)
            continue
        full = clean_response(case.raw)
        loop_start = full.truncated_at - full.period
        result.degenerate_stopped.append(case.name)
        if case.raw[cut:loop_start].strip():  # visible text the cleaner keeps would be lost
            result.stopped_before_loop.append(case.name)
        if stopped.code == case.code:
            result.code_kept.append(case.name)
        result.saved_share.append((len(case.raw) - cut) / len(case.raw))
    return result


def table(cases: list[Case], markdown: bool, stop_sets: list[tuple[str, list[str]]] | None = None) -> str:
    legit = sum(1 for c in cases if not c.degenerate)
    degenerate = len(cases) - legit
    header = ["stop sequence", f"legit cut (/{legit})", "in <think>", "legit code lost",
              f"degenerate stopped (/{degenerate})", "before the loop", "code kept", "median saved"]
    rows = []
    if stop_sets is None:
        stop_sets = [(repr(s), [s]) for s in DEFAULT_STOPS] + [("all three", DEFAULT_STOPS)]
    for label, stops in stop_sets:
        t = tally(cases, stops)
        saved = f"{statistics.median(t.saved_share):.0%}" if t.saved_share else "-"
        rows.append([label, str(len(t.legit_cut)), str(len(t.legit_cut_in_reasoning)),
                     str(len(t.legit_code_changed)), str(len(t.degenerate_stopped)),
                     str(len(t.stopped_before_loop)), f"{len(t.code_kept)}/{len(t.degenerate_stopped)}", saved])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*r) for r in [header] + rows)


def details(cases: list[Case]) -> str:
    lines = []
    for stop in DEFAULT_STOPS:
        t = tally(cases, [stop])
        lines.append(f"{stop!r}: legit cut: {', '.join(t.legit_cut) or '-'}")
        lines.append(f"{' ' * len(repr(stop))}  legit code lost: {', '.join(t.legit_code_changed) or '-'}")
        lines.append(f"{' ' * len(repr(stop))}  stopped before the loop: {', '.join(t.stopped_before_loop) or '-'}")
    return "\n".join(lines)


def main() -> None:
    import logging

    logging.getLogger("kturn.cleaning").setLevel(logging.ERROR)
    cases = load_corpus()
    markdown = "--markdown" in sys.argv
    print(table(cases, markdown))
    print()
    print(details(cases))
    print()
    print("Stricter alternatives:")
    alternatives = [(repr(s), [s]) for s in ALTERNATIVE_STOPS]
    alternatives.append(("'```python\\n```python' + both", ["```python\n```python"] + ALTERNATIVE_STOPS))
    print(table(cases, markdown, alternatives))


if __name__ == "__main__":
    main()
