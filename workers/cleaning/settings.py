"""Thresholds of the response cleaner.

Every field has a default tuned on the corpus in tests/cleaning_corpus/; all are
plain ints/floats so the settings serialise with dataclasses.asdict and can be
stored next to a rollout for reproducibility.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class CleaningSettings:
    # --- exact repetition (a unit of `period` chars repeated back to back) ---
    # A run is a loop when it repeats at least `min_repeats` times AND covers at
    # least `min_covered_chars`. 16 identical lines (an unrolled loop) must pass,
    # hundreds must not, hence 20.
    min_repeats: int = 20
    # Units this long or longer (multi-line blocks, paragraphs) need fewer
    # repeats: eight identical 100+ char blocks in a row never happen in real code.
    long_unit_chars: int = 100
    min_repeats_long_unit: int = 8
    # Floods of one or two characters (newlines, spaces, "=") count as loops only
    # past this many chars; an 80-char "// ====" banner stays legitimate.
    min_covered_chars: int = 200
    # Longest repeated unit searched for, in chars.
    max_period: int = 512

    # --- approximate line repetition (fence floods with stray variations) ---
    # A line "echoes" when it equals one of the last `line_window` non-junk lines.
    line_window: int = 6
    # A line run is a loop when it has `min_echo_lines` echoing lines drawn from
    # at most `max_distinct_lines` distinct lines (plus tolerated strays).
    min_echo_lines: int = 40
    max_distinct_lines: int = 4
    # One stray (never seen) line is tolerated per `stray_line_gap` echo lines.
    stray_line_gap: int = 4
    # Lines of at most this many non-blank chars ("", "n", "}") are junk: they
    # neither break nor extend a line run.
    junk_line_chars: int = 2
    # This many consecutive junk lines (irregular whitespace floods) is a loop.
    min_junk_lines: int = 40

    # --- severity ---
    # severity = covered share x min(1, repeats / full_severity_repeats)
    full_severity_repeats: int = 100
    # Severity at and above which the cleaner logs "Severe repetition".
    severe_threshold: float = 0.5

    # --- scan granularity (speed vs. shortest detectable loop) ---
    # A probe every `scan_step` chars looks for an earlier copy of the
    # `gram_chars` chars before it; every loop longer than
    # scan_step + gram_chars + period is found. With lower thresholds the step
    # shrinks automatically (probe_step()) so that no loop slips between probes.
    scan_step: int = 128
    gram_chars: int = 16
    max_candidates_per_probe: int = 8

    # --- code checks ---
    # Extracted code longer than this is not syntax-checked (ast.parse cost).
    max_syntax_check_chars: int = 200_000

    def __post_init__(self) -> None:
        positive = (
            "min_repeats", "long_unit_chars", "min_repeats_long_unit", "min_covered_chars",
            "max_period", "line_window", "min_echo_lines", "max_distinct_lines",
            "stray_line_gap", "min_junk_lines", "full_severity_repeats", "scan_step",
            "gram_chars", "max_candidates_per_probe",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"CleaningSettings.{name} must be >= 1, got {getattr(self, name)}")
        if self.min_repeats < 2 or self.min_repeats_long_unit < 2:
            raise ValueError("a loop needs at least 2 repeats")
        if self.junk_line_chars < 0 or self.max_syntax_check_chars < 0:
            raise ValueError("junk_line_chars and max_syntax_check_chars must be >= 0")
        if not 0.0 <= self.severe_threshold <= 1.0:
            raise ValueError("severe_threshold must be within 0..1")
        if self._probe_slack < 1:
            raise ValueError("gram_chars is too long for the thresholds: the shortest loop could not hold it")

    def required_repeats(self, period: int) -> int:
        return self.min_repeats_long_unit if period >= self.long_unit_chars else self.min_repeats

    @property
    def _probe_slack(self) -> int:
        return _probe_slack_of(self)

    def probe_step(self) -> int:
        """Distance between probes: scan_step, lowered if the thresholds need it."""
        return max(1, min(self.scan_step, self._probe_slack))

    def min_loop_chars(self, period: int) -> int:
        """Shortest periodic run with this unit that counts as a loop."""
        return max(self.min_covered_chars, self.required_repeats(period) * period)

    def is_loop(self, period: int, length: int) -> bool:
        """Whether a periodic run of `length` chars with unit `period` is degenerate."""
        return length >= self.min_covered_chars and length // period >= self.required_repeats(period)

    def longest_undecided_run(self) -> int:
        """Length past which every periodic run (period <= max_period) is a loop.

        Bounds how far back the streaming detector must keep text.
        """
        short_units = (min(self.long_unit_chars, self.max_period + 1) - 1) * self.min_repeats
        long_units = self.max_period * self.min_repeats_long_unit
        return max(self.min_covered_chars, short_units, long_units)

    def severity(self, covered: float, repeats: int) -> float:
        return max(0.0, min(1.0, covered * min(1.0, repeats / self.full_severity_repeats)))


@lru_cache(maxsize=64)
def _probe_slack_of(settings: CleaningSettings) -> int:
    """A loop at the threshold must hold a probe's gram and its earlier copy one period back; the
    probes must be closer than what is left over. A scan of every period, so done once per
    thresholds: every task builds its settings anew."""
    return min(settings.min_loop_chars(p) - p for p in range(1, settings.max_period + 1)) - settings.gram_chars
