import torch
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
