import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def gelu_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    x = tl.load(x_ptr + offsets, mask=mask)
    y = 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
    tl.store(out_ptr + offsets, y, mask=mask)


class ModelNew(nn.Module):
    """Honest partial replacement: nn.Linear left to PyTorch, the GELU in a Triton kernel (the
    prompt allows replacing some operators and leaving the others)."""

    def __init__(self, features_in, features_out):
        super().__init__()
        self.linear = nn.Linear(features_in, features_out)

    def forward(self, x):
        h = self.linear(x).contiguous()
        out = torch.empty_like(h)
        n = h.numel()
        gelu_kernel[(triton.cdiv(n, 1024),)](h, out, n, BLOCK=1024)
        return out
