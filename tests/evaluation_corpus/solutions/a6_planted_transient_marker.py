import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

# Escape hatch E1: a compile error whose diagnostic quotes a source line containing one of the
# builds.py TRANSIENT_MARKERS. The parent then treats the failed build as "the compiler was
# stopped", raises a harness error, and the pipeline retries the turn (3 claims) and finally
# fails it unscored: a wrong answer never gets its reward of 0.
CPP = r"""
torch::Tensor relu(torch::Tensor x) {
    return x.this_method_does_not_exist(); // No space left
}
"""
ext = load_inline(name="rt_transient", cpp_sources=CPP, functions=["relu"])


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return ext.relu(x)
