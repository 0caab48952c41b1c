"""Result channel between a sandboxed child and the parent.

Length-prefixed JSON over an inherited pipe fd (never stdout, which the candidate
controls). The parent validates every message against a schema before use: wrong
types, unknown keys, non-finite numbers or oversized payloads are protocol errors.
"""
from __future__ import annotations

import json
import math
import os
import struct

HEADER = struct.Struct(">I")
MAX_MESSAGE_BYTES = 1 << 20
MAX_STRING = 64 * 1024
MAX_LIST = 10_000
PHASES = ("compile", "correctness", "timing", "verify")


class ProtocolError(Exception):
    pass


def send(fd: int, message: dict) -> None:
    payload = json.dumps(message, allow_nan=False).encode()
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message too large: {len(payload)} bytes")
    data = HEADER.pack(len(payload)) + payload
    while data:
        written = os.write(fd, data)
        data = data[written:]


class MessageBuffer:
    """Accumulates pipe bytes; yields complete decoded (not yet validated) messages."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[dict]:
        self._buf.extend(chunk)
        messages = []
        while len(self._buf) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buf)
            if length > MAX_MESSAGE_BYTES:
                raise ProtocolError(f"message length {length} exceeds limit")
            if len(self._buf) < HEADER.size + length:
                break
            payload = bytes(self._buf[HEADER.size:HEADER.size + length])
            del self._buf[:HEADER.size + length]
            try:
                message = json.loads(payload)
            except ValueError as exc:
                raise ProtocolError(f"undecodable message: {exc}") from None
            messages.append(message)
        return messages

    @property
    def pending(self) -> int:
        return len(self._buf)


# --- schemas -----------------------------------------------------------------

def _str(v):
    return isinstance(v, str) and len(v) <= MAX_STRING


def _bool(v):
    return isinstance(v, bool)


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool) and -(2**53) < v < 2**53


def _nonneg_int(v):
    return _int(v) and v >= 0


def _opt_int(v):
    return v is None or _int(v)


def _finite(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive_finite(v):
    return _finite(v) and v > 0


def _list_of(check, max_len=MAX_LIST):
    return lambda v: isinstance(v, list) and len(v) <= max_len and all(check(x) for x in v)


def _json_dict(v):
    return isinstance(v, dict) and len(json.dumps(v)) <= MAX_STRING and _all_finite(v)


def _opt_json_dict(v):
    return v is None or _json_dict(v)


def _all_finite(v) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _all_finite(x) for k, x in v.items())
    if isinstance(v, list):
        return all(_all_finite(x) for x in v)
    return v is None or isinstance(v, (str, int, bool))


def _phase(v):
    return v in PHASES


def _error_kind(v):
    return v in ("compile_error", "runtime_error", "invalid_solution")


SCHEMAS: dict[str, dict] = {
    "hello": {"role": lambda v: v in ("reference", "candidate"), "netns": _bool, "pidns": _bool,
              "rlimits": _json_dict, "cgroup": _bool, "uid": _opt_int},
    "phase": {"phase": _phase},
    "build": {"name": _str, "cached": _bool, "ok": _bool, "seconds": _finite,
              "torch_calls": _list_of(_str, 100)},
    "error": {"phase": _str, "kind": _error_kind, "message": _str, "traceback": _str,
              "oom": _bool, "compile": _opt_json_dict},
    "trial": {"index": _nonneg_int, "launches": _nonneg_int, "aliases": _list_of(_nonneg_int, 1000),
              "mutated": _list_of(_nonneg_int, 1000), "n_outputs": _nonneg_int,
              "output_dtypes": _list_of(_str, 1000)},
    "correctness": {"torch_ops": _list_of(_str, 500), "low_precision_casts": _list_of(_str, 100),
                    "patched": _list_of(_str, 500), "new_threads": _nonneg_int,
                    "kernels_defined": _nonneg_int, "launches_total": _nonneg_int},
    "reference_info": {"timing_sets": _nonneg_int, "outputs_fp32": _bool},
    "timing": {"times_ms": _list_of(_positive_finite, 100_000)},
    # candidate only, after the timing phase: launches per timed call and harness rebinding
    "timing_audit": {"calls": _nonneg_int, "idle_calls": _nonneg_int, "replaced": _list_of(_str, 500),
                     "patched": _list_of(_str, 500)},
    # candidate only: the check trial run after timing on inputs it had not seen computed
    "final_trial": {"launches": _nonneg_int, "n_outputs": _nonneg_int},
    "done": {},
    "exit": {"code": _opt_int, "signal": _opt_int},
}


def validate(message) -> dict:
    if not isinstance(message, dict):
        raise ProtocolError("message is not an object")
    kind = message.get("type")
    schema = SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise ProtocolError(f"unknown message type {kind!r}")
    keys = set(message) - {"type"}
    if keys != set(schema):
        raise ProtocolError(f"{kind}: keys {sorted(keys)} != {sorted(schema)}")
    for key, check in schema.items():
        if not check(message[key]):
            raise ProtocolError(f"{kind}: invalid value for {key!r}")
    return message
