"""Parent-side checks of the candidate's timing phase: what the child measured is only
believed if the harness code it ran was intact, the timed calls did the work the
correctness calls did, and the reported times fit inside the parent's own clock."""
from __future__ import annotations

import re

from . import flags as F

TIMER_PATCH = re.compile(r"^time\.|^torch\.cuda\.(Event|synchronize|Stream|current_stream|event)")
# the parent's phase clock is rounded to 1 ms and starts after the child sent the phase
# message; the child's own clock cannot report more than that window honestly
WALL_SLACK_S = 0.002
WALL_SLACK_RATIO = 1.02


def patch_flag(name: str) -> str:
    """The flag for a replaced torch/time attribute found by the child's snapshot."""
    return F.TIMER_TAMPERING if TIMER_PATCH.match(name) else F.MONKEYPATCH_TORCH


def audit_flags(cand, already_patched: list[str]) -> list[tuple[str, str]]:
    """(flag, reason) pairs for one candidate run; empty for an honest one."""
    found: list[tuple[str, str]] = []
    audit = cand.timing_audit
    if cand.times_ms is not None and audit is None:
        found.append((F.HARNESS_TAMPERING, "timing results arrived without the harness's timing audit"))
    if audit is not None:
        found += _rebinding(audit, already_patched)
        found += _idle_calls(audit, cand.summary)
    found += _implausible_times(cand.times_ms, cand.timing_wall_s)
    if cand.final_trial is not None and cand.final_trial["launches"] == 0 and cand.summary \
            and cand.summary["kernels_defined"]:
        found.append((F.KERNEL_NEVER_LAUNCHED, "the check call after timing launched no custom kernel"))
    for kind in cand.repeated_messages:
        found.append((F.HARNESS_TAMPERING, f"the result channel carried more than one {kind!r} message"))
    return found


def _rebinding(audit: dict, already_patched: list[str]) -> list[tuple[str, str]]:
    found = []
    for name in audit["replaced"]:
        flag = F.TIMER_TAMPERING if name.startswith("timing.") else F.HARNESS_TAMPERING
        found.append((flag, f"harness global {name} changed while the solution ran"))
    for name in sorted(set(audit["patched"]) - set(already_patched)):
        found.append((patch_flag(name), f"{name} was replaced during the timing phase"))
    return found


def _idle_calls(audit: dict, summary: dict | None) -> list[tuple[str, str]]:
    # A solution that stops launching its kernels once correctness is over is returning
    # something it computed earlier (or nothing at all) while it is being timed.
    if not audit["idle_calls"] or not summary or not summary["kernels_defined"]:
        return []
    return [(F.KERNEL_NEVER_LAUNCHED, f"{audit['idle_calls']} of {audit['calls']} timing-phase calls "
                                      "launched no custom kernel")]


def _implausible_times(times_ms: list | None, wall_s: float | None) -> list[tuple[str, str]]:
    """Honest trial times add up to less than the timing phase lasted on the parent's clock.
    (No lower bound: set-up, warm-ups and per-trial overhead can dwarf tiny kernels.)"""
    if not times_ms or wall_s is None:
        return []
    reported_s = sum(times_ms) / 1e3
    if reported_s <= wall_s * WALL_SLACK_RATIO + WALL_SLACK_S:
        return []
    return [(F.TIMER_TAMPERING, f"reported trial times add up to {reported_s:.3f} s but the timing "
                                f"phase lasted {wall_s:.3f} s")]
