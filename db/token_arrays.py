"""Token ids and logprobs stored compactly: a Postgres array (int4[] / float4[], queryable with
unnest and array functions) or, on SQLite, the packed little-endian 32-bit values in a BLOB."""
from __future__ import annotations

import sys
from array import array
from typing import Any

from sqlalchemy import REAL, Integer, LargeBinary
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import TypeDecorator


class TokenArray(TypeDecorator):
    """A list of int32 ("i") or float32 ("f") values."""

    impl = LargeBinary
    cache_ok = True

    def __init__(self, typecode: str) -> None:
        super().__init__()
        if typecode not in ("i", "f"):
            raise ValueError("TokenArray holds int32 ('i') or float32 ('f') values")
        self.typecode = typecode

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            return dialect.type_descriptor(ARRAY(Integer if self.typecode == "i" else REAL))
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: Any, dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return None if value is None else list(value)
        return pack(value, self.typecode)

    def process_result_value(self, value: Any, dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return unpack(value, self.typecode)


def pack(values, typecode: str) -> bytes:
    packed = array(typecode, values)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def unpack(data: bytes, typecode: str) -> list:
    values = array(typecode)
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()
