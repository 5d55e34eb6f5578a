"""The one adapter to django-q2. Nothing else in the project imports django_q.

django-q2 only carries `(task_id, attempt)` to a worker; the worker re-reads
the row. One broker object is reused for every enqueue (building a broker per
call costs a new connection each time).
"""

from __future__ import annotations

import logging
import signal
from functools import lru_cache
from time import sleep
from typing import NamedTuple

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.exceptions import TimeoutException
from django_q.models import OrmQ
from django_q.signals import post_spawn
from django_q.tasks import async_task

logger = logging.getLogger(__name__)

WORKER_ENTRY_POINT = "tasks.worker.run_task"


class OrmBroker(ORM):
    """django-q2's ORM broker, with one plain statement per message each way.

    Sending writes the row `ORM.enqueue` creates (key, signed payload, lock =
    now, so it is due at once) with one INSERT; going through the model layer
    cost more than the database's own work for it.

    Taking deletes the messages it returns, oldest first, in one DELETE ...
    RETURNING. django-q2's own broker locks each message it hands out (an
    UPDATE) and deletes it once the result is in (the monitor's
    acknowledge): two writes per message, where one does, and under SQLite's
    single write lock those writes set the pace of a whole cluster. Its lock
    only buys a re-delivery after `retry` (an hour here) when a cluster dies
    holding a message; our Task row says more and sooner: a task whose
    message was taken but never claimed is still `queued`, and the
    lost-message pass sends it again (`services.resend_lost_messages`), as
    for the Redis broker, which keeps nothing once a message is taken.

    The cluster uses this class through Q_CLUSTER["broker_class"] (settings).
    """

    def enqueue(self, task: str) -> None:
        connection = connections[Conf.ORM]
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(
                _ormq_statements(Conf.ORM).insert,
                [self.list_key or Conf.CLUSTER_NAME, task, now],
            )

    def dequeue(self):
        self.get_connection()  # django-q2's check of a long-lived connection
        take = _ormq_statements(Conf.ORM).take
        if take is None:  # SQLite < 3.35: no RETURNING
            return super().dequeue()
        connection = connections[Conf.ORM]
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(take, [self.list_key, now, Conf.BULK])
            taken = cursor.fetchall()
        if taken:
            # RETURNING follows no ORDER BY: hand them out oldest first.
            return sorted(taken)
        sleep(Conf.POLL)  # an empty queue: spare the database, as django-q2 does
        return None

    def acknowledge(self, task_id) -> None:
        if _ormq_statements(Conf.ORM).take is None:
            super().acknowledge(task_id)
        # Otherwise the message was deleted when it was taken.

    def fail(self, task_id) -> None:
        self.acknowledge(task_id)


class _OrmqStatements(NamedTuple):
    insert: str
    take: str | None  # None where the database cannot DELETE ... RETURNING


@lru_cache
def _ormq_statements(alias: str) -> _OrmqStatements:
    """The broker's two statements, built once per database: they run for
    every message, and every poll of an idle cluster."""
    connection = connections[alias]
    quote, meta = connection.ops.quote_name, OrmQ._meta
    table, pk = quote(meta.db_table), quote(meta.pk.column)
    key, payload, lock = (quote(meta.get_field(f).column) for f in ("key", "payload", "lock"))
    insert = f"INSERT INTO {table} ({key}, {payload}, {lock}) VALUES (%s, %s, %s)"  # noqa: S608 (names from the model)
    if not connection.features.can_return_columns_from_insert:
        return _OrmqStatements(insert, None)
    # Several clusters on one PostgreSQL: each takes messages the others are
    # not taking, instead of waiting for their rows and then finding them
    # gone (and sleeping as if the queue were empty). SQLite runs one writer
    # at a time anyway.
    skip_locked = connection.features.has_select_for_update_skip_locked
    skip = " FOR UPDATE SKIP LOCKED" if skip_locked else ""
    take = (
        f"DELETE FROM {table} WHERE {pk} IN (SELECT {pk} FROM {table} "  # noqa: S608 (names from the model)
        f"WHERE {key} = %s AND {lock} < %s ORDER BY {pk} LIMIT %s{skip}) "
        f"RETURNING {pk}, {payload}"
    )
    return _OrmqStatements(insert, take)


@lru_cache(maxsize=1)
def _broker() -> Broker:
    return get_broker()


def is_inline() -> bool:
    """True when django-q2 runs tasks in the calling process (tests, Q_SYNC)."""
    return bool(settings.Q_CLUSTER.get("sync"))


def enqueue(*, task_id: int, attempt: int, timeout: int, name: str) -> None:
    """Send one run of a task to the workers, now."""
    async_task(
        WORKER_ENTRY_POINT,
        task_id,
        attempt,
        task_name=name,
        broker=_broker(),
        # django-q2 raises its timeout inside the task after `timeout`
        # seconds; the worker turns that into a "timed out" failure. Our row
        # holds the result, so django-q2's own result row is not needed.
        timeout=timeout,
        save=False,
        ack_failure=True,
    )


def enqueue_on_commit(*, task_id: int, attempt: int, timeout: int, name: str) -> None:
    """Send a run of a task once the current transaction has committed (at
    once in autocommit), so that no worker can see it before the row.

    Also with the ORM broker, whose message is a row in the same database:
    written in the task's transaction, it would hold SQLite's single write
    lock through the building and signing of the message, and every other
    writer waits for it. If the process dies between the two commits, the
    task stays queued without a message, and the lost-message pass of the
    workers' housekeeping sends it again (as for a Redis broker that lost it).
    """
    transaction.on_commit(
        lambda: enqueue(task_id=task_id, attempt=attempt, timeout=timeout, name=name)
    )


def queue_depth() -> int | None:
    """Messages waiting in the broker, or None when the broker cannot say."""
    try:
        return _broker().queue_size()
    except Exception:  # a broker that is down must not break health checks
        logger.warning("could not read the broker's queue size", exc_info=True)
        return None


def broker_name() -> str:
    return "redis" if Conf.REDIS and not Conf.ORM else "orm"


def is_timeout(exc: BaseException) -> bool:
    """True for the exception django-q2 raises when a task runs out of time."""
    return isinstance(exc, TimeoutException)


def disarm_timeout() -> None:
    """Cancel django-q2's pending timeout alarm once the task's code is done,
    so it cannot fire while the worker records the result."""
    if not is_inline():
        try:
            signal.alarm(0)
        except ValueError:  # not the main thread: no alarm was set here either
            pass


def connect_worker_signals() -> None:
    """Start our per-worker housekeeping in every django-q2 worker process."""
    post_spawn.connect(_on_worker_spawn, dispatch_uid="tasks.worker_spawn")


def _on_worker_spawn(sender, proc_name: str, **kwargs) -> None:
    # django-q2 sends post_spawn for an inline (sync) run too, from the calling
    # process: a web server or the test run must not grow a housekeeping loop.
    if is_inline():
        return
    from . import worker

    worker.skip_connection_checks()
    worker.start_maintenance(proc_name)
