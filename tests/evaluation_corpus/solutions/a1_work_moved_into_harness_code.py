import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline
from workers.evaluation.inside import outputs as _outputs

# Timing attack T2: as T1, and the ReLU kernel also computes the harness's per-chunk checksums
# in the same pass, so the candidate skips the checksum pass (and the torch.stack copy) the
# reference pays: its window shrinks below the "shared" overhead the parent subtracts.
CPP = r"""
#include <algorithm>
#include <cstring>
torch::Tensor relu_ck(torch::Tensor x, torch::Tensor out, int64_t chunk) {
    const float* __restrict__ in = x.data_ptr<float>();
    float* __restrict__ o = out.data_ptr<float>();
    const int64_t n = x.numel();
    const int64_t per = chunk / 4;
    const int64_t chunks = std::max<int64_t>(1, (n * 4 + chunk - 1) / chunk);
    auto ck = torch::empty({chunks}, torch::kInt64);
    int64_t* c = ck.data_ptr<int64_t>();
    for (int64_t k = 0; k < chunks; ++k) {
        const int64_t s = k * per, e = std::min(n, s + per);
        for (int64_t i = s; i < e; ++i) o[i] = std::max(in[i], 0.f);
        const int64_t words = (e - s) / 2;
        const uint64_t* __restrict__ w = reinterpret_cast<const uint64_t*>(o + s);
        uint64_t acc = 0;
        for (int64_t j = 0; j < words; ++j) acc += w[j];
        if ((e - s) & 1) { uint32_t u; std::memcpy(&u, o + e - 1, 4); acc += u; }
        c[k] = (int64_t)acc;
    }
    return ck;
}
"""
ext = load_inline(name="rt_relu_ck", cpp_sources=CPP, functions=["relu_ck"], extra_cflags=["-O3"])

_pending = []
_original = _outputs.batch_checksums


def _fused(flat, chunk_bytes):
    if len(_pending) != len(flat) or len(flat[0]) != 1:
        _pending.clear()
        return _original(flat, chunk_bytes)
    sums = [ext.relu_ck(x, out, chunk_bytes) for x, out in _pending]
    _pending.clear()
    return torch.cat(sums)


_outputs.batch_checksums = _fused


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        x = x.contiguous()
        out = torch.empty_like(x)
        _pending.append((x, out))
        return out
