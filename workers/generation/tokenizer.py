"""The prompt's tokenizer, for `input_ids` mode: the worker sends token ids it made itself, so the
prompt ids stored for training are exactly those the model saw."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Protocol


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...


class _HFTokenizer:
    def __init__(self, name_or_path: str) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(name_or_path)
        if path.is_dir():
            path = path / "tokenizer.json"
        # A local tokenizer.json, else a Hugging Face hub name (downloaded once, then cached).
        self._tokenizer = HFTokenizer.from_file(str(path)) if path.is_file() else HFTokenizer.from_pretrained(name_or_path)

    def encode(self, text: str) -> list[int]:
        # The rendered ChatML already holds the special tokens as text; add none of our own.
        return self._tokenizer.encode(text, add_special_tokens=False).ids


@lru_cache(maxsize=4)
def load_tokenizer(name_or_path: str) -> Tokenizer:
    """ValueError when it cannot be loaded (a typo, no network for a hub name)."""
    try:
        return _HFTokenizer(name_or_path)
    except Exception as error:  # the tokenizers library raises its own exception types
        raise ValueError(f"cannot load tokenizer {name_or_path!r}: {error}") from error
