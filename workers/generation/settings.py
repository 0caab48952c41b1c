"""How a run generates: streaming and loop abort, token capture, the prompt's tokenizer.

Stored with the run (`runs.config.generation`) through `dataclasses.asdict` / `from_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workers.cleaning import CleaningSettings
from workers.generation.request import from_dict

# The loop abort's thresholds: the cleaner's, except that a long unit (100+ characters: a paragraph,
# a code block) counts as a loop after 4 repeats instead of 8. With 8, a 380-character paragraph
# loop decodes ~760 tokens before it is certain; with 4, ~380, within the 512-token goal. No
# legitimate answer of the cleaning corpus repeats a 100+ character block 4 times in a row. The
# cleaner re-reads an aborted answer with these same thresholds, so it cuts the loop it was aborted for.
LOOP_ABORT_SETTINGS = CleaningSettings(min_repeats_long_unit=4)


@dataclass(frozen=True)
class GenerationSettings:
    # Thresholds of the streaming loop detector that aborts a looping answer; None: never abort.
    loop_abort: CleaningSettings | None = field(default_factory=lambda: LOOP_ABORT_SETTINGS)
    # Output tokens per streamed chunk (SGLang's `stream_interval` sampling parameter): the loop is
    # seen at most this many tokens late, and the worker parses this many times fewer chunks.
    stream_interval: int = 8
    # Request and store the output token ids and their logprobs (and the prompt ids in input_ids mode).
    record_tokens: bool = False
    # A Hugging Face tokenizer (hub name, directory or tokenizer.json): the worker tokenizes the
    # rendered prompt itself and sends `input_ids`, so the prompt ids stored are exactly those sent.
    tokenizer: str | None = None
    # After an abort, how long to wait for the server's last chunk (the decoded tokens and their
    # logprobs) before closing the stream.
    abort_grace_s: float = 5.0
    # A model server that cannot be reached (refused or dropped connections, connect timeouts, 5xx:
    # a restart, an outage) is waited for this long before the turn fails: the turn is held in its
    # worker (its lease renewed), so a worker whose threads all wait takes no more messages and
    # the queue pauses instead of burning. While held, the server is tried again at least every
    # outage_poll_s. 0: only the pool's few quick retries.
    outage_hold_s: float = 1800.0
    outage_poll_s: float = 15.0

    def __post_init__(self) -> None:
        if isinstance(self.loop_abort, dict):
            object.__setattr__(self, "loop_abort", CleaningSettings(**self.loop_abort))
        if isinstance(self.stream_interval, bool) or not isinstance(self.stream_interval, int) or self.stream_interval < 1:
            raise ValueError(f"GenerationSettings.stream_interval must be an integer >= 1, got {self.stream_interval!r}")
        if not (self.outage_hold_s >= 0 and self.outage_poll_s > 0):
            raise ValueError(f"GenerationSettings.outage_hold_s must be >= 0 and outage_poll_s > 0, got {self.outage_hold_s!r}, {self.outage_poll_s!r}")
        if not self.abort_grace_s >= 0:
            raise ValueError(f"GenerationSettings.abort_grace_s must be >= 0, got {self.abort_grace_s!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenerationSettings:
        return from_dict(cls, d)
