import torch
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
