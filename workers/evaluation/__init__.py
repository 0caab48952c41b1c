"""Sandboxed, hack-resistant evaluation of generated kernels (torch + stdlib only).

    from workers.evaluation import EvalSettings, EvalResult, Timing, evaluate, \
        device_fingerprint, fingerprint_key

Layout of the trust boundary: the modules here and in `sandbox/` run in the parent and
decide the verdict; `inside/` runs in the sandboxed children, beside untrusted code, and
only executes and reports. Exports are resolved lazily so that a child imports only what it
needs.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "EvalSettings": "settings",
    "EvalResult": "result",
    "Timing": "result",
    "NOT_THE_CANDIDATES_FAULT": "result",
    "evaluate": "harness",
    "device_fingerprint": "fingerprint",
    "fingerprint_key": "fingerprint",
    "HARNESS_VERSION": "fingerprint",
    "DEFAULT_STRICT_FLAGS": "flags",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
