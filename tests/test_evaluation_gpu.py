"""GPU checks of the harness: CUDA inside the sandbox (its own /proc, the GPU's device nodes,
a memory cap), CUDA load_inline built by the build sandbox, Triton, side streams, freed
memory, a CUDA error, a host-memory bomb. Skipped without a CUDA device; run them all with
scripts/gpu_check.sh."""
from __future__ import annotations

import pytest
import torch

from evaluation_corpus import PROBLEMS
from workers.evaluation import EvalSettings, evaluate

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

RELU = (PROBLEMS / "relu.py").read_text()
BIG_RELU = (PROBLEMS / "big_relu.py").read_text()

CUDA_HEADER = r'''
import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

CUDA_SRC = r"""
__global__ void kturn_relu_kernel(const float* x, float* out, int64_t n) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n) out[i] = x[i] > 0.f ? x[i] : 0.f;
}
__global__ void kturn_spin_kernel(float* out, int64_t n, int64_t rounds) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n) { float v = out[i]; for (int64_t r = 0; r < rounds; ++r) v = v * 0.999f + 0.001f; out[i] = v > 0.f ? out[i] : out[i]; }
}
torch::Tensor kturn_relu(torch::Tensor x) {
    auto out = torch::empty_like(x);
    int64_t n = x.numel();
    kturn_relu_kernel<<<(n + 255) / 256, 256>>>(x.data_ptr<float>(), out.data_ptr<float>(), n);
    return out;
}
torch::Tensor relu_on_side_stream(torch::Tensor x, int64_t rounds) {
    auto out = torch::empty_like(x);
    int64_t n = x.numel();
    cudaStream_t side;
    cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking);
    kturn_relu_kernel<<<(n + 255) / 256, 256, 0, side>>>(x.data_ptr<float>(), out.data_ptr<float>(), n);
    kturn_spin_kernel<<<(n + 255) / 256, 256, 0, side>>>(out.data_ptr<float>(), n, rounds);
    cudaStreamDestroy(side);
    return out;
}
torch::Tensor relu_then_spin(torch::Tensor x, int64_t rounds) {
    auto out = kturn_relu(x);
    int64_t n = x.numel();
    kturn_spin_kernel<<<(n + 255) / 256, 256>>>(out.data_ptr<float>(), n, rounds);
    return out;
}
torch::Tensor out_of_bounds(torch::Tensor x) {
    auto out = torch::empty_like(x);
    kturn_relu_kernel<<<1024, 256>>>(x.data_ptr<float>(), out.data_ptr<float>() + (1LL << 40), 1 << 18);
    return out;
}
"""
CPP_SRC = """
torch::Tensor kturn_relu(torch::Tensor x);
torch::Tensor relu_on_side_stream(torch::Tensor x, int64_t rounds);
torch::Tensor relu_then_spin(torch::Tensor x, int64_t rounds);
torch::Tensor out_of_bounds(torch::Tensor x);
"""
ext = load_inline(name="kturn_gpu_ops", cpp_sources=CPP_SRC, cuda_sources=CUDA_SRC,
                  functions=["kturn_relu", "relu_on_side_stream", "relu_then_spin", "out_of_bounds"])


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
'''

TRITON = r'''
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def kturn_relu_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    tl.store(out_ptr + offsets, tl.maximum(tl.load(x_ptr + offsets, mask=mask), 0.0), mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        out = torch.empty_like(x)
        n = x.numel()
        kturn_relu_kernel[(triton.cdiv(n, 1024),)](x, out, n, BLOCK=1024)
        return out
'''


def cuda_solution(body: str) -> str:
    return CUDA_HEADER + "".join(f"        {line}\n" for line in body.strip().splitlines())


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return EvalSettings(backend="cuda", device="cuda", timing_trials=20,
                        extensions_dir=str(tmp_path_factory.mktemp("gpu_ext")))


def test_cuda_load_inline_is_correct_and_timed_in_the_sandbox(settings):
    result = evaluate(RELU, cuda_solution("return ext.kturn_relu(x)"), settings)
    assert result.correct and not result.disqualified, result.error
    assert result.timing_meaningful and result.runtime.median_ms > 0 and result.speedup > 0
    fp = result.fingerprint
    assert fp["device"] == "cuda" and fp["device_name"] and fp["driver_version"]
    assert fp["sandbox"] == "bwrap" and fp["private_proc"] and fp["gpu_nodes"], fp
    assert fp["memory_cap"] is not None, "a memory cgroup caps CUDA evaluations (RLIMIT_AS cannot)"
    assert result.details["builds"][0]["ok"] and not result.details["builds"][0]["aten_calls"]


def test_triton_on_gpu_is_correct_and_timed(settings):
    from dataclasses import replace
    result = evaluate(RELU, TRITON, replace(settings, backend="triton"))
    assert result.correct and not result.disqualified, result.error
    assert result.timing_meaningful and result.runtime is not None


def test_side_stream_work_is_counted(settings):
    side = evaluate(BIG_RELU, cuda_solution("return ext.relu_on_side_stream(x, 2000)"), settings)
    same = evaluate(BIG_RELU, cuda_solution("return ext.relu_then_spin(x, 2000)"), settings)
    plain = evaluate(BIG_RELU, cuda_solution("return ext.kturn_relu(x)"), settings)
    assert side.correct and same.correct and plain.correct
    # the device-wide synchronize inside the timed region makes side-stream work count
    assert side.runtime.median_ms > 0.5 * same.runtime.median_ms
    assert side.runtime.median_ms > 2 * plain.runtime.median_ms


def test_returning_freed_memory_is_caught(settings):
    body = "scratch = ext.kturn_relu(x)\ndel scratch\nreturn torch.empty_like(x)"
    result = evaluate(RELU, cuda_solution(body), settings)
    assert not result.correct and result.error_kind == "incorrect"


def test_work_left_running_after_forward_is_inside_the_window(settings):
    # the kernel keeps spinning after forward returns; the outputs' checksums are taken on the
    # device before the reply, so the parent's clock sees the spin either way
    spin = evaluate(BIG_RELU, cuda_solution("return ext.relu_then_spin(x, 20000)"), settings)
    plain = evaluate(BIG_RELU, cuda_solution("return ext.kturn_relu(x)"), settings)
    assert spin.correct and plain.correct
    assert spin.runtime.median_ms > 3 * plain.runtime.median_ms


def test_a_host_memory_bomb_is_contained(settings):
    from dataclasses import replace
    body = "hog = [torch.ones(1 << 28) for _ in range(64)]\nreturn ext.kturn_relu(x)"
    result = evaluate(RELU, cuda_solution(body), replace(settings, memory_limit_mb=6144))
    assert not result.correct and "out_of_memory" in result.flags, (result.error_kind, result.error)


def test_cuda_error_becomes_a_verdict_and_the_next_evaluation_is_fine(settings):
    result = evaluate(RELU, cuda_solution("return ext.out_of_bounds(x)"), settings)
    assert not result.correct and result.error_kind in ("runtime_error", "crashed")
    assert result.error
    after = evaluate(RELU, cuda_solution("return ext.kturn_relu(x)"), settings)
    assert after.correct, after.error
