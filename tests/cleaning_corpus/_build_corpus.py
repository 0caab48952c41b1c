"""Builds the cleaning corpus: one directory per case.

    /work/main/.venv/bin/python tests/cleaning_corpus/_build_corpus.py

Each case directory holds
    raw.md         the model response as generated
    cleaned.md     the expected CleanResult.cleaned
    code.py        the expected CleanResult.code (absent: code is None)
    thinking.md    the expected CleanResult.thinking when non-empty
    expected.json  degenerate flag, no_code_reason, thinking (null / "" / "thinking.md"),
                   number of extra sources, whether the text is truncated, description

Expectations are derived from how each case is built (a degenerate case is
prefix + unit * N, so the expected cleaned text is prefix + unit, plus a
closing fence if the cut leaves one open), never from running the cleaner.
The texts imitate Qwen3-8B answers to KernelBench prompts.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
FENCE = "```"

# ---------------------------------------------------------------------------
# Solutions (KernelBench style)
# ---------------------------------------------------------------------------

ADD_SOLUTION = '''import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

elementwise_add_source = """
#include <torch/extension.h>
#include <cuda_runtime.h>

__global__ void elementwise_add_kernel(const float* a, const float* b, float* out, int size) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < size) {
        out[idx] = a[idx] + b[idx];
    }
}

torch::Tensor elementwise_add_cuda(torch::Tensor a, torch::Tensor b) {
    TORCH_CHECK(a.is_cuda(), "a must be a CUDA tensor");
    TORCH_CHECK(b.is_cuda(), "b must be a CUDA tensor");
    TORCH_CHECK(a.is_contiguous(), "a must be contiguous");
    TORCH_CHECK(b.is_contiguous(), "b must be contiguous");
    auto size = a.numel();
    auto out = torch::zeros_like(a);

    const int block_size = 256;
    const int num_blocks = (size + block_size - 1) / block_size;

    elementwise_add_kernel<<<num_blocks, block_size>>>(a.data_ptr<float>(), b.data_ptr<float>(), out.data_ptr<float>(), size);

    return out;
}
"""

elementwise_add_cpp_source = "torch::Tensor elementwise_add_cuda(torch::Tensor a, torch::Tensor b);"

elementwise_add = load_inline(
    name="elementwise_add",
    cpp_sources=elementwise_add_cpp_source,
    cuda_sources=elementwise_add_source,
    functions=["elementwise_add_cuda"],
    verbose=False,
    extra_cflags=["-O3"],
    extra_ldflags=[""],
)


class ModelNew(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.elementwise_add = elementwise_add

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.elementwise_add.elementwise_add_cuda(a, b)
'''

TRITON_SOFTMAX = '''import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def softmax_kernel(output_ptr, input_ptr, input_row_stride, output_row_stride, n_cols, BLOCK_SIZE: tl.constexpr):
    row_idx = tl.program_id(0)
    row_start_ptr = input_ptr + row_idx * input_row_stride
    col_offsets = tl.arange(0, BLOCK_SIZE)
    input_ptrs = row_start_ptr + col_offsets
    mask = col_offsets < n_cols
    row = tl.load(input_ptrs, mask=mask, other=-float("inf"))
    row_minus_max = row - tl.max(row, axis=0)
    numerator = tl.exp(row_minus_max)
    denominator = tl.sum(numerator, axis=0)
    softmax_output = numerator / denominator
    output_row_start_ptr = output_ptr + row_idx * output_row_stride
    output_ptrs = output_row_start_ptr + col_offsets
    tl.store(output_ptrs, softmax_output, mask=mask)


def triton_softmax(x: torch.Tensor) -> torch.Tensor:
    n_rows, n_cols = x.shape
    BLOCK_SIZE = triton.next_power_of_2(n_cols)
    num_warps = 4
    if BLOCK_SIZE >= 2048:
        num_warps = 8
    if BLOCK_SIZE >= 4096:
        num_warps = 16
    y = torch.empty_like(x)
    softmax_kernel[(n_rows,)](y, x, x.stride(0), y.stride(0), n_cols, num_warps=num_warps, BLOCK_SIZE=BLOCK_SIZE)
    return y


class ModelNew(nn.Module):
    def __init__(self):
        super(ModelNew, self).__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return triton_softmax(x.contiguous())
'''

MATMUL_CUDA = '''import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

# =============================================================================
# Tiled matrix multiplication with shared memory
# =============================================================================

matmul_source = r"""
#include <torch/extension.h>
#include <cuda_runtime.h>

#define TILE 16
#define BLOCK_ROWS 16
#define BLOCK_COLS 16
#define WARP_SIZE 32
#define FULL_MASK 0xffffffff
#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))
#define CHECK_CUDA(x) TORCH_CHECK(x.is_cuda(), #x " must be a CUDA tensor")
#define CHECK_CONTIGUOUS(x) TORCH_CHECK(x.is_contiguous(), #x " must be contiguous")
#define CHECK_FLOAT(x) TORCH_CHECK(x.scalar_type() == at::kFloat, #x " must be float32")
#define CHECK_INPUT(x) CHECK_CUDA(x); CHECK_CONTIGUOUS(x); CHECK_FLOAT(x)

// ============================================================================
// Constants
// ============================================================================

__constant__ float kScale[16] = {
    1.000f, 0.980f, 0.961f, 0.942f,
    0.923f, 0.905f, 0.887f, 0.869f,
    0.852f, 0.835f, 0.819f, 0.803f,
    0.787f, 0.771f, 0.756f, 0.741f
};

// ============================================================================
// Kernel
// ============================================================================

__global__ void matmul_tiled_kernel(const float* __restrict__ A, const float* __restrict__ B,
                                    float* __restrict__ C, int M, int N, int K) {
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE];

    int tx = threadIdx.x;
    int ty = threadIdx.y;
    int row = blockIdx.y * TILE + ty;
    int col = blockIdx.x * TILE + tx;
    float sum = 0.0f;

    for (int t = 0; t < CEIL_DIV(K, TILE); ++t) {
        int a_col = t * TILE + tx;
        int b_row = t * TILE + ty;
        As[ty][tx] = (row < M && a_col < K) ? A[row * K + a_col] : 0.0f;
        Bs[ty][tx] = (b_row < K && col < N) ? B[b_row * N + col] : 0.0f;
        __syncthreads();

        // Manually unrolled inner product over the tile
        sum += As[ty][0] * Bs[0][tx];
        sum += As[ty][1] * Bs[1][tx];
        sum += As[ty][2] * Bs[2][tx];
        sum += As[ty][3] * Bs[3][tx];
        sum += As[ty][4] * Bs[4][tx];
        sum += As[ty][5] * Bs[5][tx];
        sum += As[ty][6] * Bs[6][tx];
        sum += As[ty][7] * Bs[7][tx];
        sum += As[ty][8] * Bs[8][tx];
        sum += As[ty][9] * Bs[9][tx];
        sum += As[ty][10] * Bs[10][tx];
        sum += As[ty][11] * Bs[11][tx];
        sum += As[ty][12] * Bs[12][tx];
        sum += As[ty][13] * Bs[13][tx];
        sum += As[ty][14] * Bs[14][tx];
        sum += As[ty][15] * Bs[15][tx];
        __syncthreads();
    }

    if (row < M && col < N) {
        C[row * N + col] = sum * kScale[0];
    }
}

// ============================================================================
// Host wrapper
// ============================================================================

torch::Tensor matmul_cuda(torch::Tensor A, torch::Tensor B) {
    CHECK_INPUT(A);
    CHECK_INPUT(B);
    TORCH_CHECK(A.dim() == 2, "A must be 2D");
    TORCH_CHECK(B.dim() == 2, "B must be 2D");
    TORCH_CHECK(A.size(1) == B.size(0), "inner dimensions must match");
    int M = A.size(0);
    int K = A.size(1);
    int N = B.size(1);
    auto C = torch::empty({M, N}, A.options());
    dim3 block(TILE, TILE);
    dim3 grid(CEIL_DIV(N, TILE), CEIL_DIV(M, TILE));
    matmul_tiled_kernel<<<grid, block>>>(A.data_ptr<float>(), B.data_ptr<float>(), C.data_ptr<float>(), M, N, K);
    return C;
}
"""

matmul_cpp_source = "torch::Tensor matmul_cuda(torch::Tensor A, torch::Tensor B);"

matmul = load_inline(
    name="matmul_tiled",
    cpp_sources=matmul_cpp_source,
    cuda_sources=matmul_source,
    functions=["matmul_cuda"],
    verbose=False,
)


# =============================================================================
# Model
# =============================================================================

class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        self.matmul = matmul

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return self.matmul.matmul_cuda(A.contiguous(), B.contiguous())
'''

GEOMETRIC_16 = '''import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

geom_source = """
#include <torch/extension.h>

// Computes 1 + x + x^2 + ... + x^16 with a fully unrolled Horner scheme.
__global__ void geometric_series_kernel(const float* in, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = in[i];
    float acc = 1.0f;
    acc = fmaf(acc, x, 1.0f);
    acc = fmaf(acc, x, 1.0f);
    acc = fmaf(acc, x, 1.0f);
    acc = fmaf(acc, x, 1.0f);
    acc = fmaf(acc, x, 1.0f);
    acc = fmaf(acc, x, 1.0f);
    acc = fmaf(acc, x, 1.0f);
    acc = fmaf(acc, x, 1.0f);
    acc = fmaf(acc, x, 1.0f);
    acc = fmaf(acc, x, 1.0f);
    acc = fmaf(acc, x, 1.0f);
    acc = fmaf(acc, x, 1.0f);
    acc = fmaf(acc, x, 1.0f);
    acc = fmaf(acc, x, 1.0f);
    acc = fmaf(acc, x, 1.0f);
    acc = fmaf(acc, x, 1.0f);
    out[i] = acc;
}

torch::Tensor geometric_series_cuda(torch::Tensor x) {
    TORCH_CHECK(x.is_cuda(), "x must be a CUDA tensor");
    TORCH_CHECK(x.is_contiguous(), "x must be contiguous");
    auto out = torch::empty_like(x);
    int n = x.numel();
    const int threads = 256;
    const int blocks = (n + threads - 1) / threads;
    geometric_series_kernel<<<blocks, threads>>>(x.data_ptr<float>(), out.data_ptr<float>(), n);
    return out;
}
"""

geom = load_inline(
    name="geometric_series",
    cpp_sources="torch::Tensor geometric_series_cuda(torch::Tensor x);",
    cuda_sources=geom_source,
    functions=["geometric_series_cuda"],
    verbose=False,
)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        self.geom = geom

    def forward(self, x):
        return self.geom.geometric_series_cuda(x.contiguous())
'''

TRIPLE_RELU = '''import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

fused_source = """
#include <torch/extension.h>

__global__ void bias_relu_kernel(const float* x, const float* bias, float* out, int n, int c, int hw) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        int ch = (i / hw) % c;
        out[i] = fmaxf(x[i] + bias[ch], 0.0f);
    }
}

torch::Tensor bias_relu_cuda(torch::Tensor x, torch::Tensor bias) {
    auto out = torch::empty_like(x);
    int n = x.numel();
    int c = x.size(1);
    int hw = x.size(2) * x.size(3);
    bias_relu_kernel<<<(n + 255) / 256, 256>>>(x.data_ptr<float>(), bias.data_ptr<float>(), out.data_ptr<float>(), n, c, hw);
    return out;
}
"""

fused = load_inline(
    name="bias_relu",
    cpp_sources="torch::Tensor bias_relu_cuda(torch::Tensor x, torch::Tensor bias);",
    cuda_sources=fused_source,
    functions=["bias_relu_cuda"],
    verbose=False,
)


class ModelNew(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.fused = fused

    def forward(self, x):
        # The reference applies conv -> bias -> relu three times with shared weights.
        x = self.fused.bias_relu_cuda(self.conv(x).contiguous(), self.bias)
        x = self.fused.bias_relu_cuda(self.conv(x).contiguous(), self.bias)
        x = self.fused.bias_relu_cuda(self.conv(x).contiguous(), self.bias)
        return x
'''

WARP_REDUCE = '''import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

rowsum_source = """
#include <torch/extension.h>
#include <cuda_runtime.h>



__device__ __forceinline__ float warp_reduce_sum(float val) {
    val += __shfl_down_sync(0xffffffff, val, 16);
    val += __shfl_down_sync(0xffffffff, val, 8);
    val += __shfl_down_sync(0xffffffff, val, 4);
    val += __shfl_down_sync(0xffffffff, val, 2);
    val += __shfl_down_sync(0xffffffff, val, 1);
    return val;
}



__global__ void row_sum_kernel(const float* x, float* out, int cols) {
    int row = blockIdx.x;
    float val = 0.0f;
    for (int c = threadIdx.x; c < cols; c += 32) {
        val += x[row * cols + c];
    }
    val = warp_reduce_sum(val);
    if (threadIdx.x == 0) {
        out[row] = val;
    }
}

torch::Tensor row_sum_cuda(torch::Tensor x) {
    auto out = torch::empty({x.size(0)}, x.options());
    row_sum_kernel<<<x.size(0), 32>>>(x.data_ptr<float>(), out.data_ptr<float>(), x.size(1));
    return out;
}
"""



row_sum = load_inline(
    name="row_sum",
    cpp_sources="torch::Tensor row_sum_cuda(torch::Tensor x);",
    cuda_sources=rowsum_source,
    functions=["row_sum_cuda"],
    verbose=False,
)



class ModelNew(nn.Module):
    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim
        self.row_sum = row_sum

    def forward(self, x):
        return self.row_sum.row_sum_cuda(x.contiguous()).unsqueeze(self.dim)
'''

REFERENCE_MODEL = '''import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a, b):
        return a + b
'''

USAGE_EXAMPLE = '''model = ModelNew().cuda()
a = torch.randn(4096, device="cuda")
b = torch.randn(4096, device="cuda")
out = model(a, b)
print(torch.allclose(out, a + b))
'''

CPP_KERNEL = '''#include <torch/extension.h>
#include <cuda_runtime.h>

__global__ void scale_shift_kernel(const float* x, float* y, float scale, float shift, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        y[i] = x[i] * scale + shift;
    }
}

torch::Tensor scale_shift_cuda(torch::Tensor x, double scale, double shift) {
    auto y = torch::empty_like(x);
    int n = x.numel();
    scale_shift_kernel<<<(n + 255) / 256, 256>>>(x.data_ptr<float>(), y.data_ptr<float>(), scale, shift, n);
    return y;
}
'''

SCALE_SHIFT_PY = '''import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

scale_shift_source = r"""
#include <torch/extension.h>
#include <cuda_runtime.h>

__global__ void scale_shift_kernel(const float* x, float* y, float scale, float shift, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        y[i] = x[i] * scale + shift;
    }
}

torch::Tensor scale_shift_cuda(torch::Tensor x, double scale, double shift) {
    auto y = torch::empty_like(x);
    int n = x.numel();
    scale_shift_kernel<<<(n + 255) / 256, 256>>>(x.data_ptr<float>(), y.data_ptr<float>(), scale, shift, n);
    return y;
}
"""

scale_shift = load_inline(
    name="scale_shift",
    cpp_sources="torch::Tensor scale_shift_cuda(torch::Tensor x, double scale, double shift);",
    cuda_sources=scale_shift_source,
    functions=["scale_shift_cuda"],
    verbose=False,
)


class ModelNew(nn.Module):
    def __init__(self, scale: float = 2.0, shift: float = 0.5):
        super().__init__()
        self.scale = scale
        self.shift = shift

    def forward(self, x):
        return scale_shift.scale_shift_cuda(x.contiguous(), self.scale, self.shift)
'''

FIRST_ATTEMPT = '''import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return torch.softmax(x, dim=-1)
'''

# ---------------------------------------------------------------------------
# Prose
# ---------------------------------------------------------------------------

REASONING = """Okay, let's see. I need to optimize the given PyTorch model with a custom CUDA kernel. The original model just does an element-wise addition of two tensors, so the main cost is the kernel launch and the memory traffic.

First, I should think about what the kernel needs to do. Each thread handles one element: out[i] = a[i] + b[i]. For a tensor with 4096 elements, a block size of 256 gives 16 blocks.

Wait, I should also check that the inputs are contiguous and on the GPU, otherwise data_ptr will give wrong results. TORCH_CHECK can do that.

Hmm, could I fuse anything else? The model only has the addition, so there is nothing to fuse. Maybe vectorized loads with float4 would help for large tensors, but the sizes here are small, so I'll keep it simple and correct.

Now, how to compile it? load_inline with cpp_sources holding the declaration and cuda_sources holding the kernel and the wrapper. Then ModelNew calls the wrapper in forward.
"""

REASONING_WITH_DRAFT = """Okay, the task is a row-wise softmax. Let me first write a quick draft to check the interface.

```python
class ModelNew(nn.Module):
    def forward(self, x):
        return torch.softmax(x, dim=1)
```

Wait, that just calls PyTorch, it is not a custom kernel. I need a Triton kernel: one program per row, load the row with a mask, subtract the max for numerical stability, exponentiate, divide by the sum.

BLOCK_SIZE has to be a power of two at least n_cols, so triton.next_power_of_2(n_cols). For wide rows, more warps help.
"""

WAIT_REASONING = """Okay, I need to write a fused bias + ReLU kernel and apply it after each convolution.

Wait, the reference applies the same conv three times. Let me check: yes, self.conv is used three times, so the weights are shared.

Wait, does the bias broadcast over channels? The bias has shape (C,), so for NCHW the channel index is (i / (H*W)) % C.

Wait, is the input contiguous after the convolution? Not necessarily, so I'll call .contiguous() before passing it in.

Hmm, wait. Could I fuse the convolution too? That would mean writing an implicit GEMM, which is a lot of work. Let me keep cuDNN for the convolution and fuse only bias + ReLU.

Wait, what about the launch configuration? 256 threads per block, (n + 255) / 256 blocks. That's fine.
"""

ANSWER_INTRO = "Here is the optimized implementation. The element-wise addition runs in a single custom CUDA kernel compiled with `load_inline`:\n\n"
ANSWER_OUTRO = "\n\nThe kernel assigns one thread per element and checks that both inputs are contiguous CUDA tensors before launching.\n"


def fenced(code: str, lang: str = "python") -> str:
    return f"{FENCE}{lang}\n{code}{FENCE}"


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------

CASES: list[dict] = []


def case(name: str, raw: str, *, cleaned: str, code: str | None, degenerate: bool, description: str,
         no_code_reason: str | None = None, thinking: str | None = None, extra_sources: int = 0,
         truncated: bool | None = None, loop_in_reasoning: bool = False) -> None:
    CASES.append(dict(
        name=name, raw=raw, cleaned=cleaned, code=code, degenerate=degenerate, description=description,
        no_code_reason=no_code_reason, thinking=thinking, extra_sources=extra_sources,
        truncated=degenerate if truncated is None else truncated, loop_in_reasoning=loop_in_reasoning,
    ))


def think(reasoning: str) -> str:
    return f"<think>\n{reasoning}</think>\n\n"


def legit_cases() -> None:
    answer = ANSWER_INTRO + fenced(ADD_SOLUTION) + ANSWER_OUTRO
    case("legit_load_inline_basic", answer, cleaned=answer, code=ADD_SOLUTION, degenerate=False,
         description="plain answer: prose, one python block, prose")

    answer = "Here is a Triton implementation of the row-wise softmax:\n\n" + fenced(TRITON_SOFTMAX) + "\n"
    case("legit_think_with_draft_block", think(REASONING_WITH_DRAFT) + answer, cleaned=answer,
         code=TRITON_SOFTMAX, degenerate=False, thinking=REASONING_WITH_DRAFT.strip(),
         description="closed reasoning holding a draft ModelNew block; only the answer's block counts")

    answer = fenced(TRITON_SOFTMAX) + "\n"
    case("legit_empty_think", "<think>\n\n</think>\n\n" + answer, cleaned=answer, code=TRITON_SOFTMAX,
         degenerate=False, thinking="", description="thinking disabled: empty <think> block gives thinking ''")

    answer = (ANSWER_INTRO + fenced(ADD_SOLUTION) + "\n\nExample usage:\n\n" + fenced(USAGE_EXAMPLE)
              + "\n\nThis prints True when the kernel matches the reference.\n")
    case("legit_usage_example_after_solution", answer, cleaned=answer, code=ADD_SOLUTION, degenerate=False,
         description="a usage example block follows the solution; the ModelNew block is chosen, not the last")

    answer = ("First attempt:\n\n" + fenced(FIRST_ATTEMPT) + "\n\nWait, that still calls torch.softmax. "
              "Here is the version with a real Triton kernel:\n\n" + fenced(TRITON_SOFTMAX) + "\n")
    case("legit_two_solutions_last_wins", answer, cleaned=answer, code=TRITON_SOFTMAX, degenerate=False,
         description="two blocks define ModelNew; the last complete one wins")

    answer = "Optimized model:\n\n" + fenced(ADD_SOLUTION, lang="") + "\n"
    case("legit_fence_without_language", answer, cleaned=answer, code=ADD_SOLUTION, degenerate=False,
         description="solution fenced without a language tag")

    cut_code = ADD_SOLUTION[:ADD_SOLUTION.index("    def forward")]
    answer = ANSWER_INTRO + f"{FENCE}python\n" + cut_code
    case("legit_unclosed_final_block", answer, cleaned=answer, code=cut_code, degenerate=False,
         description="generation hit max tokens inside the solution block (no loop): kept byte for byte")

    answer = "Here is the code:\n\n" + ADD_SOLUTION + "\nThis fuses nothing but avoids the Python overhead.\n"
    case("legit_bare_code", answer, cleaned=answer, code=ADD_SOLUTION, degenerate=False,
         description="code without fences, between a sentence and an explanation")

    answer = ("The CUDA kernel:\n\n" + fenced(CPP_KERNEL, "cpp") + "\n\nAnd the Python module that compiles it:\n\n"
              + fenced(SCALE_SHIFT_PY) + "\n")
    case("legit_separate_cpp_block", answer, cleaned=answer, code=SCALE_SHIFT_PY, degenerate=False,
         extra_sources=1, description="kernel source in its own ```cpp block next to the python block")

    answer = ("To optimize this model I would replace the addition with a custom CUDA kernel that assigns one "
              "thread per element, and launch it with 256 threads per block.\n\nHowever, for such a small "
              "operation the launch overhead dominates, so the speedup will be limited.\n")
    case("legit_no_code", answer, cleaned=answer, code=None, degenerate=False, no_code_reason="no code block",
         description="prose only")

    answer = "The reference model is:\n\n" + fenced(REFERENCE_MODEL) + "\n\nIt adds the two inputs.\n"
    case("legit_block_without_model_new", answer, cleaned=answer, code=None, degenerate=False,
         no_code_reason="no block defines ModelNew", description="a python block that only defines Model")

    answer = ("This version tiles the matrices through shared memory and unrolls the inner product:\n\n"
              + fenced(MATMUL_CUDA) + "\n")
    case("legit_tiled_matmul_repetitive_code", think(REASONING) + answer, cleaned=answer, code=MATMUL_CUDA,
         degenerate=False, thinking=REASONING.strip(),
         description="banners, #define list, TORCH_CHECK lines, 16 similar unrolled lines, constant table")

    answer = "The series is evaluated with a fully unrolled Horner scheme:\n\n" + fenced(GEOMETRIC_16) + "\n"
    case("legit_sixteen_identical_lines", answer, cleaned=answer, code=GEOMETRIC_16, degenerate=False,
         description="16 identical consecutive lines in an unrolled loop are not a loop")

    answer = "Fused bias + ReLU after each convolution:\n\n" + fenced(TRIPLE_RELU) + "\n"
    case("legit_same_op_three_times", think(WAIT_REASONING) + answer, cleaned=answer, code=TRIPLE_RELU,
         degenerate=False, thinking=WAIT_REASONING.strip(),
         description="the same op applied three times; reasoning starting many sentences with 'Wait,'")

    answer = "Row sum with a warp reduction:\n\n" + fenced(WARP_REDUCE) + "\n"
    case("legit_triple_blank_lines", answer, cleaned=answer, code=WARP_REDUCE, degenerate=False,
         description="code separated by three blank lines (matches the '\\n\\n\\n\\n' stop sequence)")

    answer = ("The kernel:\n\n" + fenced(CPP_KERNEL, "cuda") + "\n" + fenced(SCALE_SHIFT_PY) + "\n\n"
              "Both blocks together form the solution.\n")
    case("legit_adjacent_blocks", answer, cleaned=answer, code=SCALE_SHIFT_PY, degenerate=False, extra_sources=1,
         description="a ```cuda block immediately followed by the python block (matches the '```\\n```' stop)")

    answer = "The reasoning is done, here is the final module:\n\n" + fenced(ADD_SOLUTION) + "\n"
    case("legit_close_tag_without_open", REASONING + "</think>\n\n" + answer, cleaned=answer, code=ADD_SOLUTION,
         degenerate=False, thinking=REASONING.strip(),
         description="the chat template opened <think> in the prompt: the response starts inside the reasoning")

    answer = "Nothing to show yet:\n\n```python\n```\n\nI will fill it in next turn.\n"
    case("legit_single_empty_block", answer, cleaned=answer, code=None, degenerate=False,
         no_code_reason="empty code block", description="one empty code block is not a loop")

    answer = ANSWER_INTRO + fenced(ADD_SOLUTION) + "\n\n" + "=" * 79 + "\nSummary\n" + "=" * 79 + "\n" + \
        "- one thread per element\n- input checks\n"
    case("legit_markdown_rules", answer, cleaned=answer, code=ADD_SOLUTION, degenerate=False,
         description="79-char '=' rules around a heading after the solution")

    answer = ANSWER_INTRO + fenced(ADD_SOLUTION) + "\n" + "\n" * 3 + "Done.\n"
    case("legit_trailing_blank_lines", answer, cleaned=answer, code=ADD_SOLUTION, degenerate=False,
         description="a few blank lines after the block are not a flood")


def degenerate_cases() -> None:
    rng = random.Random(20240601)

    answer_prefix = "I'll write the kernel now.\n\nn\n"
    unit = "```python\n"
    case("degenerate_python_fence_loop", think(REASONING) + answer_prefix + unit * 300,
         cleaned=answer_prefix + unit + FENCE,
         code=None, degenerate=True, no_code_reason="empty code block", thinking=REASONING.strip(),
         description="'n\\n```python\\n```python...' x300 after the reasoning")

    prefix = ANSWER_INTRO + fenced(ADD_SOLUTION)[:-len(FENCE)]
    unit = "```\n"
    case("degenerate_fence_flood_after_solution", prefix + unit * 400, cleaned=prefix + unit, code=ADD_SOLUTION,
         degenerate=True, description="closing fence repeated 400 times: the solution's own fence is the first unit")

    prefix = "Let me write the code.\n\n"
    unit = "```python\n```\n"
    case("degenerate_empty_blocks_repeated", prefix + unit * 250, cleaned=prefix + unit, code=None, degenerate=True,
         no_code_reason="empty code block", description="empty python blocks repeated 250 times")

    prefix = ANSWER_INTRO + fenced(ADD_SOLUTION) + "\n"
    case("degenerate_newline_flood", prefix + "\n" * 4000, cleaned=prefix + "\n", code=ADD_SOLUTION,
         degenerate=True, description="4000 newlines after the solution: one blank line is kept")

    code_prefix = ADD_SOLUTION[:ADD_SOLUTION.rindex(")") + 1]
    prefix = ANSWER_INTRO + f"{FENCE}python\n" + code_prefix
    case("degenerate_space_flood_in_code", prefix + " " * 6000, cleaned=prefix + " \n" + FENCE,
         code=code_prefix + " ", degenerate=True,
         description="6000 spaces at the end of the last code line of an unclosed block")

    prefix = ANSWER_INTRO + fenced(ADD_SOLUTION) + "\n\n"
    unit = "Therefore, the final code is shown above. "
    case("degenerate_sentence_loop_after_code", prefix + unit * 300, cleaned=prefix + unit, code=ADD_SOLUTION,
         degenerate=True, description="one sentence repeated 300 times after the solution")

    reasoning = REASONING + "\nLet me double-check the index computation. "
    unit = "Let me recheck the indexing. "
    case("degenerate_unclosed_think_sentence_loop", "<think>\n" + reasoning + unit * 400, cleaned="", code=None,
         degenerate=True, no_code_reason="answer is only reasoning", thinking=(reasoning + unit).strip(),
         description="sentence loop inside an unclosed <think>")

    code_prefix = TRIPLE_RELU[:TRIPLE_RELU.index("        x = self.fused")] + "        x = self.conv(x)\n"
    unit = "        x = x + self.bias.view(1, -1, 1, 1)\n"
    prefix = "Fused version:\n\n" + f"{FENCE}python\n" + code_prefix
    case("degenerate_line_loop_in_unclosed_block", prefix + unit * 500, cleaned=prefix + unit + FENCE,
         code=code_prefix + unit, degenerate=True,
         description="one code line repeated 500 times inside the (never closed) solution block")

    head = ADD_SOLUTION[:ADD_SOLUTION.index("    if (idx < size) {")]
    unit = ("    if (idx < size) {\n"
            "        float va = a[idx];\n"
            "        float vb = b[idx];\n"
            "        out[idx] = va + vb;\n"
            "        idx += blockDim.x * gridDim.x;\n"
            "    }\n")
    prefix = ANSWER_INTRO + f"{FENCE}python\n" + head
    case("degenerate_block_loop_in_kernel", prefix + unit * 60, cleaned=prefix + unit + FENCE,
         code=None, no_code_reason="no block defines ModelNew", degenerate=True,
         description="a 6-line block (149 chars) repeated 60 times inside the kernel source, "
                     "before ModelNew was written")

    paragraph = ("Wait, I need to make sure the block size is right. If the tensor has N elements and each block "
                 "has 256 threads, then the number of blocks is (N + 255) / 256. For N = 4096 that gives 16 blocks, "
                 "which is too few to fill the GPU, but the kernel is memory bound anyway, so it does not matter. "
                 "Let me also check the data types: the inputs are float32, so data_ptr<float>() is correct.\n\n")
    reasoning = REASONING + "\n"
    case("degenerate_paragraph_loop_unclosed_think", "<think>\n" + reasoning + paragraph * 30, cleaned="", code=None,
         degenerate=True, no_code_reason="answer is only reasoning", thinking=(reasoning + paragraph).strip(),
         description="a 420-char paragraph repeated 30 times inside an unclosed <think>")

    prefix = ANSWER_INTRO + fenced(ADD_SOLUTION) + "\n\n"
    lines = ["```python", "```", "```py", "``` python", "n", ""]
    # Starts with the same line twice, so the line loop (and its first unit) begins at
    # the flood's first line; then an irregular mix that no exact period explains.
    flood = "```python\n```python\n" + "".join(rng.choice(lines) + "\n" for _ in range(400))
    case("degenerate_irregular_fence_flood", prefix + flood, cleaned=prefix + "```python\n" + FENCE,
         code=ADD_SOLUTION, degenerate=True,
         description="400 random fence-like lines (varying tags, stray 'n', blanks): a line loop, not periodic")

    reasoning = "Okay, the kernel is written. Let me review it once more.\n"
    case("degenerate_newline_flood_unclosed_think", "<think>\n" + reasoning + "\n" * 3000, cleaned="", code=None,
         degenerate=True, no_code_reason="answer is only reasoning", thinking=reasoning.strip(),
         description="newline flood inside an unclosed <think>")

    prefix = "This implementation keeps every intermediate value in shared "
    unit = "memory "
    case("degenerate_word_loop", prefix + unit * 500, cleaned=prefix + unit, code=None,
         degenerate=True, no_code_reason="no code block", description="a single word repeated 500 times")

    prefix = think(REASONING)
    unit = "```python\n"
    case("degenerate_fence_loop_after_closed_think", prefix + unit * 400, cleaned=unit + FENCE, code=None,
         degenerate=True, no_code_reason="empty code block", thinking=REASONING.strip(),
         description="the answer is nothing but '```python' lines")

    loop_reasoning = REASONING + "Let me verify the grid size. " * 60 + "\nOK, it is fine.\n"
    answer = ANSWER_INTRO + fenced(ADD_SOLUTION) + "\n"
    case("reasoning_loop_closed_think_clean_answer", think(loop_reasoning) + answer, cleaned=answer,
         code=ADD_SOLUTION, degenerate=False, thinking=loop_reasoning.strip(), loop_in_reasoning=True,
         description="a loop inside closed reasoning: kept (warning only), the answer is clean")

    section = ("### Why this is faster\n\n"
               "1. **Single launch**: the addition runs in one kernel instead of several PyTorch ops.\n"
               "2. **Coalesced access**: consecutive threads read consecutive elements of `a` and `b`.\n"
               "3. **No extra allocation**: the output is allocated once with `torch::zeros_like`.\n"
               "4. **Bounds check**: threads beyond `size` return without touching memory.\n\n")
    prefix = ANSWER_INTRO + fenced(ADD_SOLUTION) + "\n\n"
    case("degenerate_long_section_loop", prefix + section * 14, cleaned=prefix + section, code=ADD_SOLUTION,
         degenerate=True, description=f"a {len(section)}-char markdown section repeated 14 times")

    prefix = ANSWER_INTRO + fenced(ADD_SOLUTION) + "\n"
    junk = ["", " ", "  ", "\t", "   ", " \t"]
    flood = "".join(rng.choice(junk) + "\n" for _ in range(300))
    first_junk_line = flood[:flood.index("\n") + 1]
    case("degenerate_irregular_whitespace_flood", prefix + flood, cleaned=prefix + first_junk_line,
         code=ADD_SOLUTION, degenerate=True, description="300 lines of random whitespace (not periodic)")

    code_prefix = ADD_SOLUTION[:ADD_SOLUTION.index("class ModelNew")]
    prefix = ANSWER_INTRO + f"{FENCE}python\n" + code_prefix
    unit = "```python\n"
    case("degenerate_fence_loop_inside_open_block", prefix + unit * 300, cleaned=prefix + unit + FENCE, code=None,
         degenerate=True, no_code_reason="no block defines ModelNew",
         description="the model re-opens fences forever inside an unclosed block before writing ModelNew")

    head = TRIPLE_RELU[:TRIPLE_RELU.index("        x = self.fused")]
    unit = "        x = self.fused.bias_relu_cuda(self.conv(x).contiguous(), self.bias)\n"
    prefix = "Fused version:\n\n" + f"{FENCE}python\n" + head
    case("degenerate_op_applied_forever", prefix + unit * 203, cleaned=prefix + unit + FENCE,
         code=head + unit, degenerate=True,
         description="the 'same op three times' line goes on 200 times more: the loop starts at its first "
                     "occurrence, so only that one is kept")


def write_case(spec: dict) -> None:
    directory = HERE / spec["name"]
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir()
    (directory / "raw.md").write_text(spec["raw"], encoding="utf-8")
    (directory / "cleaned.md").write_text(spec["cleaned"], encoding="utf-8")
    if spec["code"] is not None:
        (directory / "code.py").write_text(spec["code"], encoding="utf-8")
    thinking = spec["thinking"]
    if thinking:
        (directory / "thinking.md").write_text(thinking, encoding="utf-8")
    expected = {
        "description": spec["description"],
        "degenerate": spec["degenerate"],
        "truncated": spec["truncated"],
        "code": "code.py" if spec["code"] is not None else None,
        "no_code_reason": spec["no_code_reason"],
        "thinking": "thinking.md" if thinking else thinking,
        "extra_sources": spec["extra_sources"],
        "loop_in_reasoning": spec["loop_in_reasoning"],
    }
    (directory / "expected.json").write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    legit_cases()
    degenerate_cases()
    for spec in CASES:
        write_case(spec)
    print(f"wrote {len(CASES)} cases to {HERE}")


if __name__ == "__main__":
    main()
