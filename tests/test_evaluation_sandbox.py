"""What a candidate can see from inside the sandbox (one child run, no compiler)."""
from __future__ import annotations

import json
import os

import pytest

from evaluation_corpus import PROBLEMS
from workers.evaluation import EvalSettings, evaluate

PROBE = r'''
import json, os, resource, torch
facts = {
    "env": sorted(os.environ),
    "home": os.environ["HOME"],
    "cwd": os.getcwd(),
    "tmpdir": os.environ["TMPDIR"],
    "siblings": sorted(os.listdir(os.path.dirname(os.getcwd()))),
    "inputs_left": sorted(os.listdir("inputs")),
    "files": sorted(os.listdir(".")),
    "rlimit_as": resource.getrlimit(resource.RLIMIT_AS)[0],
    "rlimit_core": resource.getrlimit(resource.RLIMIT_CORE)[0],
    "rlimit_fsize": resource.getrlimit(resource.RLIMIT_FSIZE)[0],
    "threads": torch.get_num_threads(),
    "pid": os.getpid(),
    "pgid_is_sid": os.getpgid(0) == os.getsid(0),
}
raise RuntimeError("FACTS" + json.dumps(facts) + "END")
'''


@pytest.fixture(scope="module")
def facts():
    os.environ["DATABASE_URL"] = "postgresql://kturn:secret@db/kturn"
    try:
        settings = EvalSettings(strict_flags=(), memory_limit_mb=3000)  # a probe, not a solution
        result = evaluate((PROBLEMS / "relu.py").read_text(), PROBE, settings)
    finally:
        os.environ.pop("DATABASE_URL", None)
    assert result.error_kind == "runtime_error" and result.details["phase"] == "import"
    assert not result.compiled
    text = result.details["traceback"]
    return json.loads(text[text.rindex("FACTS") + 5:text.rindex("END")])  # the last line is the exception


def test_environment_is_an_allowlist(facts):
    assert "DATABASE_URL" not in facts["env"] and "REDIS_URL" not in facts["env"]
    assert {"HOME", "PATH", "TMPDIR", "TORCH_EXTENSIONS_DIR", "OMP_NUM_THREADS", "KTURN_SANDBOX"} <= set(facts["env"])
    allowed_prefixes = ("PATH", "LANG", "LC_", "TZ", "CUDA_", "LD_LIBRARY_PATH", "CC", "CXX", "TORCH_",
                        "TRITON_", "HOME", "TMPDIR", "PYTHON", "OMP_", "MKL_", "OPENBLAS_", "MAX_JOBS",
                        "KTURN_SANDBOX", "CCACHE_", "PWD",
                        "TORCHINDUCTOR_")  # the last one torch sets itself inside the child
    assert [k for k in facts["env"] if not k.startswith(allowed_prefixes)] == []


def test_private_home_and_working_directory(facts):
    assert facts["home"] == facts["cwd"] and facts["tmpdir"].startswith(facts["cwd"])
    assert os.path.basename(facts["cwd"]) == "cand"
    assert not os.path.exists(facts["cwd"]), "the private directory is removed afterwards"


def test_reference_and_future_inputs_are_out_of_reach(facts):
    assert facts["siblings"] == ["cand"], "the reference directory is gone before the candidate starts"
    assert facts["inputs_left"] == [], "inputs are loaded into memory and deleted before import"
    assert "reference.py" not in facts["files"]


def test_limits_and_namespaces(facts):
    assert facts["rlimit_as"] == 3000 << 20
    assert facts["rlimit_core"] == 0 and facts["rlimit_fsize"] == 2048 << 20
    assert facts["threads"] == 1
    assert facts["pid"] == 1, "pid 1 of its own PID namespace"
