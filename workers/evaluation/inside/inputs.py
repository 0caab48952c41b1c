"""A batch's inputs handed over in shared memory (the CPU path).

On the CPU, generating inputs costs far more than many kernels do, so it is kept out of the
timed window: the reference child generates the batch's inputs from the seeds (pack), the
parent seals the memfd and copies it into each child's arena (`..arena`), a shared memfd the
child maps and populates when it is handed over (map_arena), so that taking a batch's inputs
costs its window nothing but making views of them (views).
On a GPU the children generate the inputs on the device from the seeds instead, inside the
timed window, where it is cheap.

Every call of a batch has the same template: per argument, a tensor [shape, dtype, offset
within the call] or a plain value. Tensors travel contiguous.
"""
from __future__ import annotations

import mmap
import os

ALIGN = 64


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def template_of(values: list) -> tuple[list, int]:
    import torch
    template, size = [], 0
    for value in values:
        if isinstance(value, torch.Tensor):
            template.append({"tensor": [list(value.shape), str(value.dtype), size]})
            size += _aligned(value.numel() * value.element_size())
        else:
            template.append({"value": value})
    return template, max(size, ALIGN)


def pack(calls: list[list]) -> tuple[int, list, int]:
    """(memfd, template, bytes per call) holding every call's tensors."""
    import torch
    template, call_bytes = template_of(calls[0])
    fd = os.memfd_create("kturn-inputs", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, call_bytes * len(calls))
    for index, values in enumerate(calls):
        if template_of(values)[0] != template:
            os.close(fd)
            raise ValueError("get_inputs() returns differently shaped inputs from one call to the next")
        for value, slot in zip(values, template):
            if "tensor" in slot:
                data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
                _write_all(fd, memoryview(data).cast("B"), index * call_bytes + slot["tensor"][2])
    return fd, template, call_bytes


MADV_POPULATE_WRITE = 23  # Linux 5.14: map every page writable now (a forward() may write its inputs)


def map_arena(fd: int) -> mmap.mmap:
    """The child's view of its arena, populated up front so that no batch pays page faults."""
    arena = mmap.mmap(fd, os.fstat(fd).st_size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    try:
        arena.madvise(MADV_POPULATE_WRITE)
    except OSError:  # an older kernel: touch every page instead
        import torch
        torch.frombuffer(arena, dtype=torch.uint8).zero_()
    return arena


def views(arena: mmap.mmap, template: list, call_bytes: int, count: int, device: str) -> list[list]:
    """Each call's arguments: tensors viewing the arena (what a forward() writes in place, the
    parent overwrites with the next batch), plain values as they are."""
    import torch
    calls = []
    for index in range(count):
        values = []
        for slot in template:
            if "value" in slot:
                values.append(slot["value"])
                continue
            shape, dtype, offset = slot["tensor"]
            dtype = getattr(torch, dtype.removeprefix("torch."))
            numel = 1
            for size in shape:
                numel *= size
            nbytes = numel * dtype.itemsize
            flat = torch.frombuffer(arena, dtype=torch.uint8, count=nbytes, offset=index * call_bytes + offset) \
                if nbytes else torch.empty(0, dtype=torch.uint8)
            values.append(flat.view(dtype).view(shape).to(device))
        calls.append(values)
    return calls


def _write_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
