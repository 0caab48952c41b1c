import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

# Correctness attack C2: every softmax output of KernelBench 23 (torch.rand inputs, a long row)
# is below the absolute tolerance 1e-4, so an answer of all zeros is "correct". The kernel
# writes zeros and never reads its input; it is timed against a real softmax.
CPP = r"""
#include <cstring>
torch::Tensor softmax_rows(torch::Tensor x) {
    auto out = torch::empty_like(x);
    std::memset(out.data_ptr<float>(), 0, out.numel() * sizeof(float));
    return out;
}
"""
ext = load_inline(name="rt_zero_softmax", cpp_sources=CPP, functions=["softmax_rows"], extra_cflags=["-O3"])


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return ext.softmax_rows(x)
