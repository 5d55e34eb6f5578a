"""What a worker process runs: one attempt of one task, and the housekeeping loop.

`run_task` is the function django-q2 calls with `(task_id, attempt)`. It
claims the row, keeps a lease alive in a side thread while the task's code
runs, and records the outcome. Everything it writes goes through services.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from typing import Any

from django.conf import settings
from django.db import (
    DEFAULT_DB_ALIAS,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connections,
)

from . import queue, registry, services
from .models import TaskAttempt

logger = logging.getLogger(__name__)


# The shortest nap `TaskContext.sleep` takes between cancellation checks.
SLEEP_SLICE = 0.05


class TaskCancelled(Exception):
    """Raised inside a task by `ctx.check_cancelled()` when it must stop."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class TaskContext:
    """Handed to every task function: progress, cancellation, logging.

    Progress is written at most every PROGRESS_INTERVAL seconds (the last
    value is always kept), and cancellation is read at most that often, so a
    task may call both in a tight loop.
    """

    def __init__(self, *, task_id: int, attempt: int, owner_id: int) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self.logger = logging.LoggerAdapter(
            logging.getLogger("tasks.run"), {"task_id": task_id, "attempt": attempt}
        )
        self._interval = settings.TASKS["PROGRESS_INTERVAL"]
        # -inf: the first progress report and cancellation check always go through.
        self._last_write = float("-inf")
        self._last_check = float("-inf")
        self._pending: tuple[int, str] | None = None
        self.lost = threading.Event()

    def progress(self, percent: float, message: str = "") -> None:
        percent = int(max(0, min(100, percent)))
        self._pending = (percent, str(message))
        now = time.monotonic()
        if now - self._last_write >= self._interval:
            self.flush_progress()

    def flush_progress(self) -> None:
        if self._pending is not None:
            percent, message = self._pending
            self._pending = None
            self._last_write = time.monotonic()
            services.report_progress(
                task_id=self.task_id, attempt=self.attempt, percent=percent, message=message
            )

    def check_cancelled(self) -> None:
        """Raise TaskCancelled if the task was cancelled or its attempt taken over."""
        if self.lost.is_set():
            raise TaskCancelled("The worker lost this task's lease.")
        now = time.monotonic()
        if now - self._last_check < self._interval:
            return
        self._last_check = now
        if services.is_cancel_requested(task_id=self.task_id, attempt=self.attempt):
            raise TaskCancelled("Cancelled on request.")

    def sleep(self, seconds: float) -> None:
        """Sleep, checking for cancellation along the way."""
        deadline = time.monotonic() + seconds
        # Sleep in slices, never shorter than SLEEP_SLICE: with no progress
        # interval configured, half of it is 0 and the loop would spin,
        # reading the row thousands of times a second.
        step = max(self._interval / 2, SLEEP_SLICE)
        while (left := deadline - time.monotonic()) > 0:
            self.check_cancelled()
            time.sleep(min(left, step))
        self.check_cancelled()

    def log(self, message: str, *args: Any, level: int = logging.INFO) -> None:
        self.logger.log(level, "task %s: " + message, self.task_id, *args)


class LeaseKeeper(threading.Thread):
    """Renews the lease of the attempt its worker process is running, and flags
    that attempt's context when the lease is gone (the reaper gave the task to
    another worker).

    One long-lived keeper per process serves every task the process runs:
    starting a thread per task cost a measurable share of a short task's time
    (`Thread.start()` waits for the new thread to be scheduled).
    """

    def __init__(self) -> None:
        super().__init__(name="task-lease", daemon=True)
        self._lock = threading.Lock()
        self._ctx: TaskContext | None = None

    def watch(self, ctx: TaskContext) -> None:
        with self._lock:
            self._ctx = ctx

    def release(self) -> None:
        with self._lock:
            self._ctx = None

    def run(self) -> None:
        interval = settings.TASKS["HEARTBEAT_SECONDS"]
        while True:
            time.sleep(interval)
            with self._lock:
                ctx = self._ctx
            if ctx is None:
                continue
            try:
                close_old_connections()
                # The renewal is conditional on the attempt: renewing an
                # attempt that ended meanwhile changes nothing and only flags
                # that finished attempt's context.
                if not services.renew_lease(task_id=ctx.task_id, attempt=ctx.attempt):
                    ctx.lost.set()
            except Exception:
                logger.warning("task %s: lease renewal failed", ctx.task_id, exc_info=True)


_keeper: tuple[int, LeaseKeeper] | None = None


def lease_keeper() -> LeaseKeeper:
    """This process's keeper, started on first use (a forked worker starts its own)."""
    global _keeper
    if _keeper is None or _keeper[0] != os.getpid():
        keeper = LeaseKeeper()
        keeper.start()
        _keeper = (os.getpid(), keeper)
    return _keeper[1]


def _error_from(exc: BaseException) -> dict[str, str]:
    return {
        "message": str(exc) or exc.__class__.__name__,
        "type": exc.__class__.__name__,
        "traceback": "".join(traceback.format_exception(exc)),
    }


def skip_connection_checks() -> None:
    """Stop pinging the database before each task in this worker process.

    django-q2 calls close_old_connections() before every task, and with
    CONN_HEALTH_CHECKS each call costs a round trip on the next query. A
    worker instead finds a dead connection when its claim fails, and claims
    again on a new one (`_claim`).
    """
    for connection in connections.all(initialized_only=True):
        connection.health_check_enabled = False
    for alias in connections:
        connections.settings[alias]["CONN_HEALTH_CHECKS"] = False


def _claim(task_id: int, attempt: int, worker: str):
    try:
        return services.claim_task(task_id=task_id, attempt=attempt, worker=worker)
    except (InterfaceError, OperationalError):
        # A connection that died since the last task (a database restart):
        # nothing was written on it. Once more on a fresh one; a second
        # failure is a real outage and propagates.
        logger.warning("task %s: claim failed on a stale connection; retrying", task_id)
        connections[DEFAULT_DB_ALIAS].close()
        return services.claim_task(task_id=task_id, attempt=attempt, worker=worker)


def run_task(task_id: int, attempt: int) -> str:
    """Run one attempt of a task. Safe to call twice with the same arguments."""
    name = worker_name()
    task = _claim(task_id, attempt, name)
    if task is None:
        logger.info("task %s: attempt %s already claimed or stale; skipped", task_id, attempt)
        return "skipped"
    logger.info("task %s: attempt %s started by %s (%s)", task_id, attempt, name, task.type)

    task_type = registry.get_type(task.type)
    if task_type is None:
        services.fail_task(
            task_id=task_id,
            attempt=attempt,
            error={
                "message": f"Task type {task.type!r} is not registered on this worker.",
                "type": "UnknownTaskType",
                "traceback": "",
            },
        )
        return "failed"

    ctx = TaskContext(task_id=task_id, attempt=attempt, owner_id=task.owner_id)
    keeper = None if queue.is_inline() else lease_keeper()
    if keeper:
        keeper.watch(ctx)
    try:
        try:
            output = task_type.func(ctx, **task.args)
        finally:
            queue.disarm_timeout()
            if keeper:
                keeper.release()
        ctx.flush_progress()
        done = services.complete_task(task_id=task_id, attempt=attempt, output=output)
        outcome = "completed" if done else "superseded"
    except TaskCancelled:
        done = services.cancelled_while_running(task_id=task_id, attempt=attempt, claimed=task)
        outcome = "cancelled" if done else "superseded"
    except BaseException as exc:
        if queue.is_timeout(exc):
            error = services.timeout_error(task.timeout)
            kind = TaskAttempt.Outcome.TIMED_OUT
        else:
            error = _error_from(exc)
            kind = TaskAttempt.Outcome.FAILED
        ctx.flush_progress()
        outcome = services.fail_task(task_id=task_id, attempt=attempt, error=error, outcome=kind)
        outcome = outcome or "superseded"
        if isinstance(exc, (KeyboardInterrupt, SystemExit)) and not queue.is_timeout(exc):
            raise
    logger.info("task %s: attempt %s %s (%s)", task_id, attempt, outcome, task.type)
    return outcome


# --- Housekeeping -------------------------------------------------------------------


_maintenance_started = False


def start_maintenance(proc_name: str) -> None:
    """Start the housekeeping thread of this worker process (once)."""
    global _maintenance_started
    if _maintenance_started:
        return
    _maintenance_started = True
    threading.Thread(
        target=_maintenance_loop, args=(proc_name,), name="task-maintenance", daemon=True
    ).start()


def _maintenance_loop(proc_name: str) -> None:
    interval = settings.TASKS["MAINTENANCE_SECONDS"]
    name = f"{worker_name()}"
    host, pid = socket.gethostname(), os.getpid()
    beat_every = max(1, int(5 / max(interval, 0.1)))
    tick = 0
    # Which queued tasks' messages were missing from the broker, and since when.
    missing_since: dict = {}
    while True:
        try:
            close_old_connections()
            if tick % beat_every == 0:
                services.record_heartbeat(name=name, host=host, pid=pid)
            services.run_maintenance(missing_since=missing_since)
        except Exception:
            logger.exception("maintenance pass failed")
        tick += 1
        time.sleep(interval)
