"""What a candidate can see from inside the sandbox (one child run, no compiler)."""
from __future__ import annotations

import json
import os
import tempfile

import pytest

from evaluation_corpus import PROBLEMS
from workers.evaluation import EvalSettings, evaluate, sandbox_user
from workers.evaluation.workspace import Workspace

PROBE = r'''
import json, os, resource, torch

def attempt(action):
    try:
        return action()
    except OSError as exc:
        return type(exc).__name__

def read(path):
    with open(path) as f:
        return f.read()

facts = {
    "env": sorted(os.environ),
    "home": os.environ["HOME"],
    "cwd": os.getcwd(),
    "tmpdir": os.environ["TMPDIR"],
    "siblings": attempt(lambda: sorted(os.listdir(os.path.dirname(os.getcwd())))),
    "inputs_left": sorted(os.listdir("inputs")),
    "files": sorted(os.listdir(".")),
    "rlimit_as": resource.getrlimit(resource.RLIMIT_AS)[0],
    "rlimit_core": resource.getrlimit(resource.RLIMIT_CORE)[0],
    "rlimit_fsize": resource.getrlimit(resource.RLIMIT_FSIZE)[0],
    "threads": torch.get_num_threads(),
    "pid": os.getpid(),
    "pgid_is_sid": os.getpgid(0) == os.getsid(0),
    "uid": os.getuid(),
    "root_only_file": attempt(lambda: read(ROOT_ONLY_FILE)),
    "other_eval_dir": attempt(lambda: sorted(os.listdir(OTHER_EVAL_DIR))),
    "other_eval_file": attempt(lambda: read(os.path.join(OTHER_EVAL_DIR, "solution.py"))),
    "root_home": attempt(lambda: sorted(os.listdir("/root"))),
}
raise RuntimeError("FACTS" + json.dumps(facts) + "END")
'''


@pytest.fixture(scope="module")
def facts():
    os.environ["DATABASE_URL"] = "postgresql://kturn:secret@db/kturn"
    settings = EvalSettings(strict_flags=(), memory_limit_mb=3000)  # a probe, not a solution
    # a root-only file, and a concurrent evaluation's candidate directory (its own uid)
    fd, secret = tempfile.mkstemp(prefix="kturn-test-secret-")
    os.write(fd, b"root only")
    os.close(fd)
    other, other_user = Workspace(), sandbox_user.acquire(settings.sandbox_uid, settings.sandbox_uid_pool)
    other.write(other.cand, "solution.py", "# another evaluation's solution")
    other.hand_over(other_user)
    probe = PROBE.replace("ROOT_ONLY_FILE", repr(secret)).replace("OTHER_EVAL_DIR", repr(other.cand))
    try:
        result = evaluate((PROBLEMS / "relu.py").read_text(), probe, settings)
    finally:
        os.environ.pop("DATABASE_URL", None)
        os.unlink(secret)
        other.close()
        if other_user:
            other_user.release()
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
    # the reference directory is gone before the candidate starts; as its own uid the
    # candidate may not even list the workspace
    assert facts["siblings"] in (["cand"], "PermissionError")
    assert facts["inputs_left"] == [], "inputs are loaded into memory and deleted before import"
    assert "reference.py" not in facts["files"]


def test_limits_and_namespaces(facts):
    assert facts["rlimit_as"] == 3000 << 20
    assert facts["rlimit_core"] == 0 and facts["rlimit_fsize"] == 2048 << 20
    assert facts["threads"] == 1
    assert facts["pid"] == 1, "pid 1 of its own PID namespace"


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the uid switch happens only when the harness is root")


@needs_root
def test_candidate_runs_as_an_unprivileged_uid(facts):
    settings = EvalSettings()
    assert settings.sandbox_uid <= facts["uid"] < settings.sandbox_uid + settings.sandbox_uid_pool


@needs_root
def test_root_only_files_are_unreadable(facts):
    assert facts["root_only_file"] == "PermissionError"
    # /root is either closed or, where the interpreter lives there, an empty cover
    assert facts["root_home"] == "PermissionError" or set(facts["root_home"]) <= {".pyenv", ".cache"}


@needs_root
def test_another_evaluations_directory_is_unreadable(facts):
    assert facts["other_eval_dir"] == "PermissionError"
    assert facts["other_eval_file"] == "PermissionError"
