import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

# The "kernel" calls the CPU matmul directly (at::cpu::mm), past the dispatcher: a dispatch
# recorder sees no ATen op, yet ATen does all the work.
CPP_SOURCE = r"""
#include <ATen/CPUFunctions.h>

torch::Tensor fast_mm(torch::Tensor a, torch::Tensor b) {
    return at::cpu::mm(a.contiguous(), b.contiguous());
}
"""

ext = load_inline(name="kturn_attack_aten_mm", cpp_sources=CPP_SOURCE, functions=["fast_mm"], extra_cflags=["-O2"])


class ModelNew(nn.Module):
    """Attack (custom kernel checked only at the dispatcher): an extension that only wraps
    at::cpu::mm. The parent reads the shared object it built: it imports ATen's matmul and
    computes nothing itself, so no custom kernel does any of the work."""

    def __init__(self, k, n):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(k, n))

    def forward(self, a):
        return ext.fast_mm(a, self.weight)
