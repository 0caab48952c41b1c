"""What forward() returned, turned into what the parent can check: a signature (shape,
dtype, device type of each output), the reasons an output is not a plain dense tensor, the
checksums of its bytes (see wire.py) and, when asked, the bytes themselves."""
from __future__ import annotations

import os


def normalise(out) -> list:
    """forward() may return a tensor or a tuple/list of tensors (numbers become 0-d tensors)."""
    import torch
    items = list(out) if isinstance(out, (tuple, list)) else [out]
    result = []
    for item in items:
        if isinstance(item, (bool, int, float)) and not isinstance(item, torch.Tensor):
            item = torch.tensor(item)
        result.append(item)
    return result


def problem_with(index: int, value, device: str) -> str | None:
    """Why an output is not something whose bytes can be read as they are, or None."""
    import torch
    if type(value) is not torch.Tensor:
        return f"output {index} is a {type(value).__module__}.{type(value).__qualname__}, not a plain torch.Tensor"
    if value.layout is not torch.strided:
        return f"output {index} has layout {value.layout}, not a dense (strided) tensor"
    if value.device.type not in (device, "cpu"):
        return f"output {index} is on the {value.device.type} device, which holds no data the harness can read"
    if value.is_quantized or value.is_nested:
        return f"output {index} is a quantized or nested tensor"
    return None


def flat_bytes(value):
    """The output's logical contents as one contiguous uint8 tensor (conjugate and negative
    views resolved first: their bytes are not their values)."""
    import torch
    return value.resolve_conj().resolve_neg().contiguous().reshape(-1).view(torch.uint8)


def _words(flat):
    """uint8 bytes as int64 words, zero-padded to a whole word."""
    import torch
    import torch.nn.functional as F
    if flat.shape[-1] % 8:
        flat = F.pad(flat, (0, -flat.shape[-1] % 8))
    return flat.view(torch.int64)


def checksums(flat, chunk_bytes: int):
    """Per-chunk checksums of one output's bytes, as an int64 tensor on the output's device
    (integer sums wrap, as the parent's do)."""
    import torch
    nbytes = flat.numel()
    full = nbytes // chunk_bytes
    parts = []
    if full:
        parts.append(flat[:full * chunk_bytes].view(torch.int64).view(full, chunk_bytes // 8).sum(1))
    if nbytes % chunk_bytes or not full:
        parts.append(_words(flat[full * chunk_bytes:]).sum().reshape(1))
    return torch.cat(parts)


def batch_checksums(flat: list[list], chunk_bytes: int):
    """Every output's checksums in call order (call, then output, then chunk), one reduction
    per output position when its outputs fit in one chunk, so the cost does not grow with a
    Python loop over calls."""
    import torch
    per_output = []
    for index in range(len(flat[0])):
        column = [call[index] for call in flat]
        nbytes = column[0].numel()
        if 0 < nbytes <= chunk_bytes and len(column) > 1:
            per_output.append(_words(torch.stack(column)).sum(1).reshape(-1, 1))
        else:
            per_output.append(torch.stack([checksums(f, chunk_bytes) for f in column]))
    return torch.cat(per_output, dim=1).reshape(-1)


def write_range(fd: int, flat, start: int, length: int, offset: int) -> None:
    data = flat[start:start + length].cpu().numpy()
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
