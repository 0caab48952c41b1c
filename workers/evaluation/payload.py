"""Tensors and values crossing a process boundary: files in a private directory written
with torch.save and read back with torch.load(weights_only=True) (no pickle code execution)."""
from __future__ import annotations

import os
import stat

MAX_LOAD_BYTES = 8 << 30


def save_values(path: str, values: list) -> None:
    import torch
    tmp = path + ".part"
    torch.save(list(values), tmp)
    os.replace(tmp, path)


def _open_plain_file(path: str):
    """The parent (maybe root) reads files from directories a candidate owns: no symlink to
    a root-only file, no FIFO that would block it, no hard link to someone else's file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise ValueError(f"{os.path.basename(path)} is not a plain file")
    return os.fdopen(fd, "rb"), st.st_size


def load_values(path: str, max_bytes: int = MAX_LOAD_BYTES) -> list:
    import torch
    f, size = _open_plain_file(path)
    with f:
        if size > max_bytes:
            raise ValueError(f"{os.path.basename(path)} is {size} bytes, over the {max_bytes} limit")
        values = torch.load(f, map_location="cpu", weights_only=True)
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
