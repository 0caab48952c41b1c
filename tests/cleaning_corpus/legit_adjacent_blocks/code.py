import torch
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
