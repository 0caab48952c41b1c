"""What a candidate can see and do from inside the sandbox: a probe solution reports it (its
constructor fails with the facts), and the tests check them. No compiler is needed."""
from __future__ import annotations

import json
import os

import pytest

from evaluation_corpus import PROBLEMS
from workers.evaluation import EvalSettings, evaluate
from workers.evaluation.sandbox import bwrap

PROBE = r'''
import json, os, resource, socket, torch

def attempt(action):
    try:
        return action()
    except OSError as exc:
        return type(exc).__name__

def connect(address):
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(2)
        s.connect(address)
        return "connected"

def write(path):
    with open(path, "w") as f:
        f.write("x")
    return "written"

status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
facts = {
    "env": sorted(os.environ),
    "home": os.environ["HOME"],
    "cwd": os.getcwd(),
    "uid": os.getuid(),
    "pid": os.getpid(),
    "nspid": status["NSpid"].split(),
    "no_new_privs": status["NoNewPrivs"].strip(),
    "capabilities": status["CapEff"].strip(),
    "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "root": sorted(os.listdir("/")),
    "job": sorted(os.listdir("/job")),
    "tmp": sorted(os.listdir("/tmp")),
    "dev": sorted(os.listdir("/dev")),
    "tmp_write": attempt(lambda: write("/tmp/scratch")),
    "usr_write": attempt(lambda: write("/usr/kturn-probe")),
    "host_file": attempt(lambda: open(HOST_FILE).read()),
    "postgres_socket": attempt(lambda: connect("/var/run/postgresql/.s.PGSQL.5432")),
    "redis_tcp": attempt(lambda: connect(("127.0.0.1", 6379))),
    "outside": attempt(lambda: connect(("1.1.1.1", 80))),
    "cgroups": sorted(os.listdir("/sys/fs/cgroup")) if os.path.isdir("/sys/fs/cgroup") else [],
    "affinity": sorted(os.sched_getaffinity(0)),
    "rlimit_core": resource.getrlimit(resource.RLIMIT_CORE)[0],
    "rlimit_fsize": resource.getrlimit(resource.RLIMIT_FSIZE)[0],
    "threads": torch.get_num_threads(),
}

class ModelNew:
    def __init__(self):
        raise RuntimeError("FACTS" + json.dumps(facts) + "END")
'''


def probe(settings: EvalSettings, host_file: str) -> tuple[dict, object]:
    os.environ["DATABASE_URL"] = "postgresql://kturn:secret@db/kturn"
    try:
        result = evaluate((PROBLEMS / "relu.py").read_text(), PROBE.replace("HOST_FILE", repr(host_file)), settings)
    finally:
        os.environ.pop("DATABASE_URL", None)
    assert result.error_kind == "runtime_error" and result.details["phase"] == "init", result.error
    text = result.details["traceback"]
    return json.loads(text[text.rindex("FACTS") + 5:text.rindex("END")]), result


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory):
    secret = tmp_path_factory.mktemp("host") / "secret.txt"
    secret.write_text("the worker's file")
    facts, result = probe(EvalSettings(strict_flags=(), memory_limit_mb=3000), str(secret))
    return facts, result, str(secret)


pytestmark = pytest.mark.skipif(bwrap.probe("cpu", os.geteuid() == 0) is not None,
                                reason=f"no sandbox on this host: {bwrap.probe('cpu', os.geteuid() == 0)}")


def test_environment_is_an_allowlist(sandboxed):
    facts = sandboxed[0]
    assert "DATABASE_URL" not in facts["env"] and "REDIS_URL" not in facts["env"]
    assert {"HOME", "PATH", "TMPDIR", "OMP_NUM_THREADS", "KTURN_SANDBOX"} <= set(facts["env"])
    allowed = ("PATH", "LANG", "LC_", "TZ", "CUDA_", "LD_LIBRARY_PATH", "CC", "CXX", "TORCH_", "TRITON_", "HOME",
               "TMPDIR", "PYTHON", "OMP_", "MKL_", "OPENBLAS_", "MAX_JOBS", "KTURN_SANDBOX", "USER", "LOGNAME",
               "TORCHINDUCTOR_", "PWD")  # PWD: bwrap sets it for --chdir
    assert [k for k in facts["env"] if not k.startswith(allowed)] == []


def test_a_filesystem_of_its_own(sandboxed):
    facts, _, secret = sandboxed
    assert facts["home"] == facts["cwd"] == "/tmp" and facts["tmp_write"] == "written"
    # a private /tmp: the host's is not there; only the read-only code bound at its own path shows
    # (the interpreter and the harness, when the checkout or its venv lives under /tmp)
    bound_under_tmp = {p.split("/")[2] for p in bwrap.readable_paths() if p.startswith("/tmp/")}
    assert set(facts["tmp"]) == bound_under_tmp, facts["tmp"]
    assert facts["job"] == ["problem.py", "solution.py"]
    assert facts["host_file"] == "FileNotFoundError", "nothing of the host beyond what is bound"
    assert facts["usr_write"] in ("OSError", "PermissionError"), "system directories are read-only"
    assert not set(facts["root"]) & {"home", "srv", "mnt", "opt", "var/lib", "run"} - {"var"}
    assert set(facts["dev"]) <= {"null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "fd",
                                 "stdin", "stdout", "stderr", "core"}


def test_no_host_socket_and_no_network(sandboxed):
    facts = sandboxed[0]
    assert facts["postgres_socket"] in ("FileNotFoundError", "ConnectionRefusedError")
    assert facts["redis_tcp"] != "connected" and facts["outside"] != "connected"


def test_no_other_evaluation_in_sight_and_its_own_cores(sandboxed):
    facts, result, _ = sandboxed
    assert facts["cgroups"] == [], "the host's cgroup tree (other evaluations' groups) is masked"
    cores = result.fingerprint["cpu_cores"]
    if cores is not None:
        assert facts["affinity"] == [int(c) for c in cores.split(",")] and len(facts["affinity"]) == 1


def test_proc_belongs_to_its_own_pid_namespace(sandboxed):
    # what CUDA needs: a process in a new PID namespace that sees the host's /proc cannot start the driver
    facts = sandboxed[0]
    assert facts["nspid"] == [str(facts["pid"])], "the /proc mounted is the child's own namespace's"
    assert len(facts["processes"]) <= 4, facts["processes"]


def test_limits_and_privileges(sandboxed):
    facts, result, _ = sandboxed
    # a file may be as large as the memory cap (3000 MB here, over max_file_mb): a batch's inputs are one file
    assert facts["rlimit_core"] == 0 and facts["rlimit_fsize"] == 3000 << 20 and facts["threads"] == 1
    assert facts["no_new_privs"] == "1" and int(facts["capabilities"], 16) == 0
    fp = result.fingerprint
    assert fp["sandbox"] == "bwrap" and fp["filesystem_isolated"] and fp["network_isolated"] and fp["private_proc"]
    assert fp["memory_cap"] is not None and fp["memory_limit_mb"] == 3000
    assert fp["process_cap"].startswith("cgroup-")
    if os.path.exists("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") or os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        assert fp["cpu_quota"], "a candidate gets no more processor time than the reference (cpu_threads)"


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid switch happens only when the harness is root")
def test_candidate_runs_as_an_unprivileged_uid(sandboxed):
    settings = EvalSettings()
    assert settings.sandbox_uid <= sandboxed[0]["uid"] < settings.sandbox_uid + settings.sandbox_uid_pool


def test_without_bubblewrap_the_evaluation_runs_and_says_what_it_lacks(monkeypatch):
    monkeypatch.setattr(bwrap, "probe", lambda device, root: "bubblewrap (bwrap) is not installed")
    solution = "class ModelNew:\n    def __init__(self):\n        raise RuntimeError('constructed without a sandbox')\n"
    result = evaluate((PROBLEMS / "relu.py").read_text(), solution, EvalSettings(strict_flags=()))
    assert result.error_kind == "runtime_error" and "constructed without a sandbox" in result.error
    assert result.fingerprint["sandbox"] == "none" and not result.fingerprint["filesystem_isolated"]
    assert result.fingerprint["sandbox_unavailable"] == "bubblewrap (bwrap) is not installed"
    assert any("not sandboxed" in w for w in result.details["warnings"])
