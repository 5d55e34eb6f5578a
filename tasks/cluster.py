"""The one adapter to django-q2, which is the process pool: the broker that
feeds a cluster from the task table, and the hooks of its worker processes.

django-q2 runs `TaskBroker` through its documented `broker_class` setting.
Its pusher process calls `dequeue` in a loop; the broker claims runnable
rows (tasks.queue) and hands django-q2 one package per claimed attempt,
naming `tasks.worker.run_task` and the attempt. It never claims more than
the cluster has idle workers: a claimed task never waits in a local buffer
behind a long one while a worker elsewhere is idle, and a higher-priority
task submitted a moment later is not queued behind it.

Idle workers are counted with a semaphore the cluster's processes share
(they are forked from the process that builds the broker): the pusher takes
one per attempt it hands out; the worker gives it back as the attempt ends
(django-q2's post_execute_in_worker signal). A worker process killed
mid-task never does: every heartbeat the pusher counts what this cluster
really runs in the table and gives back the slots of the dead (once the
reaper has released their attempts, at their lease's end).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import time
import uuid
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, connections
from django.utils import timezone
from django_q.brokers import Broker
from django_q.conf import Conf
from django_q.signals import post_execute_in_worker, post_spawn
from django_q.signing import SignedPackage

from webhooks import delivery as webhook_delivery

from . import maintenance, queue, worker
from .models import Status, Task

logger = logging.getLogger(__name__)

ENTRY_POINT = "tasks.worker.run_task"
# The longest an idle PostgreSQL cluster waits for a notification before it
# looks at the table anyway (delayed tasks and retries fall due silently).
LISTEN_TIMEOUT = 0.5
# How often an idle SQLite cluster looks whether another connection has
# committed (a submit, a retry falling due...) within its poll interval.
COMMIT_WATCH_SECONDS = 0.005


class TaskBroker(Broker):
    """django-q2's broker for the task table. Nothing is ever enqueued
    through it: a submit is an INSERT (tasks.services)."""

    def __init__(self, list_key: str | None = None) -> None:
        super().__init__(list_key)
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.queues = queue.served_queues()
        self.workers = int(Conf.WORKERS)
        self.free = multiprocessing.BoundedSemaphore(self.workers)
        # The cluster's worker processes are forked after this: they find the
        # semaphore here, and give a slot back as each attempt ends.
        global _worker_slots
        _worker_slots = self.free
        # Slots held for workers the table says run nothing, at the last recount.
        self._unaccounted = 0
        self._next_recount = 0.0
        self._next_maintenance = 0.0
        self._next_schedules = 0.0
        self._listener: Any = None
        self._commits: int | None = None

    # --- what django-q2's pusher and monitor call --------------------------------

    def enqueue(self, task: str) -> None:
        raise RuntimeError("Submit tasks with tasks.services.submit_task, not through django-q2.")

    def dequeue(self) -> list[tuple[int, str]] | None:
        self._housekeeping()
        free = self._take_idle_workers()
        if not free:
            return None
        try:
            # Before the claim: a commit after this read wakes an idle wait.
            self._commits = _commit_count()
            claimed = queue.claim(cluster=self.name, limit=free, queues=self.queues)
        except DatabaseError:
            self._give_back(free)
            logger.warning("claim failed; trying again on a new connection", exc_info=True)
            connection.close()
            time.sleep(Conf.POLL)
            return None
        self._give_back(free - len(claimed))
        if not claimed:
            self._wait_for_work()
            return None
        return [(c.id, SignedPackage.dumps(self._package(c))) for c in claimed]

    def acknowledge(self, task_id: Any) -> None:
        # The worker gave its slot back already (_on_attempt_done).
        pass

    def fail(self, task_id: Any) -> None:
        # A package the pusher could not unpack never reached a worker.
        self._give_back(1)

    def queue_size(self) -> int:
        return queue.runnable(queues=self.queues).count()

    def lock_size(self) -> int:
        return Task.objects.filter(status=Status.IN_PROGRESS, claimed_by=self.name).count()

    def ping(self) -> bool:
        connection.ensure_connection()
        return True

    def info(self) -> str:
        return f"task table ({connection.vendor})"

    # --- idle workers --------------------------------------------------------------

    def _take_idle_workers(self) -> int:
        """Wait up to a poll interval for an idle worker; then take every idle one."""
        if not self.free.acquire(timeout=Conf.POLL):
            return 0
        taken = 1
        while taken < self.workers and self.free.acquire(block=False):
            taken += 1
        return taken

    def _give_back(self, count: int) -> None:
        for _ in range(count):
            try:
                self.free.release()
            except ValueError:  # already all free: a count corrected meanwhile
                return

    def recount_idle_workers(self) -> int:
        """Give back the slots of workers that died without an acknowledgement
        (killed mid-task, or by django-q2's own timeout): those held for more
        workers than the table shows running tasks of this cluster, at this
        recount and the one before (a heartbeat apart), so that a task that just
        finished, whose acknowledgement is still on its way, is never counted
        twice. Returns how many slots were given back."""
        try:
            running = self.lock_size()
        except DatabaseError:
            return 0
        unaccounted = max(self.workers - self.free.get_value() - running, 0)
        lost, self._unaccounted = min(unaccounted, self._unaccounted), unaccounted
        if lost:
            logger.warning("%s of this cluster's workers were lost; counting them idle", lost)
            self._give_back(lost)
            self._unaccounted -= lost
        return lost

    # --- waiting and housekeeping ------------------------------------------------

    def _wait_for_work(self) -> None:
        """Nothing runnable: wait for a notification (PostgreSQL), or up to a
        poll interval for another connection's commit (SQLite)."""
        if connection.vendor != "postgresql":
            self._wait_for_a_commit(Conf.POLL)
            return
        try:
            if self._listener is None:
                self._listener = _listen()
            # Awake again in time to look for due schedules.
            timeout = min(LISTEN_TIMEOUT, max(self._next_schedules - time.monotonic(), 0.01))
            for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                pass
        except Exception:
            logger.warning("listening for new work failed; polling", exc_info=True)
            self._close_listener()
            time.sleep(Conf.POLL)

    def _wait_for_a_commit(self, timeout: float) -> None:
        """SQLite has no notifications, but it counts the commits of other
        connections (`PRAGMA data_version`), and reading that count costs no
        lock and next to nothing: an idle cluster looks at it every
        COMMIT_WATCH_SECONDS and claims as soon as anything was committed,
        instead of sleeping out its poll interval. A task submitted to an
        idle cluster then starts within milliseconds, not Q_POLL / 2 on
        average, without a claim statement (a write) every few ms."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                time.sleep(COMMIT_WATCH_SECONDS)
                if _commit_count() != self._commits:
                    return
        except DatabaseError:
            logger.warning("watching for commits failed; polling", exc_info=True)
            connection.close()
            time.sleep(max(deadline - time.monotonic(), 0))

    def _close_listener(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            except Exception:  # a broken connection may fail to close too
                logger.debug("closing the listener failed", exc_info=True)
        self._listener = None

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self._next_schedules:
            # Its own, faster timer: a fire must start within a second of its
            # time, and looking for due schedules is one read of an index.
            self._next_schedules = now + settings.TASKS["SCHEDULE_POLL_SECONDS"]
            try:
                maintenance.fire_schedules()
            except DatabaseError:
                logger.warning(
                    "firing schedules failed on the database; next on a new connection",
                    exc_info=True,
                )
                connection.close()
            except Exception:
                logger.exception("firing schedules failed")
        if now >= self._next_recount:
            # One count of an index a second: a dead worker's slot is back
            # within two heartbeats of the reaper releasing its attempt.
            self._next_recount = now + settings.TASKS["HEARTBEAT_SECONDS"]
            self.recount_idle_workers()
        if now < self._next_maintenance:
            return
        self._next_maintenance = now + settings.TASKS["MAINTENANCE_SECONDS"]
        # Webhooks are sent from a thread of their own: a slow receiver
        # delays neither claims nor housekeeping.
        if settings.WEBHOOK_SEND and not queue.is_inline():
            webhook_delivery.ensure_sender()
        try:
            maintenance.run_maintenance()
        except DatabaseError:
            logger.warning("housekeeping failed on the database; next pass on a new connection")
            connection.close()
        except Exception:
            logger.exception("housekeeping failed")

    def _package(self, claimed: queue.Claimed) -> dict[str, Any]:
        return {
            "id": uuid.uuid4().hex,
            "name": f"task-{claimed.id}-attempt-{claimed.attempt}",
            "func": ENTRY_POINT,
            "args": claimed.run_args(),
            "kwargs": {"claimed_by": self.name},
            "started": timezone.now(),
            # django-q2 raises its TimeoutException inside the task after this
            # many seconds; the worker turns it into a timed-out attempt.
            "timeout": claimed.timeout,
            # The task row holds the result; django-q2 keeps none of its own,
            # and acknowledges failures too (that frees the worker's slot).
            "save": False,
            "ack_failure": True,
        }


def _commit_count() -> int | None:
    """SQLite's count of other connections' commits; None elsewhere.

    Read on the driver's own connection: it is read hundreds of times a
    second while idle, and Django's cursor wrapper would cost more than
    the read (this is no query of the application's data)."""
    if connection.vendor != "sqlite":
        return None
    connection.ensure_connection()
    with connection.wrap_database_errors:  # the driver's errors as Django's
        return connection.connection.execute("PRAGMA data_version").fetchone()[0]


def _listen():
    """A connection of its own, listening on the wake-up channel."""
    import psycopg

    params = dict(connection.get_connection_params())
    for django_only in ("cursor_factory", "context", "prepare_threshold", "server_side_binding"):
        params.pop(django_only, None)
    listener = psycopg.connect(**params, autocommit=True)
    listener.execute(f"LISTEN {queue.CHANNEL}")
    return listener


# --- worker processes ------------------------------------------------------------------


_worker_slots: Any = None


def connect_worker_signals() -> None:
    """Start each django-q2 worker process's lease keeper and heartbeat, and
    let it give its slot back as soon as an attempt ends."""
    post_spawn.connect(_on_worker_spawn, dispatch_uid="tasks.worker_spawn")
    post_execute_in_worker.connect(_on_attempt_done, dispatch_uid="tasks.attempt_done")


def _on_attempt_done(sender: Any, **kwargs: Any) -> None:
    # In the worker process, right after the task function returned: the
    # pusher may claim the worker's next task at once, instead of after the
    # result has travelled to the monitor and its acknowledgement back.
    if _worker_slots is None:
        return
    try:
        _worker_slots.release()
    except ValueError:  # all free already: a recount got there first
        pass


def _on_worker_spawn(sender: Any, proc_name: str, **kwargs: Any) -> None:
    # django-q2 sends post_spawn for an inline (sync) run too, from the calling
    # process: a web server or the test run must not grow a keeper thread.
    if queue.is_inline():
        return
    _skip_connection_checks()
    worker.lease_keeper()


def _skip_connection_checks() -> None:
    """Stop pinging the database before each task in this worker process.

    django-q2 calls close_old_connections() before every task, and with
    CONN_HEALTH_CHECKS each call costs a round trip on the next query. A
    worker's writes retry on a new connection after a connection error
    instead (`lifecycle.persistently`).
    """
    for alias in connections:
        connections.settings[alias]["CONN_HEALTH_CHECKS"] = False
    for conn in connections.all(initialized_only=True):
        conn.health_check_enabled = False  # type: ignore[attr-defined]  # set per connection by Django
