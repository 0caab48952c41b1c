"""Response cleaning for kturn rollouts: pure, stdlib only.

clean_response() splits off <think> reasoning, cuts repetition loops at their
start (keeping the first unit), closes a fence the cut left open and extracts
the ModelNew solution. StreamingLoopDetector spots the same loops while the
response streams in. Logs go to the "kturn.cleaning" logger.
"""

from .pipeline import CleanResult, clean_response
from .repetition import LoopDetection, detect_loop
from .settings import CleaningSettings
from .streaming import StreamingLoopDetector

__all__ = [
    "CleanResult",
    "CleaningSettings",
    "LoopDetection",
    "StreamingLoopDetector",
    "clean_response",
    "detect_loop",
]
