"""kturn's Redis transport (orchestrator/broker.py) on the real Redis: one client per channel, the
messages it publishes consumed as kombu's own, the broker's URL still a Redis one, TLS brokers left
to kombu's transport, and a turn enqueued as the message Celery's send_task would put."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from flower.utils.broker import Broker, Redis
from kombu import Connection, Exchange, Queue

from orchestrator.app import app
from orchestrator.broker import Channel, Transport
from tests.cluster import ROOT


def test_the_apps_redis_broker_uses_kturns_transport_and_reads_back_as_redis(redis_url):
    with app.connection_for_write(redis_url) as connection:
        assert isinstance(connection.transport, Transport)
        assert connection.as_uri().startswith("redis://")
        assert isinstance(Broker(connection.as_uri(include_password=True)), Redis)  # Flower's view of it


def test_a_tls_broker_keeps_kombus_transport_and_its_tls_defaults():
    connection = Connection("rediss://redis.example:6380/0")
    assert not isinstance(connection.transport, Transport)
    assert connection.ssl


def test_a_channel_keeps_one_client_and_its_messages_arrive(redis_url):
    queue = Queue("kturn-broker-test", Exchange("kturn-broker-test"), routing_key="kturn-broker-test")
    with app.connection_for_write(redis_url) as connection:
        channel = connection.default_channel
        assert isinstance(channel, Channel)
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
        producer = connection.Producer()
        for n in range(3):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue])
        received = []
        with connection.Consumer(queue, callbacks=[lambda body, message: (received.append(body["n"]), message.ack())]):
            while len(received) < 3:
                connection.drain_events(timeout=5)
        assert received == [0, 1, 2]
        queue(channel).delete()


# Enqueues one turn kturn's way and once more through Celery's send_task, onto a queue of the test's own.
BOTH_WAYS = """
from orchestrator.app import app
from orchestrator.queues import send_many
send_many("kturn.clean", "kturn-publish-test", [7])
app.send_task("kturn.clean", args=[7], queue="kturn-publish-test", routing_key="kturn-publish-test")
"""


def test_enqueue_puts_the_message_send_task_would(redis_url):
    import redis

    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/unused"}
    subprocess.run([sys.executable, "-c", BOTH_WAYS], cwd=ROOT, env=env, check=True, timeout=60)
    client = redis.Redis.from_url(redis_url)
    ours, celerys = [json.loads(m) for m in reversed(client.lrange("kturn-publish-test", 0, -1))]
    client.delete("kturn-publish-test")
    per_message = {"id", "root_id", "correlation_id", "delivery_tag", "reply_to"}
    for field in ("headers", "properties"):
        assert {k: v for k, v in ours[field].items() if k not in per_message} == {k: v for k, v in celerys[field].items() if k not in per_message}
    assert ours["headers"]["id"] == ours["properties"]["correlation_id"]
    assert {k: v for k, v in ours.items() if k not in ("headers", "properties")} == {k: v for k, v in celerys.items() if k not in ("headers", "properties")}
