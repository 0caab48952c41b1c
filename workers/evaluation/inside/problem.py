"""The reference program's functions, as KernelBench defines them: `get_inputs()`,
`get_init_inputs()` and `Model`. Both children generate inputs from the same seeds with
`get_inputs()`, inside the batch the parent times; only the reference child keeps `Model`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Problem:
    get_inputs: Callable[[], Any]
    get_init_inputs: Callable[[], Any]
    model_class: type | None


def load(path: str, keep_model: bool) -> Problem:
    with open(path) as f:
        source = f.read()
    namespace: dict = {"__name__": "kturn_problem", "__file__": path}
    exec(compile(source, path, "exec"), namespace)
    missing = [n for n in ("get_inputs", "get_init_inputs", "Model") if n not in namespace]
    if missing:
        raise ValueError(f"the reference program does not define {', '.join(missing)}")
    if not keep_model:  # the candidate's process gets the input generators only
        del namespace["Model"]
    return Problem(namespace["get_inputs"], namespace["get_init_inputs"], namespace.get("Model"))


def generate(problem: Problem, seed: int, device: str) -> list:
    """One call's arguments: get_inputs() under `seed`, created on `device`."""
    import torch
    torch.manual_seed(seed)
    with torch.device(device):
        values = list(problem.get_inputs())
    return [v.to(device) if isinstance(v, torch.Tensor) else v for v in values]


def init_inputs(problem: Problem, seed: int) -> list:
    import torch
    torch.manual_seed(seed)
    return list(problem.get_init_inputs())
