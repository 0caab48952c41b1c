"""Tensors and values crossing a process boundary: files in a private directory written
with torch.save and read back with torch.load(weights_only=True) (no pickle code execution)."""
from __future__ import annotations

import os

MAX_LOAD_BYTES = 8 << 30


def save_values(path: str, values: list) -> None:
    import torch
    tmp = path + ".part"
    torch.save(list(values), tmp)
    os.replace(tmp, path)


def load_values(path: str, max_bytes: int = MAX_LOAD_BYTES) -> list:
    import torch
    size = os.path.getsize(path)
    if size > max_bytes:
        raise ValueError(f"{os.path.basename(path)} is {size} bytes, over the {max_bytes} limit")
    values = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(values, list):
        raise ValueError(f"{os.path.basename(path)} does not hold a list")
    return values


def tensor_bytes(values) -> int:
    import torch
    return sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor))


def normalise_outputs(out) -> list:
    """forward() may return a tensor or a tuple/list of tensors (numbers become 0-d tensors)."""
    import torch
    items = list(out) if isinstance(out, (tuple, list)) else [out]
    result = []
    for item in items:
        if isinstance(item, torch.Tensor):
            result.append(item)
        elif isinstance(item, (int, float, bool)):
            result.append(torch.tensor(item))
        else:
            raise TypeError(f"forward() must return a tensor or a tuple of tensors, got {type(item).__name__}")
    return result
