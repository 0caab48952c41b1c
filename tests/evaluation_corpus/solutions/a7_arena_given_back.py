import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline
import ctypes
import mmap

# Shared by most corpus cases: identical sources hash identically, so it is compiled once.
CPP_SOURCE = r"""
torch::Tensor relu(torch::Tensor x) {
    TORCH_CHECK(x.scalar_type() == torch::kFloat32, "relu expects float32");
    auto xc = x.contiguous();
    auto out = torch::empty_like(xc);
    const float* in = xc.data_ptr<float>();
    float* o = out.data_ptr<float>();
    const int64_t n = xc.numel();
    for (int64_t i = 0; i < n; ++i) o[i] = in[i] > 0.f ? in[i] : 0.f;
    return out;
}

torch::Tensor leaky(torch::Tensor x, double slope) {
    auto xc = x.contiguous();
    auto out = torch::empty_like(xc);
    const float* in = xc.data_ptr<float>();
    float* o = out.data_ptr<float>();
    const float s = static_cast<float>(slope);
    for (int64_t i = 0; i < xc.numel(); ++i) o[i] = in[i] > 0.f ? in[i] : s * in[i];
    return out;
}

torch::Tensor add(torch::Tensor a, torch::Tensor b) {
    TORCH_CHECK(a.sizes() == b.sizes(), "add expects equal shapes");
    auto ac = a.contiguous();
    auto bc = b.contiguous();
    auto out = torch::empty_like(ac);
    const float* pa = ac.data_ptr<float>();
    const float* pb = bc.data_ptr<float>();
    float* o = out.data_ptr<float>();
    for (int64_t i = 0; i < ac.numel(); ++i) o[i] = pa[i] + pb[i];
    return out;
}

torch::Tensor matmul(torch::Tensor a, torch::Tensor b) {
    TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0), "matmul shapes");
    auto ac = a.contiguous();
    auto bc = b.contiguous();
    const int64_t m = ac.size(0), k = ac.size(1), n = bc.size(1);
    auto out = torch::empty({m, n}, ac.options());
    const float* pa = ac.data_ptr<float>();
    const float* pb = bc.data_ptr<float>();
    float* o = out.data_ptr<float>();
    for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
            float acc = 0.f;
            for (int64_t p = 0; p < k; ++p) acc += pa[i * k + p] * pb[p * n + j];
            o[i * n + j] = acc;
        }
    return out;
}
"""

ext = load_inline(
    name="kturn_corpus_ops",
    cpp_sources=CPP_SOURCE,
    functions=["relu", "leaky", "add", "matmul"],
    extra_cflags=["-O2"],
)

MADV_REMOVE = 9
_libc = ctypes.CDLL(None, use_errno=True)


class ModelNew(nn.Module):
    """Attack (the parent trusting what the candidate does to shared memory): after each call it
    gives back the pages its input arrived in (MADV_REMOVE on the shared memory), so that the
    parent's next copy of inputs faults them in again, charged to the worker's memory rather
    than to its own cap. The parent looks for such holes before every copy: the evaluation
    stops there, the protocol broken."""

    def forward(self, x):
        out = ext.relu(x)
        start = x.data_ptr() // mmap.PAGESIZE * mmap.PAGESIZE
        end = x.data_ptr() + x.numel() * x.element_size()
        _libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_REMOVE)
        return out
