"""Builds ahead of evaluation (the build stage's core): made on a CPU in the sandbox, carried as
bytes to another host's cache, and found there by the evaluation under the same key."""
from __future__ import annotations

import os

import pytest

from evaluation_corpus import PROBLEMS, SOLUTIONS
from workers.evaluation import EvalSettings, evaluate
from workers.evaluation.builds import CacheEntry, install_entry, read_entry
from workers.evaluation.prebuild import not_ahead, prebuild

RELU = (PROBLEMS / "relu.py").read_text()
HONEST = (SOLUTIONS / "honest_cpp_relu.py").read_text()


def elsewhere(tmp_path, name: str) -> EvalSettings:
    """Settings of another host: an extension cache of its own, nothing shared with the build host."""
    return EvalSettings(extensions_dir=str(tmp_path / name), timing_trials=2, warmup_runs=1)


def test_a_build_made_ahead_is_loaded_elsewhere_without_compiling(tmp_path):
    made = prebuild(RELU, HONEST, EvalSettings())
    assert made.stopped is None and [b.ok for b in made.builds] == [True]
    assert [e.key for e in made.entries] == [made.builds[0].key] and made.entries[0].module[:4] == b"\x7fELF"
    gpu_host = elsewhere(tmp_path, "evaluate-host")
    assert all(install_entry(gpu_host.resolved_extensions_dir(), entry) for entry in made.entries)
    result = evaluate(RELU, HONEST, gpu_host)
    assert result.correct, result.error
    assert [(b["key"], b["cached"]) for b in result.details["builds"]] == [(made.builds[0].key[:16], True)]


def test_a_failed_build_travels_as_the_same_compile_error(tmp_path):
    broken = (SOLUTIONS / "compile_error.py").read_text()
    made = prebuild(RELU, broken, EvalSettings())
    assert [b.ok for b in made.builds] == [False] and made.entries[0].module is None
    gpu_host = elsewhere(tmp_path, "evaluate-host")
    install_entry(gpu_host.resolved_extensions_dir(), made.entries[0])
    result = evaluate(RELU, broken, gpu_host)
    assert result.error_kind == "compile_error" and "undefined_variable" in result.error
    assert result.details["builds"][0]["cached"] is True


def test_builds_asked_for_before_a_model_that_needs_the_gpu_are_still_made():
    needs_gpu = HONEST.replace("class ModelNew(nn.Module):", "class ModelNew(nn.Module):\n"
                               "    def __new__(cls, *args):\n        torch.zeros(1, device='cuda')\n", 1)
    assert needs_gpu != HONEST
    made = prebuild(RELU, needs_gpu, EvalSettings())
    assert made.stopped is not None  # the CPU build host cannot construct it: the GPU host will
    assert [b.ok for b in made.builds] == [True] and len(made.entries) == 1


@pytest.mark.parametrize("entry, why", [
    (CacheEntry("0" * 64, {"ok": True, "module": "m", "file": "m.so"}, b"#!/bin/sh\n"), "not an ELF file"),
    (CacheEntry("../../etc", {"ok": True, "module": "m", "file": "m.so"}, b"\x7fELF"), "a key that is a path"),
    (CacheEntry("1" * 64, {"ok": True, "module": "../m", "file": "m.so"}, b"\x7fELF"), "a module name that is a path"),
    (CacheEntry("2" * 64, {"ok": "yes"}, None), "a malformed meta"),
])
def test_an_entry_from_elsewhere_is_checked_like_a_local_build(tmp_path, entry, why):
    assert not install_entry(str(tmp_path), entry), why
    assert read_entry(str(tmp_path), entry.key if len(entry.key) == 64 else "x") is None
    assert not [name for name in os.listdir(tmp_path) if not name.endswith(".lock")]


def test_what_is_not_built_ahead_and_why():
    assert not_ahead("import torch\nclass ModelNew: pass\n", EvalSettings()) == "no extension to build"
    assert not_ahead(HONEST, EvalSettings()) is None
    cuda = EvalSettings(backend="cuda", device="cuda")
    assert "cuda_arch_list" in not_ahead(HONEST, cuda)
    assert not_ahead(HONEST, EvalSettings(backend="cuda", device="cuda", cuda_arch_list="9.0")) is None
