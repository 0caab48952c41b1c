"""Fast unit tests of the evaluation harness pieces (no sandboxed child, no compiler)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import torch

from workers.evaluation import EvalSettings, Timing, device_fingerprint, fingerprint_key
from workers.evaluation import binary_checks, builds, compile_errors, correctness, static_checks, text, timing, wire
from workers.evaluation.flags import DEFAULT_STRICT_FLAGS
from workers.evaluation.inside import outputs

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


# --- the wire and the output checksums ------------------------------------------------------

@pytest.fixture
def channel():
    parent, child = wire.channel_pair()
    yield parent, child
    parent.close()
    child.close()


def test_messages_keep_their_boundaries_blobs_and_descriptors(channel):
    parent, child = channel
    read_end, write_end = os.pipe()
    wire.send(child, {"type": "computed", "n": 7}, b"\x00\x01", fds=(write_end,))
    wire.send(child, {"type": "ready"})
    first, second = wire.receive(parent), wire.receive(parent)
    assert (first.header, first.blob, second.type) == ({"type": "computed", "n": 7}, b"\x00\x01", "ready")
    assert len(first.fds) == 1 and first.fds[0] != write_end
    wire.close_all([read_end, write_end, *first.fds])


@pytest.mark.parametrize("raw", [
    b"\x00\x00",                                   # shorter than its length field
    wire.LENGTH.pack(100) + b"{}",                 # header longer than the message
    wire.LENGTH.pack(4) + b"{{{{",                 # undecodable
    wire.LENGTH.pack(2) + b"[]",                   # not an object
    wire.LENGTH.pack(12) + b'{"type": 3 }',        # type not a string
    wire.LENGTH.pack(2) + b"{}" + b"x" * (wire.MAX_MESSAGE),  # oversized
])
def test_the_parent_rejects_malformed_or_oversized_messages(channel, raw):
    parent, child = channel
    child.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_SNDBUF, 1 << 20)
    try:
        child.send(raw)
    except OSError:
        pytest.skip("the kernel refused a datagram this large before the parent could")
    with pytest.raises(wire.ProtocolError):
        wire.receive(parent)


def test_a_closed_peer_is_reported(channel):
    parent, child = channel
    child.close()
    with pytest.raises(wire.PeerClosed):
        wire.receive(parent)


@pytest.mark.parametrize("nbytes", [0, 1, 7, 8, 17, wire.MIN_CHUNK, 3 * wire.MIN_CHUNK + 5, 200_000])
@pytest.mark.parametrize("chunk", [wire.MIN_CHUNK, 4 * wire.MIN_CHUNK])
def test_child_and_parent_checksums_agree(nbytes, chunk):
    data = torch.randint(0, 256, (nbytes,), dtype=torch.uint8)
    raw = data.numpy().tobytes()
    expected = [wire.checksum(raw[i:i + chunk]) for i in range(0, max(nbytes, 1), chunk)] if nbytes else [0]
    assert outputs.checksums(data, chunk).tolist() == expected
    assert len(expected) == wire.chunk_count(nbytes, chunk)


def test_batch_checksums_are_in_call_then_output_then_chunk_order():
    flat = [[torch.randint(0, 256, (37,), dtype=torch.uint8), torch.randint(0, 256, (100_000,), dtype=torch.uint8)]
            for _ in range(3)]
    expected = []
    for call in flat:
        for out in call:
            raw = out.numpy().tobytes()
            expected += [wire.checksum(raw[i:i + wire.MIN_CHUNK]) for i in range(0, len(raw), wire.MIN_CHUNK)]
    assert outputs.batch_checksums(flat, wire.MIN_CHUNK).tolist() == expected


def test_a_changed_byte_changes_the_checksum():
    raw = bytearray(torch.randn(1000).numpy().tobytes())
    before = wire.checksum(raw)
    raw[123] ^= 1
    assert wire.checksum(raw) != before


def test_text_from_a_child_is_made_storable():
    hostile = "x" * 100_000 + " bad\x00text \ud800\udfff \x1b[31m end"
    clean = text.clean(hostile, 2000)
    assert len(clean) <= 2000 and "\x00" not in clean and clean.endswith(" end") and clean.startswith("xxx")
    clean.encode("utf-8")  # no lone surrogate left
    assert text.clean_tree({"a": ["\x00", 1, None]}, 10) == {"a": ["\ufffd", 1, None]}


# --- correctness -------------------------------------------------------------------------

S = EvalSettings()


def test_matching_nans_and_infinities_pass():
    e = torch.tensor([1.0, float("nan"), float("inf"), -float("inf")])
    assert correctness.compare_values(e, e.clone(), S) is None


@pytest.mark.parametrize("got, check", [
    (torch.tensor([float("nan"), 2.0, 3.0]), "nan"),
    (torch.tensor([1.0, float("inf"), 3.0]), "inf"),
    (torch.tensor([1.0, 2.0, 3.01]), "values"),
])
def test_mismatches_name_the_failed_check(got, check):
    failure = correctness.compare_values(torch.tensor([1.0, 2.0, 3.0]), got, S)
    assert failure["check"] == check
    json.dumps(failure)


@pytest.mark.parametrize("got, check", [
    ([[[3], "torch.float32", "cpu"], [[2], "torch.float32", "cpu"]], "output_count"),
    ([[[4], "torch.float32", "cpu"]], "shape"),
    ([[[3], "torch.float64", "cpu"]], "dtype"),
    ([[[3], "torch.float32", "cuda"]], "device"),
])
def test_signatures_are_compared_before_values(got, check):
    failure = correctness.compare_signatures([[[3], "torch.float32", "cpu"]], got)
    assert failure["check"] == check and correctness.describe_failure({**failure, "trial": 2}).endswith("(call 2)")


def test_tolerance_depends_on_precision():
    e = torch.tensor([1.0, 2.0])
    assert correctness.compare_values(e, e + 5e-5, S) is None
    assert correctness.compare_values(e, e + 5e-3, S)["check"] == "values"
    assert correctness.compare_values(e.half(), (e + 5e-3).half(), S) is None
    assert correctness.compare_values(e.bfloat16(), (e + 0.05).bfloat16(), S)["check"] == "values"


def test_integer_outputs_compare_exactly():
    e = torch.tensor([1, 2, 3])
    assert correctness.compare_values(e, e.clone(), S) is None
    assert correctness.compare_values(e, torch.tensor([1, 2, 4]), S)["check"] == "values"


def test_stored_bytes_are_read_back_as_the_declared_dtype_and_located_in_the_output():
    values = torch.arange(12, dtype=torch.float32)
    assert torch.equal(correctness.as_tensor(values.numpy().tobytes(), "torch.float32"), values)
    failure = correctness.compare_values(values[6:], torch.zeros(6), S)
    located = correctness.locate(failure["examples"], first_element=6, shape=[3, 4])
    assert located[0]["index"] == [1, 2] and located[0]["expected"] == 6.0
    with pytest.raises(ValueError):
        correctness.dtype_of("torch.not_a_dtype")


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


def test_both_windows_lose_only_the_references_round_trip_and_inputs():
    # reference: a 30 ms window of which 10 ms were the round trip and taking the inputs
    batch = timing.BatchTimes(10, reference_window_s=0.030, credit_s=0.010, candidate_window_s=0.016)
    assert batch.reference_ms() == pytest.approx(2.0)
    assert batch.candidate_ms() == pytest.approx(0.6)   # (16 ms - 10 ms) / 10 calls
    # a window shorter than the credit is noise, not speed: a floor of a share of the window
    fast = timing.BatchTimes(1, reference_window_s=0.030, credit_s=0.010, candidate_window_s=0.008)
    assert fast.candidate_ms() == pytest.approx(8.0 * timing.FLOOR_SHARE)


def test_batches_are_sized_by_time_and_by_memory():
    assert timing.calls_for(1e-3, 10.0, 1000, 1 << 20, 4096) == 10
    assert timing.calls_for(1e-6, 10.0, 1000, 1 << 20, 4096) == 1000
    assert timing.calls_for(1e-6, 10.0, 1000, 1 << 30, 4096) == 4
    assert timing.calls_for(10.0, 10.0, 1000, 1, 4096) == 1


def test_fingerprint_is_cached_and_key_ignores_volatile_fields(monkeypatch):
    from workers.evaluation import fingerprint as fingerprint_module

    fp = device_fingerprint("cpu")
    monkeypatch.setattr(fingerprint_module, "compiler_versions", lambda: pytest.fail("the compilers were probed again"))
    assert device_fingerprint("cpu") == fp
    assert fp["harness_version"] and fp["torch"] == torch.__version__
    key = fingerprint_key(fp)
    assert fingerprint_key({**fp, "network_isolated": False, "sandbox_uid": 7}) == key
    assert fingerprint_key({**fp, "torch": "0.0"}) != key
    assert not torch.cuda.is_initialized()


def test_fingerprinting_reads_torchs_build_without_importing_torch():
    """The CLI's pre-flight keys its cache by the fingerprint: importing torch for two strings cost
    `kturn run` a second to start and half a second to exit."""
    probe = ("import json, sys; from workers.evaluation import device_fingerprint; fp = device_fingerprint('cpu');"
             "imported = 'torch' in sys.modules; import torch;"
             "print(json.dumps([imported, fp['torch'] == torch.__version__, fp['torch_cuda'] == torch.version.cuda]))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert json.loads(done.stdout.splitlines()[-1]) == [False, True, True], done.stderr


# --- builds (the build sandbox is exercised by the corpus; here its cache and its checks) ---------

ARGS = {"name": "e", "cpp_sources": ["int f() { for (;;) {} }"], "extra_cflags": ["-O2"], "functions": ["f"]}


def builder(tmp_path, **settings) -> builds.Builder:
    return builds.Builder(EvalSettings(extensions_dir=str(tmp_path), **settings), "", {"cxx": "g++ 12"}, str(tmp_path))


@pytest.mark.parametrize("kind, args, complaint", [
    ("inline", {**ARGS, "name": "../../etc/evil"}, "identifier"),
    ("inline", {**ARGS, "name": 3}, "identifier"),
    ("inline", {**ARGS, "cpp_sources": [1]}, "strings"),
    ("inline", {**ARGS, "extra_cflags": ["-O2"] * 100}, "at most"),
    ("inline", {**ARGS, "functions": ["f(); system(\"x\")"]}, r"C\+\+ functions"),
    ("inline", {**ARGS, "with_cuda": "yes"}, "True or False"),
    ("inline", {**ARGS, "cpp_sources": ["x" * (builds.MAX_SOURCE_BYTES + 1)]}, "exceed"),
    ("file", {"name": "e", "sources": [["../evil.so", "x"]]}, r"C\+\+/CUDA files"),
    ("rust", ARGS, "unknown"),
])
def test_build_requests_are_validated(kind, args, complaint):
    with pytest.raises(builds.BuildRequestError, match=complaint):
        builds.validate(kind, args)


def test_build_key_covers_every_input_of_the_build(tmp_path):
    b = builder(tmp_path)
    env = builds.build_environment(b.settings)
    key = b.key("inline", builds.validate("inline", ARGS), env)
    assert key == b.key("inline", builds.validate("inline", {**ARGS, "verbose": True}), env)  # ignored arguments
    assert key != b.key("inline", builds.validate("inline", {**ARGS, "cpp_sources": ["int g();"]}), env)
    assert key != b.key("inline", builds.validate("inline", {**ARGS, "extra_cflags": ["-O3"]}), env)
    assert key != b.key("inline", builds.validate("inline", ARGS), {**env, "CXX": "/other/c++"})
    assert key != builds.Builder(b.settings, "", {"cxx": "g++ 13"}, str(tmp_path)).key(
        "inline", builds.validate("inline", ARGS), env)
    arch = builds.build_environment(EvalSettings(cuda_arch_list="9.0"))
    assert arch["TORCH_CUDA_ARCH_LIST"] == "9.0" and b.key("inline", builds.validate("inline", ARGS), arch) != key


def fake_compile(calls: list, outcome: dict | None, so: bytes = b"\x7fELF fake"):
    def compile_(self, kind, args, key, environment):
        calls.append(key)
        time.sleep(0.2)
        if not outcome["ok"]:
            return dict(outcome)
        path = os.path.join(self.workdir, f"{key}.so")
        with open(path, "wb") as f:
            f.write(so)
        return {**outcome, "module": args["name"], "file": f"{args['name']}.so", "_module_path": path}
    return compile_


def test_concurrent_requests_for_one_build_compile_once(tmp_path, monkeypatch):
    calls, records = [], []
    monkeypatch.setattr(builds.Builder, "_compile", fake_compile(calls, {"ok": True}))
    args = builds.validate("inline", ARGS)
    threads = [threading.Thread(target=lambda: records.append(builder(tmp_path).build("inline", args))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and [r.ok for r in records] == [True] * 3 and sum(r.cached for r in records) == 2
    entry = tmp_path / calls[0]
    assert sorted(p.name for p in entry.iterdir()) == ["e.so", "meta.json"]
    assert not [p for p in tmp_path.iterdir() if ".tmp." in p.name], "no staging directory left behind"


def test_a_failure_is_served_only_to_the_identical_build_and_an_unfinished_build_is_not_cached(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(builds.Builder, "_compile", fake_compile(calls, {"ok": False, "log": "main.cpp:1:1: error: nope"}))
    failing = builds.validate("inline", ARGS)
    for _ in range(2):
        record = builder(tmp_path).build("inline", failing)
        assert not record.ok and "error: nope" in record.feedback
    assert len(calls) == 1
    monkeypatch.setattr(builds.Builder, "_compile", fake_compile(calls, {"ok": True}))
    other = builder(tmp_path).build("inline", builds.validate("inline", {**ARGS, "cpp_sources": ["int g();"]}))
    assert other.ok and len(calls) == 2, "another build's failure is never served"
    monkeypatch.setattr(builds.Builder, "_compile", fake_compile(calls, {"ok": False, "stopped": "out of time"}))
    stopped = builds.validate("inline", {**ARGS, "name": "stopped"})
    for _ in range(2):  # the answer's failure, scored as such, but not cached: the next try builds again
        record = builder(tmp_path).build("inline", stopped)
        assert not record.ok and "out of time" in record.feedback
    assert len(calls) == 4


def test_own_compute_and_backends_are_read_from_the_sources():
    assert static_checks.has_own_compute(["__global__ void k(float* x) {}"])
    assert static_checks.has_own_compute(["void f(float* o, int n) { for (int i = 0; i < n; ++i) o[i] = 0; }"])
    assert not static_checks.has_own_compute(["torch::Tensor f(torch::Tensor a) { return at::cpu::mm(a, a); } // for (;;)"])
    assert static_checks.detect_backend("import triton\n@triton.jit\ndef k(): pass") == "triton"
    assert static_checks.detect_backend("load_inline('e', cpp_sources=C, cuda_sources=K)") == "cuda"
    assert static_checks.detect_backend("load_inline('e', cpp_sources=C)") == "cpp"


@pytest.mark.parametrize("symbol, parts, compute", [
    ("_ZN2at3cpu2mmERKNS_6TensorES3_", ["at", "cpu", "mm"], True),
    ("_ZN2at4_ops4relu4callERKNS_6TensorE", ["at", "_ops", "relu", "call"], True),
    ("_ZNK2at6Tensor6matmulERKS0_", ["at", "Tensor", "matmul"], True),
    ("_ZN2at4_ops10empty_like4callERKNS_6TensorE", ["at", "_ops", "empty_like", "call"], False),
    ("_ZN3c1019UndefinedTensorImpl10_singletonE", ["c10", "UndefinedTensorImpl", "_singleton"], False),
    ("_Z4fooxv", [], False),
    ("memcpy", [], False),
])
def test_mangled_aten_names_are_recognised(symbol, parts, compute):
    found = binary_checks.nested_name(symbol)
    assert found == parts
    assert (bool(found) and found[0] in binary_checks.NAMESPACES
            and any(binary_checks.is_compute_op(p) for p in found[1:])) == compute


def test_a_file_that_is_not_elf_calls_nothing(tmp_path):
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"\x7fELF" + os.urandom(4096))
    assert binary_checks.aten_compute_calls(str(junk)) == []


# --- workspaces ---------------------------------------------------------------------------------

def test_workspaces_of_dead_owners_are_swept(tmp_path):
    from workers.evaluation.session import sweep_orphans
    dead = tmp_path / "kturn-eval-999999999-abc"   # no such pid
    alive = tmp_path / f"kturn-eval-{os.getpid()}-def"
    fresh = tmp_path / "kturn-eval-999999998-ghi"
    for path in (dead, alive, fresh):
        path.mkdir()
    for path in (dead, alive):
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    sweep_orphans(str(tmp_path))
    assert not dead.exists() and alive.exists() and fresh.exists()


def test_each_pool_process_of_a_multi_gpu_worker_gets_its_own_gpu(monkeypatch):
    from orchestrator.pinning import available_gpus, gpu_for
    monkeypatch.setenv("KTURN_GPUS", "0,1,2,3")
    gpus = available_gpus()
    assert [gpu_for(i, gpus) for i in range(5)] == ["0", "1", "2", "3", "0"]
    monkeypatch.delenv("KTURN_GPUS")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert gpu_for(0, available_gpus()) is None, "one GPU: nothing to choose"


def test_each_pool_process_gets_cores_no_other_pool_process_has():
    from orchestrator.pinning import cores_for
    cores = [0, 1, 2, 3, 4, 5, 6, 7]
    shares = [cores_for(i, 4, cores) for i in range(4)]
    assert shares == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert [cores_for(i, 3, cores) for i in range(3)] == [[0, 1], [2, 3], [4, 5]]  # none shared, two left idle
    assert [cores_for(i, 3, [4, 5]) for i in range(3)] == [[4], [5], [4]]  # more processes than cores: in turn


def test_an_answer_below_the_absolute_tolerance_is_not_correct_when_it_is_wrong_as_a_whole():
    # a softmax over a long row: every expected value is below atol (1e-4), so all-zeros would
    # pass an elementwise check; the relative norm of the error says it is entirely wrong
    expected = torch.softmax(torch.rand(16384, dtype=torch.float64), 0).float()
    assert float(expected.max()) < S.atol
    failure = correctness.compare_values(expected, torch.zeros_like(expected), S)
    assert failure["check"] == "relative_error" and failure["relative_error"] == pytest.approx(1.0)
    assert "as a whole" in correctness.describe_failure(failure)
    # an honest result, rounded differently, passes both checks
    honest = torch.softmax(torch.rand(16384, dtype=torch.float64).float(), 0)
    assert correctness.compare_values(honest, honest * (1 + 1e-6), S) is None


def test_the_build_cache_is_kept_under_its_size_oldest_first(tmp_path):
    for index, key in enumerate(["a" * 64, "b" * 64, "c" * 64]):
        entry = tmp_path / key
        entry.mkdir()
        (entry / "module.so").write_bytes(b"x" * 1000)
        os.utime(entry, (1000 + index, 1000 + index))
    builds._evict(str(tmp_path), limit=2500, keep="a" * 64)
    assert sorted(p.name[0] for p in tmp_path.iterdir()) == ["a", "c"], "the oldest other entry went"


def test_an_answer_may_not_ask_for_builds_without_end(tmp_path):
    class Child:
        sent = []

        def send(self, header, fds=()):
            self.sent.append(header)
    b = builder(tmp_path, max_builds=2)
    b.records = [builds.BuildRecord(name="e"), builds.BuildRecord(name="f")]
    message = __import__("workers.evaluation.wire", fromlist=["Message"]).Message(
        {"type": "build", "kind": "inline", "args": ARGS})
    b.serve(Child(), message)
    assert Child.sent == [{"type": "built", "ok": False}] and "more than 2" in b.records[-1].feedback
