import torch
import torch.nn as nn
import triton
import triton.language as tl

_INPUT = {}


@triton.jit
def relu_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    # Under the CPU interpreter this body is plain Python: PyTorch does the work.
    torch.relu(_INPUT["x"], out=_INPUT["out"])


class ModelNew(nn.Module):
    """Attack (an interpreted Triton kernel that calls torch): the kernel's body hands the work
    to torch.relu, which only runs because the CPU interpreter executes kernels as Python. A
    Triton kernel's body may use Triton's language only."""

    def __init__(self):
        super().__init__()

    def forward(self, x):
        out = torch.empty_like(x)
        _INPUT.update(x=x, out=out)
        relu_kernel[(1,)](x, out, x.numel(), BLOCK=1024)
        return out
