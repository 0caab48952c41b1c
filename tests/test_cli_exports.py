"""`kturn report`, `export`, `compare` and `top` refuse bad input clearly and create nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

KTURN = str(Path(sys.executable).with_name("kturn"))
ENV = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}


def kturn(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([KTURN, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("export", "1", "--format", "pickle"), "pickle"),
        (("export", "1", "--format", "buffer", "--out", "missing/dir/items.jsonl"), "is not a directory"),
        (("export", "1", "--format", "sft", "--push", "http://127.0.0.1:9"), "--format buffer"),
        (("export", "3", "--format", "parquet"), "no run 3"),
        (("report", "3"), "no run 3"),
        (("compare", "3", "4"), "no run 3"),
        (("report", "3", "--plot", "figure.svg"), ".png"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, args, message):
    result = kturn(*args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == "" and not [p for p in tmp_path.iterdir() if p.name != ".kturn"]


def test_top_on_an_empty_embedded_database(tmp_path):
    result = kturn("top", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"runs": {}, "open_runs": {}, "expired_leases": 0, "queues": None}
