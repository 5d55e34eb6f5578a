"""What a task function receives: progress, cancellation, logging, its attempt."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.utils import timezone

from . import lifecycle, logs

# The shortest nap `TaskContext.sleep` takes between cancellation checks.
SLEEP_SLICE = 0.05
# A burst of log lines is stored in writes of at most this many.
LOG_BATCH = 100


class TaskCancelled(Exception):
    """Raised inside a task when it must stop: cancelled, or its attempt taken over."""


class TaskContext:
    """Handed to every task function as its first argument.

    Progress is written at most every PROGRESS_INTERVAL seconds (the last
    value is always kept), and cancellation is read at most that often, so a
    task may call both in a tight loop. `attempt` counts from 1: effects of
    an attempt are at-least-once, and a task can use it to make them
    idempotent. Once the attempt is no longer this worker's (its lease was
    taken over), the next call of `progress`, `check_cancelled` or `sleep`
    raises TaskCancelled.
    """

    def __init__(self, *, task_id: int, attempt: int, owner_id: int) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self.owner_id = owner_id
        self.logger = logging.LoggerAdapter(
            logging.getLogger("tasks.run"), {"task_id": task_id, "attempt": attempt}
        )
        self._interval = settings.TASKS["PROGRESS_INTERVAL"]
        # -inf: the first progress report and cancellation check always go through.
        self._last_write = float("-inf")
        self._last_check = float("-inf")
        self._pending: tuple[int, str] | None = None
        # Set by the lease keeper (or a refused write) when the attempt is gone.
        self.lost = threading.Event()
        self._dependency_outputs: dict[int, Any] | None = None
        # Log lines not yet stored. The task's thread and the lease keeper
        # both flush; one flush at a time keeps the lines in order.
        self._log_buffer: list[logs.Line] = []
        self._log_lock = threading.Lock()
        self._log_flush_lock = threading.Lock()
        self._last_log_write = float("-inf")

    def _raise_if_lost(self) -> None:
        if self.lost.is_set():
            raise TaskCancelled("This attempt is no longer current (its lease was taken over).")

    def progress(self, percent: float, message: str = "") -> None:
        self._raise_if_lost()
        percent = int(max(0, min(100, percent)))
        self._pending = (percent, str(message))
        if time.monotonic() - self._last_write >= self._interval:
            self.flush_progress()

    def flush_progress(self) -> None:
        if self._pending is not None:
            percent, message = self._pending
            self._pending = None
            self._last_write = time.monotonic()
            if not lifecycle.report_progress(
                task_id=self.task_id, attempt=self.attempt, percent=percent, message=message
            ):
                self.lost.set()

    def check_cancelled(self) -> None:
        """Raise TaskCancelled if the task was cancelled or its attempt taken over."""
        self._raise_if_lost()
        now = time.monotonic()
        if now - self._last_check < self._interval:
            return
        self._last_check = now
        if lifecycle.is_cancel_requested(task_id=self.task_id, attempt=self.attempt):
            raise TaskCancelled("Cancelled on request.")

    def sleep(self, seconds: float) -> None:
        """Sleep, checking for cancellation along the way."""
        deadline = time.monotonic() + seconds
        # Never a slice shorter than SLEEP_SLICE: with no progress interval
        # configured the loop would otherwise read the row in a busy loop.
        step = max(self._interval / 2, SLEEP_SLICE)
        while (left := deadline - time.monotonic()) > 0:
            self.check_cancelled()
            time.sleep(min(left, step))
        self.check_cancelled()

    @property
    def dependency_outputs(self) -> dict[int, Any]:
        """The outputs of the tasks this one depends on, by id (None for one
        that did not complete: see on_dependency_failure). Read once."""
        if self._dependency_outputs is None:
            from . import dependencies

            self._dependency_outputs = dependencies.outputs_of_parents(self.task_id)
        return self._dependency_outputs

    def log(self, message: str, *args: Any, level: int = logging.INFO) -> None:
        """Write a line to the task's log (GET /tasks/{id}/logs) and to the
        worker's output. Stored in batches: at most every PROGRESS_INTERVAL,
        every LOG_BATCH lines, and at the end of the attempt."""
        self.logger.log(level, "task %s: " + message, self.task_id, *args)
        try:
            text = message % args if args else message
        except (TypeError, ValueError):
            text = " ".join([message, *map(str, args)])
        line = logs.Line(
            at=timezone.now(),
            level=logging.getLevelName(level) if isinstance(level, int) else str(level),
            attempt=self.attempt,
            message=str(text),
        )
        with self._log_lock:
            self._log_buffer.append(line)
            due = len(self._log_buffer) >= LOG_BATCH
        if due or time.monotonic() - self._last_log_write >= self._interval:
            try:
                self.flush_logs()
            except Exception:
                # Logging never fails a task; the lines wait for the next flush.
                self.logger.warning("log lines not stored yet", exc_info=True)

    def flush_logs(self) -> None:
        """Store the buffered log lines now."""
        with self._log_flush_lock:
            with self._log_lock:
                lines, self._log_buffer = self._log_buffer, []
            if not lines:
                return
            self._last_log_write = time.monotonic()
            try:
                lifecycle.record_logs(task_id=self.task_id, lines=lines)
            except Exception:
                # Kept for the next flush (the end of the attempt at the latest).
                with self._log_lock:
                    self._log_buffer[:0] = lines
                raise
