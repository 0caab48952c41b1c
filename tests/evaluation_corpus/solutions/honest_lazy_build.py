import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

# Honest answer, built lazily on the first call (a common pattern: the extension is compiled
# when first needed, e.g. once the dtype is known).
CPP = r"""
#include <algorithm>
torch::Tensor relu(torch::Tensor x) {
    auto xc = x.contiguous();
    auto out = torch::empty_like(xc);
    const float* __restrict__ in = xc.data_ptr<float>();
    float* __restrict__ o = out.data_ptr<float>();
    const int64_t n = xc.numel();
    for (int64_t i = 0; i < n; ++i) o[i] = std::max(in[i], 0.f);
    return out;
}
"""
_ext = None


def _get():
    global _ext
    if _ext is None:
        _ext = load_inline(name="rt_fast_relu_lazy", cpp_sources=CPP, functions=["relu"], extra_cflags=["-O3"])
    return _ext


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return _get().relu(x)
