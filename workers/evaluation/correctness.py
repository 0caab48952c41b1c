"""Output comparison, done in the parent (the candidate never holds the expected outputs).

Per trial and per output: count, exact shape, exact dtype, NaN positions (matching NaNs
are fine, a NaN against a number fails and vice versa), infinities (same positions and
signs), then allclose on the finite values with the dtype's tolerance.
"""
from __future__ import annotations

import torch

from .settings import EvalSettings

MAX_EXAMPLES = 3


def compare_trial(expected: list, got: list, settings: EvalSettings, trial: int) -> dict | None:
    """None when the trial passes, otherwise a details dict naming the failed check."""
    if len(expected) != len(got):
        return {"check": "output_count", "trial": trial, "expected_outputs": len(expected),
                "got_outputs": len(got)}
    for index, (e, g) in enumerate(zip(expected, got)):
        failure = compare_tensor(e, g, settings)
        if failure is not None:
            return {"trial": trial, "output_index": index, **failure}
    return None


def compare_tensor(e: torch.Tensor, g: torch.Tensor, settings: EvalSettings) -> dict | None:
    if tuple(e.shape) != tuple(g.shape):
        return {"check": "shape", "expected_shape": list(e.shape), "got_shape": list(g.shape)}
    if e.dtype != g.dtype:
        return {"check": "dtype", "expected_dtype": str(e.dtype), "got_dtype": str(g.dtype)}
    if e.numel() == 0:
        return None
    if not (e.dtype.is_floating_point or e.dtype.is_complex):
        return _compare_exact(e, g)
    atol, rtol = settings.tolerance_for(str(e.dtype))
    if e.dtype.is_complex:
        e, g = torch.view_as_real(e), torch.view_as_real(g)
    e, g = e.detach().to(torch.float64), g.detach().to(torch.float64)
    return _compare_float(e, g, atol, rtol)


def _compare_exact(e: torch.Tensor, g: torch.Tensor) -> dict | None:
    bad = e != g
    count = int(bad.sum())
    if count == 0:
        return None
    return {"check": "values", "mismatched": count, "total": e.numel(),
            "max_abs_diff": float((e.double() - g.double()).abs().max()), "examples": _examples(bad, e, g)}


def _compare_float(e: torch.Tensor, g: torch.Tensor, atol: float, rtol: float) -> dict | None:
    e_nan, g_nan = torch.isnan(e), torch.isnan(g)
    if not torch.equal(e_nan, g_nan):
        bad = e_nan != g_nan
        return {"check": "nan", "mismatched": int(bad.sum()), "total": e.numel(),
                "nan_where_expected_number": int((g_nan & ~e_nan).sum()),
                "number_where_expected_nan": int((e_nan & ~g_nan).sum()),
                "examples": _examples(bad, e, g)}
    e_inf, g_inf = torch.isinf(e), torch.isinf(g)
    inf_bad = (e_inf | g_inf) & ~(e == g)
    if bool(inf_bad.any()):
        return {"check": "inf", "mismatched": int(inf_bad.sum()), "total": e.numel(),
                "examples": _examples(inf_bad, e, g)}
    finite = torch.isfinite(e)
    diff = torch.where(finite, (g - e).abs(), torch.zeros_like(e))
    bad = diff > atol + rtol * e.abs()
    if not bool(bad.any()):
        return None
    rel = diff / e.abs().clamp_min(1e-12)
    return {"check": "values", "mismatched": int(bad.sum()), "total": e.numel(), "atol": atol,
            "rtol": rtol, "max_abs_diff": float(diff.max()), "max_rel_diff": float(rel[finite].max()),
            "examples": _examples(bad, e, g)}


def _examples(bad: torch.Tensor, e: torch.Tensor, g: torch.Tensor) -> list[dict]:
    positions = bad.nonzero()[:MAX_EXAMPLES].tolist()
    return [{"index": p, "expected": _num(e[tuple(p)]), "got": _num(g[tuple(p)])} for p in positions]


def _num(value: torch.Tensor):
    v = value.item()
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return str(v)  # keep details JSON-serialisable
    return v


def outputs_match(a: list, b: list, settings: EvalSettings) -> bool:
    """Same outputs within tolerance (NaNs in the same places)."""
    return len(a) == len(b) and all(compare_tensor(x, y, settings) is None for x, y in zip(a, b))


def outputs_identical(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        x.shape == y.shape and x.dtype == y.dtype and torch.equal(
            x.contiguous().reshape(-1).view(torch.uint8) if x.dtype.is_floating_point else x,
            y.contiguous().reshape(-1).view(torch.uint8) if y.dtype.is_floating_point else y)
        for x, y in zip(a, b))


def describe_failure(failure: dict) -> str:
    """One sentence for the error field; the numbers stay in details."""
    where = f"trial {failure['trial']}"
    out = f"output {failure.get('output_index', 0)}"
    check = failure["check"]
    if check == "output_count":
        return f"forward returned {failure['got_outputs']} outputs, expected {failure['expected_outputs']} ({where})"
    if check == "shape":
        return f"{out} has shape {tuple(failure['got_shape'])}, expected {tuple(failure['expected_shape'])} ({where})"
    if check == "dtype":
        return f"{out} has dtype {failure['got_dtype']}, expected {failure['expected_dtype']} ({where})"
    if check == "nan":
        parts = []
        if failure["nan_where_expected_number"]:
            parts.append(f"NaN where the reference has a number at {failure['nan_where_expected_number']} positions")
        if failure["number_where_expected_nan"]:
            parts.append(f"a number where the reference has NaN at {failure['number_where_expected_nan']} positions")
        return f"{out} has {' and '.join(parts)} ({where})"
    if check == "inf":
        return f"{out} has infinities that do not match the reference at {failure['mismatched']} positions ({where})"
    text = f"{out} differs from the reference at {failure['mismatched']} of {failure['total']} positions ({where}"
    if failure.get("max_abs_diff") is not None:
        text += f"; max abs diff {failure['max_abs_diff']:.4g}"
    if failure.get("max_rel_diff") is not None:
        text += f", max rel diff {failure['max_rel_diff']:.4g}, atol {failure['atol']:g}, rtol {failure['rtol']:g}"
    return text + ")"
