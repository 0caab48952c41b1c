import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

CPP_SOURCE = r"""
#include <cmath>

torch::Tensor gelu(torch::Tensor x) {
    TORCH_CHECK(x.scalar_type() == torch::kFloat32, "gelu expects float32");
    auto xc = x.contiguous();
    auto out = torch::empty_like(xc);
    const float* in = xc.data_ptr<float>();
    float* o = out.data_ptr<float>();
    for (int64_t i = 0; i < xc.numel(); ++i) o[i] = 0.5f * in[i] * (1.f + std::erf(in[i] * 0.70710678118654752f));
    return out;
}
"""

ext = load_inline(name="kturn_partial_gelu", cpp_sources=CPP_SOURCE, functions=["gelu"], extra_cflags=["-O2"])


class ModelNew(nn.Module):
    """Honest partial replacement: nn.Linear stays PyTorch's, the GELU is a custom C++ kernel."""

    def __init__(self, features_in, features_out):
        super().__init__()
        self.linear = nn.Linear(features_in, features_out)

    def forward(self, x):
        return ext.gelu(self.linear(x))
