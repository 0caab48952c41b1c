"""Output comparison, done in the parent on bytes both children stored (the candidate never
holds the expected outputs).

Signatures first (output count, exact shape, dtype and device type), then values, a stored
range at a time: NaN positions must match (a NaN against a number fails, and vice versa),
infinities must match in position and sign, finite values must be allclose with the dtype's
tolerance, and the error as a whole must be small next to the output as a whole (the relative
norm of the difference): an absolute tolerance alone lets all-zeros pass wherever every
expected value is below it (a softmax over a long row, a normalised vector). Integer and
boolean outputs must be equal.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .settings import EvalSettings

if TYPE_CHECKING:  # imported where used, by the first comparison a pool process makes: a worker
    import torch   # that restarts takes tasks seconds sooner, and most answers never get this far

MAX_EXAMPLES = 3


def compare_signatures(expected: list, got: list) -> dict | None:
    """None when the candidate's outputs look like the reference's, else the failed check."""
    if len(expected) != len(got):
        return {"check": "output_count", "expected_outputs": len(expected), "got_outputs": len(got)}
    for index, ((e_shape, e_dtype, e_device), (g_shape, g_dtype, g_device)) in enumerate(zip(expected, got)):
        if list(e_shape) != list(g_shape):
            return {"check": "shape", "output_index": index, "expected_shape": e_shape, "got_shape": g_shape}
        if e_dtype != g_dtype:
            return {"check": "dtype", "output_index": index, "expected_dtype": e_dtype, "got_dtype": g_dtype}
        if e_device != g_device:
            return {"check": "device", "output_index": index, "expected_device": e_device, "got_device": g_device}
    return None


def dtype_of(name: str) -> torch.dtype:
    import torch
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


def as_tensor(data: bytes | bytearray, dtype_name: str) -> torch.Tensor:
    """Raw little-endian bytes as a 1-D tensor (no parsing beyond a reinterpretation)."""
    import torch
    buffer = bytearray(data)
    if not buffer:
        return torch.empty(0, dtype=dtype_of(dtype_name))
    return torch.frombuffer(buffer, dtype=torch.uint8).view(dtype_of(dtype_name))


def compare_values(e: torch.Tensor, g: torch.Tensor, settings: EvalSettings) -> dict | None:
    """Two 1-D tensors of one dtype; None when they agree, else what differs (flat positions)."""
    import torch
    if e.numel() == 0:
        return None
    if not (e.dtype.is_floating_point or e.dtype.is_complex):
        return _compare_exact(e, g)
    atol, rtol = settings.tolerance_for(str(e.dtype))
    norm_tol = settings.norm_tolerance_for(str(e.dtype))
    if e.dtype.is_complex:
        e, g = torch.view_as_real(e).reshape(-1), torch.view_as_real(g).reshape(-1)
    e, g = e.to(torch.float64), g.to(torch.float64)
    return _compare_float(e, g, atol, rtol) or _compare_norm(e, g, norm_tol)


def _compare_exact(e: torch.Tensor, g: torch.Tensor) -> dict | None:
    bad = e != g
    count = int(bad.sum())
    if count == 0:
        return None
    return {"check": "values", "mismatched": count, "total": e.numel(),
            "max_abs_diff": float((e.double() - g.double()).abs().max()), "examples": _examples(bad, e, g)}


def _compare_float(e: torch.Tensor, g: torch.Tensor, atol: float, rtol: float) -> dict | None:
    import torch
    e_nan, g_nan = torch.isnan(e), torch.isnan(g)
    if not torch.equal(e_nan, g_nan):
        bad = e_nan != g_nan
        return {"check": "nan", "mismatched": int(bad.sum()), "total": e.numel(),
                "nan_where_expected_number": int((g_nan & ~e_nan).sum()),
                "number_where_expected_nan": int((e_nan & ~g_nan).sum()), "examples": _examples(bad, e, g)}
    inf_bad = (torch.isinf(e) | torch.isinf(g)) & ~(e == g)
    if bool(inf_bad.any()):
        return {"check": "inf", "mismatched": int(inf_bad.sum()), "total": e.numel(), "examples": _examples(inf_bad, e, g)}
    finite = torch.isfinite(e)
    diff = torch.where(finite, (g - e).abs(), torch.zeros_like(e))
    bad = diff > atol + rtol * e.abs()
    if not bool(bad.any()):
        return None
    rel = diff / e.abs().clamp_min(1e-12)
    return {"check": "values", "mismatched": int(bad.sum()), "total": e.numel(), "atol": atol, "rtol": rtol,
            "max_abs_diff": float(diff.max()), "max_rel_diff": float(rel[finite].max()), "examples": _examples(bad, e, g)}


def _compare_norm(e: torch.Tensor, g: torch.Tensor, tolerance: float) -> dict | None:
    import torch
    finite = torch.isfinite(e)
    expected = float(torch.linalg.vector_norm(e[finite]))
    if expected == 0.0:
        return None  # an all-zero expected output: the elementwise check is all there is
    relative = float(torch.linalg.vector_norm((g - e)[finite])) / expected
    if relative <= tolerance:
        return None
    return {"check": "relative_error", "relative_error": relative, "tolerance": tolerance, "total": e.numel(),
            "examples": []}


def _examples(bad: torch.Tensor, e: torch.Tensor, g: torch.Tensor) -> list[dict]:
    positions = bad.nonzero().reshape(-1)[:MAX_EXAMPLES].tolist()
    return [{"position": p, "expected": _num(e[p]), "got": _num(g[p])} for p in positions]


def _num(value: torch.Tensor):
    v = value.item()
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return str(v)  # keep details JSON-serialisable
    return v


def locate(examples: list[dict], first_element: int, shape: list[int]) -> list[dict]:
    """Turn flat positions within a stored range into indices of the whole output."""
    located = []
    for example in examples:
        flat, index = first_element + example.pop("position"), []
        for size in reversed(shape or []):
            index.append(flat % size if size else 0)
            flat = flat // size if size else 0
        located.append({"index": list(reversed(index)), **example})
    return located


SENTENCES = {
    "output_count": "forward returned {got_outputs} outputs, expected {expected_outputs}",
    "shape": "{out} has shape {got_shape}, expected {expected_shape}",
    "dtype": "{out} has dtype {got_dtype}, expected {expected_dtype}",
    "device": "{out} is on {got_device}, expected {expected_device}",
    "output_type": "{reason}",
    "varying_outputs": "the outputs' shapes or dtypes differ from one call to the next",
}


def describe_failure(failure: dict) -> str:
    """One sentence for the error field; the numbers stay in details."""
    where = f"call {failure['trial']}" if "trial" in failure else "a call"
    out = f"output {failure.get('output_index', 0)}"
    check = failure["check"]
    if check in SENTENCES:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in failure.items()}
        return SENTENCES[check].format(out=out, **values) + f" ({where})"
    if check == "nan":
        parts = []
        if failure["nan_where_expected_number"]:
            parts.append(f"NaN where the reference has a number at {failure['nan_where_expected_number']} positions")
        if failure["number_where_expected_nan"]:
            parts.append(f"a number where the reference has NaN at {failure['number_where_expected_nan']} positions")
        return f"{out} has {' and '.join(parts)} ({where})"
    if check == "relative_error":
        return (f"{out} is off as a whole: the norm of its error is {failure['relative_error']:.3g} of the norm of the "
                f"reference's output (at most {failure['tolerance']:g}; {where})")
    if check == "inf":
        return f"{out} has infinities that do not match the reference at {failure['mismatched']} positions ({where})"
    text = f"{out} differs from the reference at {failure['mismatched']} of {failure['total']} compared positions ({where}"
    if failure.get("max_abs_diff") is not None:
        text += f"; max abs diff {failure['max_abs_diff']:.4g}"
    if failure.get("max_rel_diff") is not None:
        text += f", max rel diff {failure['max_rel_diff']:.4g}, atol {failure['atol']:g}, rtol {failure['rtol']:g}"
    return text + ")"
