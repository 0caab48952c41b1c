import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

# Honest: the kernel is a method of a small C++ class bound with pybind11 (a common way to keep
# state such as a workspace or a configuration on the C++ side).
CPP = r"""
#include <torch/extension.h>
#include <algorithm>
struct Relu {
    torch::Tensor run(torch::Tensor x) {
        auto xc = x.contiguous();
        auto out = torch::empty_like(xc);
        const float* __restrict__ in = xc.data_ptr<float>();
        float* __restrict__ o = out.data_ptr<float>();
        const int64_t n = xc.numel();
        for (int64_t i = 0; i < n; ++i) o[i] = std::max(in[i], 0.f);
        return out;
    }
};
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    pybind11::class_<Relu>(m, "Relu").def(pybind11::init<>()).def("run", &Relu::run);
}
"""
ext = load_inline(name="rt_class_relu", cpp_sources=CPP, extra_cflags=["-O3"])


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        self.kernel = ext.Relu()

    def forward(self, x):
        return self.kernel.run(x)
