import torch
import torch.nn as nn


class Model(nn.Module):
    """KernelBench level1/23_Softmax, with batch 8 x dim 16384 instead of 4096 x 393216
    (same input distribution torch.rand; the real sizes make the outputs 40x smaller still)."""

    def __init__(self):
        super(Model, self).__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=1)


batch_size = 8
dim = 16384


def get_inputs():
    x = torch.rand(batch_size, dim)
    return [x]


def get_init_inputs():
    return []
