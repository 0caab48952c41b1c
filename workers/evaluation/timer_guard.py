"""Identity snapshot of the harness's own modules inside the candidate child.

Timing runs in the candidate's interpreter, so a solution that reaches a harness frame
(tracebacks, frame walking) can rebind the globals measure() or the runner look up — the
timer above all. The snapshot is taken before the solution is imported; replaced() names
every global (and every function's code, defaults, closure or globals dict) that is no
longer the object bound then, and every global added since. The runner checks it right
before and right after the timing phase; the parent turns a non-empty answer into a flag.
"""
from __future__ import annotations

import types

FUNCTION_PARTS = ("__code__", "__defaults__", "__kwdefaults__", "__globals__", "__closure__")


def _bindings(module) -> dict[str, tuple]:
    """name -> (object, the function's parts or ())."""
    return {name: (value, tuple(getattr(value, p) for p in FUNCTION_PARTS)
                   if isinstance(value, types.FunctionType) else ())
            for name, value in list(vars(module).items())}


class ModuleGuard:
    """What the named harness modules held when the guard was made."""

    def __init__(self, modules: dict[str, types.ModuleType]) -> None:
        self._modules = dict(modules)
        self._bound = {label: _bindings(m) for label, m in modules.items()}

    def replaced(self) -> list[str]:
        changed = []
        for label, module in self._modules.items():
            before, now = self._bound[label], _bindings(module)
            for name in sorted(before.keys() | now.keys()):
                changed += [f"{label}.{what}" for what in _difference(name, before.get(name), now.get(name))]
        return changed[:200]


def _difference(name: str, before: tuple | None, now: tuple | None) -> list[str]:
    if before is None or now is None:
        return [f"{name} ({'added' if before is None else 'deleted'})"]
    if before[0] is not now[0]:
        return [name]
    return [f"{name}.{part}" for part, a, b in zip(FUNCTION_PARTS, before[1], now[1]) if a is not b]

