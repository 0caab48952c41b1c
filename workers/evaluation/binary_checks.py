"""What a built extension calls, read from the shared object the parent built: the ATen
compute functions among its undefined dynamic symbols (`at::cpu::mm`, `at::_ops::relu::call`,
`at::Tensor::matmul`, ...). It sees what the dispatcher never does: a call to `at::cpu::mm`
goes straight to the CPU kernel, past any dispatch recorder. Parsed in the parent with
pyelftools (pure Python) under a size limit; a file it cannot parse counts as calling
nothing it can name (the build is still the candidate's own)."""
from __future__ import annotations

import os
import re

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

MAX_BYTES = 512 << 20
MAX_SYMBOLS = 200_000
NAMESPACES = ("at", "torch", "c10")
COMPUTE_OPS = frozenset({
    "matmul", "mm", "bmm", "addmm", "addmv", "baddbmm", "addbmm", "mv", "dot", "vdot", "einsum", "linear",
    "gelu", "silu", "sigmoid", "tanh", "softmax", "log_softmax", "_softmax", "_log_softmax", "layer_norm",
    "native_layer_norm", "batch_norm", "native_batch_norm", "group_norm", "native_group_norm",
    "instance_norm", "rms_norm", "sum", "mean", "amax", "amin", "prod", "cumsum", "cumprod", "exp",
    "log", "sqrt", "rsqrt", "pow", "add", "sub", "mul", "div", "where", "maximum", "minimum", "abs",
    "neg", "scaled_dot_product_attention", "dropout", "cross_entropy", "nll_loss", "mse_loss", "norm",
    "var", "std", "argmax", "argmin", "sort", "topk", "gather", "index_select", "matrix_power",
    "tensordot", "outer", "addcmul", "addcdiv", "lerp", "hardtanh", "leaky_relu", "elu", "selu",
    "softplus", "mish", "erf", "max", "min", "exp2", "expm1", "log1p", "sin", "cos", "tan", "reciprocal",
    "hardsigmoid", "hardswish", "logsumexp", "cosine_similarity", "pairwise_distance", "cdist",
    "kl_div", "smooth_l1_loss", "huber_loss", "binary_cross_entropy", "triplet_margin_loss",
})
COMPUTE_PREFIXES = ("conv", "relu", "max_pool", "avg_pool", "adaptive_", "clamp", "scatter", "_convolution",
                    "cudnn_", "mkldnn_", "_scaled_dot_product", "upsample", "grid_sampler", "embedding_bag")
NESTED = re.compile(r"_ZN[KVRO]*((?:\d+[A-Za-z_][A-Za-z0-9_]*)+)")
SOURCE_NAME = re.compile(r"(\d+)")


# Calling an operator by its schema name through the dispatcher (findSchema, then call): ATen does
# the work as surely as through an imported at:: function, under no compute op's name.
DISPATCH_BY_NAME = ("findSchema", "findSchemaOrThrow", "findOp", "callBoxed")


def is_compute_op(name: str) -> bool:
    base = name[:-4] if name.endswith("_out") else name
    base = base.rstrip("_")
    return base in COMPUTE_OPS or base.startswith(COMPUTE_PREFIXES)


def nested_name(symbol: str) -> list[str]:
    """The leading <source-name>s of an Itanium-mangled nested name: `_ZN2at3cpu2mmE...` ->
    [at, cpu, mm]; [] for anything else."""
    match = NESTED.match(symbol)
    if not match:
        return []
    text, parts, i = match.group(1), [], 0
    while i < len(text):
        digits = SOURCE_NAME.match(text, i)
        if not digits:
            break
        length, start = int(digits.group(1)), digits.end()
        parts.append(text[start:start + length])
        i = start + length
    return parts


def _dynamic_symbols(elf: ELFFile):
    """The symbols the dynamic loader sees: from the PT_DYNAMIC segment (what ld.so reads, there
    even when the section headers were stripped), else from the .dynsym section."""
    for segment in elf.iter_segments():
        if segment["p_type"] == "PT_DYNAMIC":
            return segment.iter_symbols()
    section = elf.get_section_by_name(".dynsym")
    return section.iter_symbols() if section else ()


def aten_compute_calls(path: str) -> list[str]:
    """`at::...` compute functions the shared object imports, sorted and deduplicated."""
    if os.path.getsize(path) > MAX_BYTES:
        return []
    found: set[str] = set()
    try:
        with open(path, "rb") as f:
            for index, symbol in enumerate(_dynamic_symbols(ELFFile(f))):
                if index >= MAX_SYMBOLS:
                    break
                if symbol["st_shndx"] != "SHN_UNDEF":
                    continue
                parts = nested_name(symbol.name)
                if parts and parts[0] in NAMESPACES and any(is_compute_op(p) or p in DISPATCH_BY_NAME
                                                            for p in parts[1:]):
                    found.add("::".join(parts))
    except (ELFError, OSError, ValueError, KeyError, AttributeError):
        return []
    return sorted(found)
