"""What a worker process runs: one claimed attempt of one task.

`run_task` is the function django-q2's worker calls for each attempt the
cluster's broker claimed (tasks.cluster). It starts the attempt, keeps its
lease alive from a side thread while the task's code runs, and records the
outcome through `lifecycle`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import traceback
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone
from django_q.exceptions import TimeoutException

from config import logs

from . import dependencies, lifecycle, queue, registry
from .context import TaskCancelled, TaskContext
from .models import TaskAttempt, WorkerHeartbeat

logger = logging.getLogger(__name__)

Outcome = TaskAttempt.Outcome


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class LeaseKeeper(threading.Thread):
    """One per worker process: renews the lease of the attempt the process is
    running (flagging its context when the attempt was taken over), and
    records the process's heartbeat with the task it runs."""

    def __init__(self) -> None:
        super().__init__(name="task-lease", daemon=True)
        self._lock = threading.Lock()
        self._ctx: TaskContext | None = None

    def watch(self, ctx: TaskContext | None) -> None:
        with self._lock:
            self._ctx = ctx

    def run(self) -> None:
        interval = settings.TASKS["HEARTBEAT_SECONDS"]
        beat_every = max(1, round(5 / max(interval, 0.1)))
        name, host, pid = worker_name(), socket.gethostname(), os.getpid()
        tick = 0
        while True:
            with self._lock:
                ctx = self._ctx
            try:
                close_old_connections()
                if ctx is not None and not lifecycle.renew_lease(
                    task_id=ctx.task_id, attempt=ctx.attempt
                ):
                    ctx.lost.set()
                if ctx is not None:
                    # Lines logged just before a long quiet stretch show up now.
                    ctx.flush_logs()
                if tick % beat_every == 0:
                    record_heartbeat(name=name, host=host, pid=pid)
            except Exception:
                # This thread is not in the attempt's logging context: name it.
                ids = {"task_id": ctx.task_id, "attempt": ctx.attempt} if ctx else None
                logger.warning("lease renewal or heartbeat failed", exc_info=True, extra=ids)
            tick += 1
            time.sleep(interval)


def record_heartbeat(*, name: str, host: str, pid: int) -> None:
    now = timezone.now()
    if not WorkerHeartbeat.objects.filter(name=name).update(last_seen=now):
        WorkerHeartbeat.objects.update_or_create(
            name=name, defaults={"host": host, "pid": pid, "last_seen": now, "started_at": now}
        )


_keeper: tuple[int, LeaseKeeper] | None = None


def lease_keeper() -> LeaseKeeper:
    """This process's keeper, started on first use (a forked worker starts its own)."""
    global _keeper
    if _keeper is None or _keeper[0] != os.getpid():
        keeper = LeaseKeeper()
        keeper.start()
        _keeper = (os.getpid(), keeper)
    return _keeper[1]


def flush_logs(ctx: TaskContext) -> None:
    try:
        ctx.flush_logs()
    except Exception:
        logger.warning("task %s: last log lines not saved", ctx.task_id, exc_info=True)


def _error_from(exc: BaseException) -> dict[str, str]:
    return {
        "message": str(exc) or exc.__class__.__name__,
        "type": exc.__class__.__name__,
        "traceback": "".join(traceback.format_exception(exc)),
    }


def disarm_timeout() -> None:
    """Cancel django-q2's pending timeout alarm once the task's code is done,
    so it cannot fire while the outcome is being recorded."""
    try:
        signal.alarm(0)
    except ValueError:  # not the main thread: no alarm was set here either
        pass


@logs.names_its_task
def run_task(
    task_id: int,
    attempt: int,
    type_name: str,
    args: dict[str, Any],
    timeout: int,
    owner_id: int,
    claimed_by: str | None = None,
) -> str:
    """Run one attempt that `claimed_by` (a cluster) claimed. Safe to call
    twice with the same arguments: only one call can start it."""
    name = worker_name()
    started = lifecycle.start_attempt(
        task_id=task_id, attempt=attempt, worker=name, claimed_by=claimed_by
    )
    if not started:
        logger.info("task %s: attempt %s no longer ours to start; skipped", task_id, attempt)
        return "skipped"
    logger.info("task %s: attempt %s started by %s (%s)", task_id, attempt, name, type_name)
    inline = queue.is_inline()
    task_type = registry.get_type(type_name)
    if task_type is None:
        error = {
            "message": f"Task type {type_name!r} is not registered on this worker.",
            "type": "UnknownTaskType",
            "traceback": "",
        }
        return (
            lifecycle.end_attempt(
                task_id=task_id, attempt=attempt, outcome=Outcome.FAILED, error=error
            )
            or "superseded"
        )

    ctx = TaskContext(task_id=task_id, attempt=attempt, owner_id=owner_id)
    keeper = None if inline else lease_keeper()
    if keeper:
        keeper.watch(ctx)
    try:
        try:
            output = task_type.func(ctx, **args)
        finally:
            if not inline:
                disarm_timeout()
            if keeper:
                keeper.watch(None)
            # However the attempt ends, its log lines are stored before its end is.
            flush_logs(ctx)
        ctx.flush_progress()
        done = lifecycle.complete_attempt(task_id=task_id, attempt=attempt, output=output)
        outcome = "completed" if done else "superseded"
    except TaskCancelled:
        ended = lifecycle.end_attempt(task_id=task_id, attempt=attempt, outcome=Outcome.CANCELLED)
        outcome = ended or "superseded"
    except BaseException as exc:
        if isinstance(exc, TimeoutException):
            error, kind = lifecycle.timeout_error(timeout), Outcome.TIMED_OUT
        else:
            error, kind = _error_from(exc), Outcome.FAILED
        try:
            ctx.flush_progress()
        except Exception:
            logger.warning("task %s: last progress not saved", task_id, exc_info=True)
        ended = lifecycle.end_attempt(task_id=task_id, attempt=attempt, outcome=kind, error=error)
        outcome = ended or "superseded"
        if isinstance(exc, (KeyboardInterrupt, SystemExit)) and not isinstance(
            exc, TimeoutException
        ):
            raise
    logger.info("task %s: attempt %s %s (%s)", task_id, attempt, outcome, type_name)
    return outcome


def run_now(task_id: int) -> str | None:
    """Claim and run one task in this process, if it is runnable now (inline
    mode, Q_SYNC: tests and debugging; limits are not applied)."""
    cluster = f"inline:{worker_name()}"
    claimed = queue.claim_one(task_id=task_id, cluster=cluster)
    if claimed is None:
        return None
    outcome = run_task(*claimed.run_args(), claimed_by=cluster)
    # No cluster will claim what this attempt released: run it here too
    # (claim_one skips the dependants still waiting or already cancelled).
    for dependant in dependencies.dependants_of(task_id):
        run_now(dependant)
    return outcome
