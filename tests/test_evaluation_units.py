"""Fast unit tests of the evaluation harness pieces (no sandboxed child, no compiler)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
import time
import types

import pytest
import torch

from workers.evaluation import EvalSettings, Timing, device_fingerprint, fingerprint_key
from workers.evaluation import channel, compile_errors, correctness, static_checks, timing
from workers.evaluation.compile_cache import CompileError, ExtensionCache
from workers.evaluation.flags import DEFAULT_STRICT_FLAGS
from workers.evaluation.timer_guard import ModuleGuard
from workers.evaluation.timing_audit import audit_flags

FP32 = "import torch\n"
HEADER = "import torch\nimport torch.nn as nn\nfrom torch.utils.cpp_extension import load_inline\next = load_inline('e', 'x')\n"


def flags_of(body: str, reference: str = FP32) -> dict:
    return static_checks.analyse(HEADER + body, reference).flags.reasons()


# --- settings / result --------------------------------------------------------------

def test_settings_are_keyword_constructible_and_json_serialisable():
    settings = EvalSettings(backend="triton", run_timeout_s=3.0)
    data = json.loads(json.dumps(dataclasses.asdict(settings)))
    assert data["backend"] == "triton" and data["strict_flags"] == list(DEFAULT_STRICT_FLAGS)
    assert not settings.timing_meaningful
    again = EvalSettings(**data)  # e.g. from a stored run config
    assert again.strict_flags == DEFAULT_STRICT_FLAGS and hash(again) == hash(EvalSettings(**{**data}))
    assert EvalSettings(device="cuda", backend="triton").timing_meaningful


@pytest.mark.parametrize("bad", [{"backend": "rust"}, {"device": "tpu"}, {"backend": "cuda", "device": "cpu"},
                                 {"correctness_trials": 0}])
def test_invalid_settings_are_rejected(bad):
    with pytest.raises(ValueError):
        EvalSettings(**bad).validate()


def test_extensions_dir_defaults_to_env_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("KTURN_EXTENSIONS_DIR", str(tmp_path))
    assert EvalSettings().resolved_extensions_dir() == str(tmp_path)
    monkeypatch.delenv("KTURN_EXTENSIONS_DIR")
    assert EvalSettings().resolved_extensions_dir().endswith(os.path.join(".cache", "kturn", "extensions"))


# --- static checks --------------------------------------------------------------------

def test_honest_forward_has_no_flags():
    body = ("class ModelNew(nn.Module):\n"
            "    def forward(self, x):\n"
            "        out = torch.empty_like(x).view(-1)\n"
            "        return ext.relu(x.contiguous(), out)\n")
    assert flags_of(body) == {}


@pytest.mark.parametrize("body, flag", [
    ("class ModelNew(nn.Module):\n    def forward(self, x):\n        return torch.matmul(x, x)\n", "torch_compute_ops"),
    ("import torch.nn.functional as F\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        return F.conv2d(x, x)\n",
     "torch_compute_ops"),
    ("class ModelNew(nn.Module):\n    def forward(self, x):\n        return x @ x\n", "torch_compute_ops"),
    ("class ModelNew(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.lin = nn.Linear(3, 3)\n"
     "    def forward(self, x):\n        return self.lin(x)\n", "torch_compute_ops"),
    ("def helper(x):\n    return torch.softmax(x, 0)\nclass ModelNew(nn.Module):\n    def forward(self, x):\n"
     "        return helper(x)\n", "torch_compute_ops"),
    ("class ModelNew(nn.Module):\n    def forward(self, x):\n        try:\n            return ext.f(x)\n"
     "        except Exception:\n            return x\n", "torch_fallback"),
    ("try:\n    ext2 = load_inline('a', 'b')\nexcept Exception:\n    ext2 = None\n", "torch_fallback"),
    ("class ModelNew(Model):\n    pass\n", "calls_reference"),
    ("class ModelNew(nn.Module):\n    def forward(self, x):\n        return Model()(x)\n", "calls_reference"),
    ("import subprocess\n", "threads_or_subprocesses"),
    ("import os\nos.fork()\n", "threads_or_subprocesses"),
    ("from concurrent.futures import ThreadPoolExecutor\n", "threads_or_subprocesses"),
    ("import time\ntime.perf_counter = lambda: 0.0\n", "timer_tampering"),
    ("torch.cuda.synchronize = lambda: None\n", "timer_tampering"),
    ("torch.cuda.Event.elapsed_time = lambda a, b: 0.0\n", "timer_tampering"),
    ("import torch.nn.functional as F\nF.relu = lambda x: x\n", "monkeypatch_torch"),
    ("setattr(torch.Tensor, '__add__', None)\n", "monkeypatch_torch"),
    ("import sys\nsys.modules['torch'] = None\n", "harness_tampering"),
    ("import inspect\n", "harness_tampering"),
    ("import sys\nf = sys._getframe(1)\n", "harness_tampering"),
    ("__builtins__['len'] = None\n", "harness_tampering"),
    ("import os\nos.write(3, b'x')\n", "harness_tampering"),
    # frame walking: from a traceback, an exception, a function or a generator to harness globals
    ("class G:\n    def __exit__(self, k, v, tb):\n        self.f = tb.tb_frame\n        return True\n",
     "harness_tampering"),
    ("def f(frame):\n    return frame.f_back.f_globals\n", "harness_tampering"),
    ("try:\n    1 / 0\nexcept Exception as e:\n    tb = e.__traceback__\n", "harness_tampering"),
    ("def f(x):\n    return getattr(x, 'f_back')\n", "harness_tampering"),
    ("import operator\nget = operator.attrgetter('tb_frame')\n", "harness_tampering"),
    ("def f():\n    pass\ng = f.__globals__\n", "harness_tampering"),
    ("def f():\n    pass\nc = f.__code__\n", "harness_tampering"),
    ("def g():\n    yield 1\nfr = g().gi_frame\n", "harness_tampering"),
    ("import sys\ntb = sys.exc_info()[2]\n", "harness_tampering"),
    ("from sys import _getframe\n", "harness_tampering"),
    ("import sys\nf = getattr(sys, '_getframe')(1)\n", "harness_tampering"),
    ("import sys\nsys.settrace(None)\n", "harness_tampering"),
    ("import sys\nsys.setprofile(None)\n", "harness_tampering"),
    ("import traceback\nframes = list(traceback.walk_stack(None))\n", "harness_tampering"),
    ("class ModelNew(nn.Module):\n    def forward(self, x):\n        return ext.f(x.half()).float()\n", "precision_downgrade"),
    ("class ModelNew(nn.Module):\n    def forward(self, x):\n        return ext.f(x.to(torch.bfloat16))\n", "precision_downgrade"),
    ("SRC = 'torch::Tensor f(torch::Tensor x) { return torch::matmul(x, x); }'\n", "torch_compute_ops"),
    ("SRC = '__global__ void k(__half* x) {}'\n", "precision_downgrade"),
])
def test_static_check_flags(body, flag):
    reasons = flags_of(body)
    assert flag in reasons, reasons
    assert all(r.startswith("line ") for r in reasons[flag])


def test_half_is_fine_when_the_reference_is_half():
    body = "class ModelNew(nn.Module):\n    def forward(self, x):\n        return ext.f(x.half())\n"
    assert "precision_downgrade" not in flags_of(body, reference="x = torch.randn(3).half()")


def test_no_kernel_definition_is_flagged_and_triton_counts_as_one():
    assert "no_custom_kernel" in static_checks.analyse("import torch\nclass ModelNew: pass\n").flags
    triton_src = "import triton\n@triton.jit\ndef k(x):\n    pass\nclass ModelNew: pass\n"
    assert static_checks.analyse(triton_src).flags.names() == []


def test_setting_environment_variables_and_backend_knobs_is_allowed():
    assert flags_of("import os\nos.environ['TORCH_CUDA_ARCH_LIST'] = '9.0'\n") == {}
    assert flags_of("torch.backends.cuda.matmul.allow_tf32 = True\n") == {}


def test_syntax_errors_are_reported_with_the_line():
    report = static_checks.analyse("x = (\n")
    assert report.syntax_error.startswith("solution.py line 1")


# --- channel ---------------------------------------------------------------------------

def roundtrip(message: dict) -> list[dict]:
    read_fd, write_fd = os.pipe()
    try:
        channel.send(write_fd, message)
        data = os.read(read_fd, 1 << 20)
    finally:
        os.close(read_fd)
        os.close(write_fd)
    return [channel.validate(m) for m in channel.MessageBuffer().feed(data)]


def test_channel_roundtrip_and_split_frames():
    assert roundtrip({"type": "phase", "phase": "timing"}) == [{"type": "phase", "phase": "timing"}]
    for message in ({"type": "phase", "phase": "verify"},
                    {"type": "timing_audit", "calls": 8, "idle_calls": 0, "replaced": [], "patched": []},
                    {"type": "final_trial", "launches": 1, "n_outputs": 1}):
        assert roundtrip(message) == [message]
    frame = channel.HEADER.pack(15) + b'{"type":"done"}'
    buffer = channel.MessageBuffer()
    assert buffer.feed(frame[:5]) == [] and buffer.feed(frame[5:]) == [{"type": "done"}]


@pytest.mark.parametrize("message", [
    {"type": "timing", "times_ms": [0.0]},                 # not positive
    {"type": "timing", "times_ms": ["1"]},                 # wrong type
    {"type": "timing", "times_ms": [1.0], "speedup": 9},   # unknown key
    {"type": "phase", "phase": "reward"},                  # unknown phase
    {"type": "trial", "index": -1, "launches": 1, "aliases": [], "mutated": [], "n_outputs": 1, "output_dtypes": []},
    {"type": "correct", "value": True},                    # unknown type
    ["not", "an", "object"],
])
def test_channel_rejects_malformed_messages(message):
    with pytest.raises(channel.ProtocolError):
        channel.validate(message)


def test_channel_rejects_non_finite_numbers_and_oversized_frames():
    with pytest.raises(channel.ProtocolError):
        channel.validate(json.loads('{"type": "timing", "times_ms": [NaN]}'))
    with pytest.raises(channel.ProtocolError):
        channel.MessageBuffer().feed(channel.HEADER.pack(channel.MAX_MESSAGE_BYTES + 1))
    with pytest.raises(channel.ProtocolError):
        channel.MessageBuffer().feed(channel.HEADER.pack(4) + b"{{{{")


# --- correctness -------------------------------------------------------------------------

S = EvalSettings()


def test_matching_nans_and_infinities_pass():
    e = torch.tensor([1.0, float("nan"), float("inf"), -float("inf")])
    assert correctness.compare_tensor(e, e.clone(), S) is None


@pytest.mark.parametrize("got, check", [
    (torch.tensor([float("nan"), 2.0, 3.0]), "nan"),
    (torch.tensor([1.0, float("inf"), 3.0]), "inf"),
    (torch.tensor([1.0, 2.0, 3.01]), "values"),
    (torch.tensor([1.0, 2.0]), "shape"),
    (torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), "dtype"),
])
def test_mismatches_name_the_failed_check(got, check):
    failure = correctness.compare_tensor(torch.tensor([1.0, 2.0, 3.0]), got, S)
    assert failure["check"] == check
    json.dumps(failure)


def test_tolerance_depends_on_precision():
    e = torch.tensor([1.0, 2.0])
    assert correctness.compare_tensor(e, e + 5e-5, S) is None
    assert correctness.compare_tensor(e, e + 5e-3, S)["check"] == "values"
    assert correctness.compare_tensor(e.half(), (e + 5e-3).half(), S) is None
    assert correctness.compare_tensor(e.bfloat16(), (e + 0.05).bfloat16(), S)["check"] == "values"


def test_trial_comparison_reports_trial_and_output_index():
    e = [torch.zeros(3), torch.ones(2)]
    failure = correctness.compare_trial(e, [torch.zeros(3), torch.zeros(2)], S, trial=4)
    assert (failure["trial"], failure["output_index"], failure["check"]) == (4, 1, "values")
    assert failure["max_abs_diff"] == 1.0
    assert "trial 4" in correctness.describe_failure(failure)
    assert correctness.compare_trial(e, e[:1], S, 0)["check"] == "output_count"


def test_integer_outputs_compare_exactly():
    e = torch.tensor([1, 2, 3])
    assert correctness.compare_tensor(e, e.clone(), S) is None
    assert correctness.compare_tensor(e, torch.tensor([1, 2, 4]), S)["check"] == "values"


# --- compile errors ------------------------------------------------------------------------

def test_compile_error_lines_map_back_to_the_solution():
    cpp = "int f() {\n  return oops;\n}"
    solution = "import torch\nSRC = '''\n" + cpp + "\n'''\n"
    layout = compile_errors.layout_for_inline([cpp], [], no_implicit_headers=False)
    log = ("Error building extension 'e': [1/2] c++ -MMD -isystem /x main.cpp\nFAILED: main.o\n"
           "/tmp/b/main.cpp: In function 'int f()':\n"
           "/tmp/b/main.cpp:3:10: error: 'oops' was not declared in this scope\n"
           "    3 |   return oops;\n      |          ^~~~\n"
           "/tmp/b/main.cpp:9:1: error: generated code problem\n")
    feedback, bounded = compile_errors.summarise(log, layout, solution)
    lines = feedback.splitlines()
    assert lines[0] == "solution.py:4 (cpp_sources line 2): error: 'oops' was not declared in this scope"
    assert "return oops;" in lines[1] and "^~~~" in lines[2]
    assert lines[3].startswith("main.cpp:9: error:")  # outside the user's source: left as is
    assert "/tmp/b/" not in bounded and "-isystem" not in bounded


def test_nvcc_errors_and_link_errors_are_recognised():
    layout = compile_errors.layout_for_inline(["// cpp"], ["__global__ void k() {\n  bad;\n}"], False)
    log = "/b/cuda.cu(5): error: identifier \"bad\" is undefined\n/usr/bin/ld: undefined reference to `g()'\n"
    feedback, _ = compile_errors.summarise(log, layout, "no match here")
    assert feedback.splitlines()[0] == 'cuda_sources line 2: error: identifier "bad" is undefined'
    assert "undefined reference" in feedback


# --- timing ------------------------------------------------------------------------------------

def test_summary_is_median_and_interquartile_range():
    t = timing.summarise([1.0, 2.0, 3.0, 4.0, 100.0])
    assert (t.median_ms, t.spread_ms, t.trials) == (3.0, 2.0, 5)
    assert timing.summarise([2.0]) == Timing(2.0, 0.0, 1)


def test_speedup_and_its_spread():
    value, spread = timing.speedup(Timing(10.0, 1.0, 20), Timing(5.0, 0.5, 20))
    assert value == 2.0 and spread == pytest.approx(2.0 * math.hypot(0.1, 0.1))


def test_timing_inputs_respect_the_memory_budget():
    assert timing.input_set_count(3, 20, 1 << 20, 1024) == 23
    assert timing.input_set_count(3, 20, 200 << 20, 1024) == 5
    assert timing.input_set_count(3, 20, 4 << 30, 1024) == 1


def test_every_timed_call_gets_distinct_storage():
    calls = timing.prepare_calls([[torch.ones(4), 3]], 5, "cpu")
    pointers = {args[0].data_ptr() for args in calls}
    assert len(pointers) == 5 and all(args[1] == 3 for args in calls)
    seen = []
    times = timing.measure(lambda x, k: seen.append(x.data_ptr()), calls, warmup=2, trials=3, device="cpu")
    assert len(times) == 3 and all(t > 0 for t in times) and len(set(seen)) == 5


def test_measure_binds_its_timer_before_the_first_call():
    # a call that rebinds the module's timer (as a frame walk would) changes nothing measured
    real = timing._perf_counter_ns

    def rebinding_call():
        timing._perf_counter_ns = lambda: 0
    try:
        calls = [()] * 4
        times = timing.measure(rebinding_call, calls, warmup=1, trials=3, device="cpu")
    finally:
        timing._perf_counter_ns = real
    assert len(times) == 3 and all(t > 0 for t in times)


def test_measure_runs_after_call_outside_the_timed_region():
    seen = []
    times = timing.measure(lambda: None, [()] * 5, warmup=2, trials=3, device="cpu",
                           after_call=lambda: (seen.append(1), time.sleep(0.02)))
    assert len(seen) == 5 and max(times) < 15.0


def test_module_guard_names_rebound_added_and_patched_globals():
    module = types.ModuleType("fake_timing")
    exec("def clock():\n    return 1\ndef measure(x=1):\n    return clock()\nSTATE = (1, 2)\n", vars(module))
    guard = ModuleGuard({"timing": module})
    assert guard.replaced() == []
    module.clock = lambda: 0
    module.fast = 1
    module.measure.__defaults__ = (2,)
    assert guard.replaced() == ["timing.clock", "timing.fast (added)", "timing.measure.__defaults__"]


def _cand(**kw):
    base = dict(timing_audit={"calls": 5, "idle_calls": 0, "replaced": [], "patched": []},
                summary={"kernels_defined": 1}, times_ms=[1.0, 1.0], timing_wall_s=0.5,
                final_trial={"launches": 1, "n_outputs": 1}, repeated_messages=[])
    return types.SimpleNamespace(**{**base, **kw})


def test_timing_audit_of_an_honest_run_is_empty():
    assert audit_flags(_cand(), []) == []
    assert audit_flags(_cand(times_ms=[0.001] * 5, timing_wall_s=3.0), []) == []  # tiny kernels: no lower bound


@pytest.mark.parametrize("change, flag", [
    ({"timing_audit": {"calls": 5, "idle_calls": 3, "replaced": [], "patched": []}}, "kernel_never_launched"),
    ({"final_trial": {"launches": 0, "n_outputs": 1}}, "kernel_never_launched"),
    ({"timing_audit": {"calls": 5, "idle_calls": 0, "replaced": ["timing._perf_counter_ns"], "patched": []}},
     "timer_tampering"),
    ({"timing_audit": {"calls": 5, "idle_calls": 0, "replaced": ["channel.send"], "patched": []}},
     "harness_tampering"),
    ({"timing_audit": {"calls": 5, "idle_calls": 0, "replaced": [], "patched": ["torch.cuda.synchronize"]}},
     "timer_tampering"),
    ({"times_ms": [400.0, 400.0], "timing_wall_s": 0.5}, "timer_tampering"),  # more time than the phase had
    ({"timing_audit": None}, "harness_tampering"),
    ({"repeated_messages": ["timing"]}, "harness_tampering"),
])
def test_timing_audit_flags(change, flag):
    found = dict(audit_flags(_cand(**change), []))
    assert flag in found, found


def test_patches_already_reported_at_correctness_are_not_repeated():
    cand = _cand(timing_audit={"calls": 5, "idle_calls": 0, "replaced": [], "patched": ["torch.relu"]})
    assert audit_flags(cand, ["torch.relu"]) == []


# --- fingerprint ----------------------------------------------------------------------------

def test_fingerprint_is_cached_and_key_ignores_volatile_fields():
    fp = device_fingerprint("cpu")
    started = time.monotonic()
    assert device_fingerprint("cpu") == fp and time.monotonic() - started < 0.05
    assert fp["harness_version"] and fp["torch"] == torch.__version__
    key = fingerprint_key(fp)
    assert fingerprint_key({**fp, "network_isolated": not fp["network_isolated"], "rlimits": {}}) == key
    assert fingerprint_key({**fp, "torch": "0.0"}) != key
    assert not torch.cuda.is_initialized()


# --- extension cache (fake builds: the real compiler is exercised by the corpus) ---------------

class FakeCache(ExtensionCache):
    def _load_built(self, meta, directory):
        return types.SimpleNamespace(__name__=meta["module_name"], loaded_from=directory)


def fake_build(counter: list, fail: str | None = None, delay: float = 0.3):
    def build(directory):
        counter.append(directory)
        time.sleep(delay)
        if fail:
            raise RuntimeError(f"Error building extension 'e': {fail}")
        so = os.path.join(directory, "e.so")
        open(so, "w").close()
        return types.SimpleNamespace(__name__="e", __file__=so)
    return build


def test_concurrent_builds_of_one_hash_build_once(tmp_path):
    builds, results = [], []

    def worker():
        cache = FakeCache(str(tmp_path), "g++ 12", "")
        results.append(cache._cached_build("abc", "e", fake_build(builds), [], []))
    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len(results) == 3
    entries = sorted(p.name for p in tmp_path.iterdir())
    assert entries == ["abc", "abc.lock"], "no temp dir left behind"
    assert (tmp_path / "abc" / "e.so").exists()


def test_deterministic_compile_failures_are_cached_transient_ones_are_not(tmp_path):
    builds = []
    cache = FakeCache(str(tmp_path), "g++ 12", "")
    log = "/b/main.cpp:1:1: error: nope"
    for _ in range(2):
        with pytest.raises(CompileError) as info:
            FakeCache(str(tmp_path), "g++ 12", "")._cached_build("bad", "e", fake_build(builds, log), [], [])
    assert len(builds) == 1 and info.value.cached and "error: nope" in info.value.feedback
    for _ in range(2):
        with pytest.raises(RuntimeError):
            cache._cached_build("oom", "e", fake_build(builds, "c++: fatal error: Killed signal"), [], [])
    assert len(builds) == 3 and not (tmp_path / "oom").exists()


def test_cache_key_covers_sources_flags_and_compiler():
    a = ExtensionCache("/x", "g++ 12", "")
    args = {"name": "e", "cpp_sources": ["int f();"], "extra_cflags": ["-O2"], "build_directory": "/a"}
    key = a._key("inline", args)
    assert key == a._key("inline", {**args, "build_directory": "/b"})
    assert key != a._key("inline", {**args, "cpp_sources": ["int g();"]})
    assert key != a._key("inline", {**args, "extra_cflags": ["-O3"]})
    assert key != ExtensionCache("/x", "g++ 13", "")._key("inline", args)


# --- workspaces ---------------------------------------------------------------------------------

def test_workspaces_of_dead_owners_are_swept(tmp_path):
    from workers.evaluation.workspace import sweep_orphans
    dead = tmp_path / "kturn-eval-999999999-abc"   # no such pid
    alive = tmp_path / f"kturn-eval-{os.getpid()}-def"
    fresh = tmp_path / "kturn-eval-999999998-ghi"
    for path in (dead, alive, fresh):
        path.mkdir()
    for path in (dead, alive):
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    sweep_orphans(str(tmp_path))
    assert not dead.exists() and alive.exists() and fresh.exists()
