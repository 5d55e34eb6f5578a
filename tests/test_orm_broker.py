"""The ORM broker the cluster uses when there is no Redis: a message is taken
by deleting it, oldest first, exactly once however many clusters ask."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import OrmQ

from tasks import queue

from .backends import uses_redis

pytestmark = [
    pytest.mark.skipif(uses_redis(), reason="the ORM broker is the transport without Redis"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def broker(monkeypatch):
    monkeypatch.setattr("django_q.conf.Conf.POLL", 0.01)  # an empty take waits this long
    broker = get_broker()
    broker.purge_queue()
    yield broker
    broker.purge_queue()


def test_the_cluster_and_the_web_tier_use_the_project_broker(broker):
    assert isinstance(broker, queue.OrmBroker)
    assert isinstance(queue._broker(), queue.OrmBroker)


def test_taking_returns_the_oldest_messages_and_removes_them(broker, monkeypatch):
    monkeypatch.setattr("django_q.conf.Conf.BULK", 2)
    for n in range(3):
        broker.enqueue(f"message-{n}")

    first = broker.dequeue()
    second = broker.dequeue()

    assert [payload for _, payload in first] == ["message-0", "message-1"]
    assert [payload for _, payload in second] == ["message-2"]
    assert broker.dequeue() is None
    assert OrmQ.objects.count() == 0
    assert broker.queue_size() == 0


def test_a_message_not_yet_due_is_left_alone(broker):
    broker.enqueue("due")
    OrmQ.objects.create(
        key=broker.list_key, payload="later", lock=timezone.now() + timedelta(hours=1)
    )

    assert [payload for _, payload in broker.dequeue()] == ["due"]
    assert broker.dequeue() is None
    assert list(OrmQ.objects.values_list("payload", flat=True)) == ["later"]


def test_acknowledging_a_taken_message_touches_no_other(broker):
    broker.enqueue("taken")
    broker.enqueue("waiting")
    [(ack_id, _)] = broker.dequeue()

    broker.acknowledge(ack_id)
    broker.fail(ack_id)

    assert list(OrmQ.objects.values_list("payload", flat=True)) == ["waiting"]


@pytest.mark.skipif(
    not connection.features.can_return_columns_from_insert,
    reason="this SQLite predates RETURNING; the broker falls back to django-q2's own",
)
def test_clusters_taking_at_once_get_each_message_exactly_once(broker, monkeypatch):
    monkeypatch.setattr("django_q.conf.Conf.BULK", 3)
    sent = [f"message-{n}" for n in range(200)]
    for payload in sent:
        broker.enqueue(payload)
    start = threading.Barrier(4)

    def take_all() -> list[str]:
        start.wait()
        taken = []
        try:
            while batch := broker.dequeue():
                taken += [payload for _, payload in batch]
                time.sleep(0.002)  # let the others in between batches
        finally:
            connection.close()
        return taken

    with ThreadPoolExecutor(4) as pool:
        shares = list(pool.map(lambda _: take_all(), range(4)))

    assert sorted(payload for share in shares for payload in share) == sorted(sent)
    assert sum(1 for share in shares if share) > 1  # they did take turns
