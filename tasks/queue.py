"""The one adapter to django-q2. Nothing else in the project imports django_q.

django-q2 only carries `(task_id, attempt)` to a worker; the worker re-reads
the row. One broker object is reused for every enqueue (building a broker per
call costs a new connection each time).
"""

from __future__ import annotations

import logging
import signal
from functools import lru_cache

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


class _OrmBroker(ORM):
    """django-q2's ORM broker, writing its message row with one plain INSERT.

    The row is the same one `ORM.enqueue` creates (key, signed payload, lock
    = now, so it is due at once); every submit writes one, and going through
    the model layer cost more than the database's own work for it.
    """

    def enqueue(self, task: str) -> None:
        connection = connections[Conf.ORM]
        quote, meta = connection.ops.quote_name, OrmQ._meta
        columns = ", ".join(
            quote(meta.get_field(name).column) for name in ("key", "payload", "lock")
        )
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES (%s, %s, %s)",  # noqa: S608 (names from the model)
                [self.list_key or Conf.CLUSTER_NAME, task, now],
            )


@lru_cache(maxsize=1)
def _broker() -> Broker:
    if broker_name() == "orm" and not Conf.BROKER_CLASS:
        return _OrmBroker()
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
