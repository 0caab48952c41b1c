"""The README's cluster quickstart, taken at its word: the worker commands it shows and the log lines
it tells operators to grep."""
from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path

from orchestrator.stages import STAGES
from workers.cleaning import clean_response

ROOT = Path(__file__).resolve().parents[1]


def readme_worker_commands() -> list[list[str]]:
    lines = (ROOT / "README.md").read_text().splitlines()
    return [shlex.split(line.split("#")[0]) for line in lines if line.startswith("celery -A orchestrator.app worker")]


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_every_quickstart_worker_has_a_name_of_its_own():
    """Flower keys workers by name: workers all called celery@host show as one that flips."""
    commands = readme_worker_commands()
    names = [option(argv, "-n") for argv in commands]
    assert len(commands) == len(STAGES) and None not in names and len(set(names)) == len(STAGES)
    assert {option(argv, "-Q") for argv in commands} == {stage.queue for stage in STAGES}
    assert all(name.endswith("@%h") for name in names)
    for dockerfile in ("generate", "cpu", "evaluate"):
        assert '"-n"' in (ROOT / "docker" / f"{dockerfile}.Dockerfile").read_text()


def test_the_lines_the_readme_says_to_grep_show_at_the_quickstarts_log_level(caplog):
    [clean_worker] = [argv for argv in readme_worker_commands() if option(argv, "-Q") == "clean"]
    level = logging.getLevelName((option(clean_worker, "-l") or "WARNING").upper())  # Celery's default is WARNING
    grep_for = re.findall(r"`(Severe repetition|Truncated|Generated response)`", (ROOT / "README.md").read_text())
    assert set(grep_for) == {"Severe repetition", "Truncated", "Generated response"}
    with caplog.at_level(level, logger="kturn.cleaning"):
        clean_response("Here is the kernel:\n\n" + "```python\n" * 300)
    shown = " ".join(r.getMessage() for r in caplog.records if r.levelno >= level)
    assert all(line in shown for line in grep_for)
