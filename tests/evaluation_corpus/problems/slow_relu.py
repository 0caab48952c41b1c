import torch
import torch.nn as nn


class Model(nn.Module):
    """ReLU computed wastefully (idempotent, so the result is relu(x)): a reference that
    any honest kernel beats by a wide margin, used to exercise the speedup recheck."""

    def __init__(self):
        super().__init__()

    def forward(self, x):
        y = x
        for _ in range(300):
            y = torch.relu(y)
        return y


def get_inputs():
    return [torch.randn(64, 64)]


def get_init_inputs():
    return []
