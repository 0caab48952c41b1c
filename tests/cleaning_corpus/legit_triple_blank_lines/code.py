import torch
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
