"""What the broker still holds: the turn ids in each stage's queue and in Redis's unacked set.

The reconciler uses it to tell a lost message from one that is merely waiting its turn. Only the
Redis transport can be inspected; elsewhere the answer is None and age alone decides.
"""
from __future__ import annotations

import base64
import json
import time

from orchestrator.app import app
from orchestrator.stages import STAGES

# kombu's Redis transport: delivered-but-unacknowledged messages by delivery tag, and when each was delivered.
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"


def queued_turns(unacked_within_s: float) -> set[tuple[str, int]] | None:
    """(task name, turn id) of every message waiting, or delivered within the last `unacked_within_s`
    seconds and not yet acknowledged; None when the broker cannot be inspected.

    An older unacknowledged message is not trusted: a worker killed while holding it leaves it in
    the unacked set for the whole visibility timeout (an hour), while a live worker claims what it
    is delivered within moments."""
    if not app.conf.broker_url.startswith(("redis://", "rediss://")):
        return None
    with app.connection_for_read() as connection:
        client = connection.default_channel.client
        raw = [m for stage in STAGES for m in client.lrange(stage.queue, 0, -1)]
        recent = client.zrangebyscore(UNACKED_INDEX_KEY, time.time() - unacked_within_s, "+inf")
        if recent:
            raw += [json.loads(value)[0] for value in client.hmget(UNACKED_KEY, recent) if value is not None]
    return {entry for entry in (message_turn(m) for m in raw) if entry is not None}


def message_turn(message) -> tuple[str, int] | None:
    """(task name, turn id) of one raw kombu message; None for anything else."""
    try:
        envelope = json.loads(message) if isinstance(message, (str, bytes)) else message
        body = json.loads(base64.b64decode(envelope["body"]))
        return envelope["headers"]["task"], int(body[0][0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None
