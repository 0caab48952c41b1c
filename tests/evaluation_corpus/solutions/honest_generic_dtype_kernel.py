import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

# Honest, fp32 all the way on this problem: a ReLU kernel that also handles half inputs (a
# common, generic way to write a kernel). The reference is fp32 and so is every call here.
CPP = r"""
#include <algorithm>
template <typename T>
static void relu_loop(const T* in, T* out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = in[i] > T(0) ? in[i] : T(0);
}
torch::Tensor relu(torch::Tensor x) {
    auto xc = x.contiguous();
    auto out = torch::empty_like(xc);
    if (xc.scalar_type() == at::kHalf) {
        relu_loop(xc.data_ptr<at::Half>(), out.data_ptr<at::Half>(), xc.numel());
    } else {
        relu_loop(xc.data_ptr<float>(), out.data_ptr<float>(), xc.numel());
    }
    return out;
}
"""
ext = load_inline(name="rt_generic_relu", cpp_sources=CPP, functions=["relu"], extra_cflags=["-O3"])


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return ext.relu(x)
