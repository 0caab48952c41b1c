import torch
import torch.nn as nn
import triton
import triton.language as tl

_STASH = {}


def _finish():
    # an ordinary Python function: only the @triton.jit body is read for torch
    _STASH["out"].copy_(torch.relu(_STASH["x"]))


@triton.jit
def relu_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    _finish()


class ModelNew(nn.Module):
    """Policy evasion P4: the Triton kernel's body is 'pure' (no torch name in it), but it calls a
    helper that runs torch.relu -- which only works under the CPU interpreter, where kernel bodies
    run as Python."""

    def __init__(self):
        super().__init__()

    def forward(self, x):
        out = torch.empty_like(x)
        _STASH.update(x=x, out=out)
        relu_kernel[(1,)](x, out, x.numel(), BLOCK=1024)
        return out
