"""The pre-flight's check that an evaluate worker is there: Celery's broadcast stood in for by
replies given in turn (no worker needed: what is tested is how the answers are read)."""
from __future__ import annotations

import pytest

from orchestrator import preflight_checks
from orchestrator.app import app
from orchestrator.preflight_checks import WORKER_ASKS, PreflightUnavailable


class Replies:
    """`app.control.inspect` answering `active_queues` with each reply in turn (the last one again)."""

    def __init__(self, *replies: dict):
        self.replies, self.asked = list(replies), 0

    def __call__(self, timeout: float):
        return self

    def active_queues(self) -> dict:
        self.asked += 1
        return self.replies[min(self.asked, len(self.replies)) - 1]


EVALUATE_WORKER = {"evaluate@host": [{"name": "evaluate"}, {"name": "preflight"}]}
CLEAN_WORKER = {"clean@host": [{"name": "clean"}]}


def test_a_worker_whose_reply_missed_the_first_window_is_found_by_the_next_ask(monkeypatch):
    replies = Replies(None, CLEAN_WORKER, EVALUATE_WORKER)
    monkeypatch.setattr(app.control, "inspect", replies)
    preflight_checks._need_evaluate_workers()
    assert replies.asked == 3


def test_no_worker_taking_preflights_is_said_after_every_ask(monkeypatch):
    replies = Replies(CLEAN_WORKER)
    monkeypatch.setattr(app.control, "inspect", replies)
    with pytest.raises(PreflightUnavailable, match="`preflight` queue"):
        preflight_checks._need_evaluate_workers()
    assert replies.asked == WORKER_ASKS
