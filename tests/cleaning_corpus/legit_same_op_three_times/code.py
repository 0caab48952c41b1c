import torch
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
