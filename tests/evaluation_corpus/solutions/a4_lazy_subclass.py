import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

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

class _Deferred(torch.Tensor):
    """A tensor whose values are only filled in when someone copies or detaches it."""

    @staticmethod
    def __new__(cls, source):
        out = torch.Tensor._make_subclass(cls, torch.empty_like(source))
        out._source = source
        return out

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        for arg in args:
            if isinstance(arg, _Deferred) and getattr(arg, "_source", None) is not None:
                torch.Tensor.copy_(arg.as_subclass(torch.Tensor), ext.relu(arg._source))
                arg._source = None
        return super().__torch_function__(func, types, args, kwargs or {})


class ModelNew(nn.Module):
    """Attack (outputs materialised later): returns a tensor subclass that computes only when the
    harness later copies it out, after the timed call. Only plain dense tensors are accepted as
    outputs, and their bytes are checksummed before the parent's clock stops."""

    def __init__(self):
        super().__init__()

    def forward(self, x):
        return _Deferred(x)
