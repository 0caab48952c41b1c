import torch
import torch.nn as nn


class Model(nn.Module):
    """Small matrix multiply with a learned right-hand side (weights seeded identically)."""

    def __init__(self, k, n):
        super(Model, self).__init__()  # KernelBench's spelling: Model must stay defined
        self.weight = nn.Parameter(torch.randn(k, n))

    def forward(self, a):
        return torch.matmul(a, self.weight)


def get_inputs():
    return [torch.randn(32, 48)]


def get_init_inputs():
    return [48, 40]
