"""kturn's Redis transport (orchestrator/broker.py) on the real Redis: one client per channel, the
messages it publishes consumed as kombu's own, the broker's URL still a Redis one, and TLS brokers
left to kombu's transport."""
from __future__ import annotations

from flower.utils.broker import Broker, Redis
from kombu import Connection, Exchange, Queue

from orchestrator.app import app
from orchestrator.broker import Channel, Transport


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
