"""Server-Sent Events of tasks: `status`, `progress` and `log` events.

A source (`TaskEvents` for one task, `OwnerEvents` for all of a user's
tasks) turns the database's state into events on each `poll()`; `stream()`
drives a source, paces the polls (`Pace`), sends keep-alive comments and
ends after EVENTS_MAX_SECONDS so the client reconnects with Last-Event-ID.
Polls are plain synchronous reads and the pacing is apart from them, so
`astream()` drives the same sources from an async view (polls in a thread,
naps on the event loop).

Event ids are cursors, `<version>-<log>`: `version` is the task's (or the
newest seen task's) `updated_at` in microseconds, `log` the last log line
delivered (its seq for one task, its id for all tasks). Log lines are a
sequence and a resumed stream gets every line after its cursor; status and
progress are states, so a resumed stream gets the current state of every
task that changed since (at least once: a state near the cursor may come
twice).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections
from django.db.models import Max
from django.utils import timezone

from .models import FINISHED, Task, TaskLog

logger = logging.getLogger(__name__)

# The PostgreSQL channel the triggers of migration 0009 notify.
CHANNEL = "taskrunner_events"
# Most log lines one poll reads; the rest come with the next poll, at once.
LOG_BATCH = 500
# /events reads tasks changed since a little before its cursor: a write
# whose updated_at was taken before another's may commit after it.
VERSION_SLACK_US = 2_000_000
# How long /events keeps looking for a log line that commits after a newer one.
LOG_SLACK_SECONDS = 2.0
# Tells EventSource how long to wait before it reconnects.
RETRY_MS = 1000


class BadCursor(ValueError):
    """A Last-Event-ID this server did not make."""


# How far ahead of this host's clock a cursor's version may be (another
# web host's clock may run ahead of this one's).
MAX_AHEAD_US = 300 * 1_000_000


@dataclass
class Cursor:
    version: int = 0
    log: int = 0

    def __str__(self) -> str:
        return f"{self.version}-{self.log}"

    @classmethod
    def parse(cls, raw: str) -> Cursor:
        version, sep, log = raw.strip().partition("-")
        if not sep or not (version.isascii() and version.isdigit()):
            raise BadCursor(raw)
        if not (log.isascii() and log.isdigit()) or len(version) > 20 or len(log) > 20:
            raise BadCursor(raw)
        # A version is a time this server read off its clock: one far ahead
        # was never made here, and would hide every change until then. One a
        # little ahead (another host's clock) reads from now: a few states
        # may come twice, none is missed.
        now = _now_micros()
        if int(version) > now + MAX_AHEAD_US:
            raise BadCursor(raw)
        return cls(min(int(version), now), int(log))


@dataclass
class Event:
    kind: str  # status, progress, log
    id: str
    data: dict[str, Any]

    def encode(self) -> str:
        body = json.dumps(self.data, separators=(",", ":"), default=str)
        return f"id: {self.id}\nevent: {self.kind}\ndata: {body}\n\n"


def _micros(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp() * 1_000_000)


def _now_micros() -> int:
    return _micros(timezone.now())


def _status_data(task: Task) -> dict[str, Any]:
    return {
        "task_id": task.pk,
        "status": task.status,
        "type": task.type,
        "attempts": task.attempts,
        "finished": task.status in FINISHED,
        "updated_at": task.updated_at.isoformat(),
    }


def _progress_data(task: Task) -> dict[str, Any]:
    return {"task_id": task.pk, "percent": task.progress, "message": task.progress_message}


def _log_data(line: TaskLog, task_id: int) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "seq": line.seq,
        "at": line.at.isoformat(),
        "level": line.level,
        "attempt": line.attempt,
        "message": line.message,
    }


STATE_FIELDS = ("id", "type", "status", "progress", "progress_message", "attempts", "updated_at")


@dataclass
class TaskEvents:
    """The events of one task; `done` once its terminal status was sent."""

    task_id: int
    owner_id: int
    cursor: Cursor | None = None
    done: bool = False
    _sent: dict[str, Any] = field(default_factory=dict)

    def poll(self) -> list[Event]:
        # The row first, then the lines: a task's lines are stored before its
        # end is, so a finished row means every line is readable now.
        task = (
            Task.objects.filter(pk=self.task_id, owner_id=self.owner_id).only(*STATE_FIELDS).first()
        )
        if task is None:  # purged meanwhile
            self.done = True
            return []
        resumed = self.cursor is not None
        cursor = self.cursor or Cursor()
        events: list[Event] = []
        lines = list(
            TaskLog.objects.filter(task_id=self.task_id, seq__gt=cursor.log).order_by("seq")[
                :LOG_BATCH
            ]
        )
        for line in lines:
            # The old version: the state of this poll is not delivered yet.
            cursor = Cursor(cursor.version, line.seq)
            events.append(Event("log", str(cursor), _log_data(line, self.task_id)))
        version = _micros(task.updated_at)
        changed = not resumed or (not self._sent and version > cursor.version)
        cursor = Cursor(version, cursor.log)
        progress = (task.progress, task.progress_message)
        if resumed and not self._sent:
            # Resumed: the client has the state as of its cursor.
            self._sent = {"progress": progress, "status": task.status}
        if changed or self._sent.get("progress") != progress:
            events.append(Event("progress", str(cursor), _progress_data(task)))
        if changed or self._sent.get("status") != task.status:
            events.append(Event("status", str(cursor), _status_data(task)))
        self._sent = {"progress": progress, "status": task.status}
        self.cursor = cursor
        if task.status in FINISHED and len(lines) < LOG_BATCH:
            self.done = True
        return events


@dataclass
class OwnerEvents:
    """The events of all of one user's tasks. Without a cursor it starts
    from now: only changes after the stream opened."""

    owner_id: int
    cursor: Cursor | None = None
    done: bool = False  # never: it ends only with the stream's duration
    _sent: dict[int, tuple[str, int, str]] = field(default_factory=dict)
    # Lines sent with an id above the cursor, and when: the cursor passes a
    # line only LOG_SLACK_SECONDS after it was sent (see _lines).
    _delivered: dict[int, float] = field(default_factory=dict)

    def _lines(self, after: int) -> tuple[list[TaskLog], int]:
        """New lines, and the log cursor to use from now on.

        Ids come from one sequence for every writer, and two workers' lines
        may commit out of id order: a line can appear below one already
        sent. So the cursor trails the newest line by LOG_SLACK_SECONDS, each
        poll reads from it, and lines sent already are skipped. A stream
        resumed from a trailing cursor may send a few recent lines again
        (same task_id and seq): at least once, never missed."""
        mine = TaskLog.objects.filter(task__owner_id=self.owner_id)
        top = max(self._delivered, default=after)
        # The late commits below the newest line sent, then what is new.
        below = mine.filter(id__gt=after, id__lt=top).values_list("id", flat=True)
        missing = [pk for pk in below if pk not in self._delivered]
        late = list(mine.filter(id__in=missing).order_by("id")) if missing else []
        lines = late + list(mine.filter(id__gt=top).order_by("id")[:LOG_BATCH])
        now = time.monotonic()
        for line in lines:
            self._delivered[line.pk] = now
        settled = [pk for pk, sent in self._delivered.items() if now - sent >= LOG_SLACK_SECONDS]
        if settled:
            after = max(after, *settled)
            self._delivered = {pk: t for pk, t in self._delivered.items() if pk > after}
        return lines, after

    def poll(self) -> list[Event]:
        if self.cursor is None:
            last = TaskLog.objects.aggregate(last=Max("id"))["last"] or 0
            self.cursor = Cursor(_now_micros(), last)
            return []
        cursor = self.cursor
        since = datetime.fromtimestamp((cursor.version - VERSION_SLACK_US) / 1e6, tz=UTC)
        tasks = list(
            Task.objects.filter(owner_id=self.owner_id, updated_at__gte=since)
            .only(*STATE_FIELDS)
            .order_by("updated_at", "id")[:LOG_BATCH]
        )
        lines, log_cursor = self._lines(cursor.log)
        cursor = Cursor(cursor.version, log_cursor)
        events = [Event("log", str(cursor), _log_data(line, line.task_id)) for line in lines]
        for task in tasks:
            version = _micros(task.updated_at)
            state = (task.status, task.progress, task.progress_message)
            sent = self._sent.get(task.pk)
            if sent == state:
                continue
            cursor = Cursor(max(cursor.version, version), cursor.log)
            if sent is None or sent[1:] != state[1:]:
                events.append(Event("progress", str(cursor), _progress_data(task)))
            if sent is None or sent[0] != state[0]:
                events.append(Event("status", str(cursor), _status_data(task)))
            self._sent[task.pk] = state
        # Forget tasks that fell out of the window: they are not read again.
        in_window = {task.pk for task in tasks}
        self._sent = {pk: state for pk, state in self._sent.items() if pk in in_window}
        self.cursor = cursor
        return events


def release_connection() -> None:
    """Close this thread's database connection between polls: an open stream
    must not keep one for minutes while it mostly sleeps."""
    connection = connections[DEFAULT_DB_ALIAS]
    if not connection.in_atomic_block:
        connection.close()


class LoopFlag:
    """A wake-up flag for `astream`: set from the listener's thread, awaited
    on the event loop, so a waiting stream holds no thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.event = asyncio.Event()

    def set(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:  # the loop closed (the worker is exiting)
            pass


Flag = threading.Event | LoopFlag


class Wakeups(threading.Thread):
    """One per web process, on PostgreSQL: a connection of its own listening
    on CHANNEL (the triggers of migration 0009 notify it with "<owner
    id>:<task id>"), waking the streams of the owner a notification names.
    While it is not listening (connecting, or after an error) streams poll."""

    def __init__(self) -> None:
        super().__init__(name="event-wakeups", daemon=True)
        self._lock = threading.Lock()
        self._flags: dict[int, set[Flag]] = {}
        self.listening = threading.Event()
        self._stopping = threading.Event()

    def subscribe(self, owner_id: int, flag: Flag | None = None) -> Flag:
        flag = flag or threading.Event()
        with self._lock:
            self._flags.setdefault(owner_id, set()).add(flag)
        return flag

    def unsubscribe(self, owner_id: int, flag: Flag) -> None:
        with self._lock:
            flags = self._flags.get(owner_id, set())
            flags.discard(flag)
            if not flags:
                self._flags.pop(owner_id, None)

    def wake(self, owner_id: int | None) -> None:
        """Wake the streams of `owner_id` (None: every stream)."""
        with self._lock:
            if owner_id is None:
                flags = [flag for group in self._flags.values() for flag in group]
            else:
                flags = list(self._flags.get(owner_id, ()))
        for flag in flags:
            flag.set()

    def stop(self) -> None:
        self._stopping.set()
        self.join()

    def run(self) -> None:
        while not self._stopping.is_set():
            listener = None
            try:
                listener = _listen()
                self.listening.set()
                # Changes made while it was not listening were polled for;
                # from here on a notification follows every change.
                self.wake(None)
                while not self._stopping.is_set():
                    for note in listener.notifies(timeout=1.0):
                        owner, _, _ = note.payload.partition(":")
                        self.wake(int(owner) if owner.isdigit() else None)
            except Exception:
                logger.warning("listening for task events failed; streams poll", exc_info=True)
            finally:
                self.listening.clear()
                if listener is not None:
                    try:
                        listener.close()
                    except Exception:
                        logger.debug("closing the events listener failed", exc_info=True)
            self.wake(None)
            self._stopping.wait(1.0)


class PollingWakeups(Wakeups):
    """`Wakeups` where the database cannot notify (SQLite): one thread per
    web process looks for changes every EVENTS_POLL_SECONDS on behalf of
    every stream and long-poll of the process, and wakes the owners whose
    tasks changed or logged. A thousand open streams cost one small read a
    second instead of a thousand, and nothing at all while no other
    connection has committed (SQLite's `data_version`)."""

    def run(self) -> None:
        seen: tuple[int | None, int | None] = (None, None)  # data_version, last log id
        since = timezone.now()
        try:
            while not self._stopping.is_set():
                try:
                    seen, since = self._look(seen, since)
                    self.listening.set()
                except Exception:
                    logger.warning("looking for task events failed; streams poll", exc_info=True)
                    self.listening.clear()
                    self.wake(None)
                    connections[DEFAULT_DB_ALIAS].close()
                self._stopping.wait(settings.TASKS["EVENTS_POLL_SECONDS"])
        finally:
            connections[DEFAULT_DB_ALIAS].close()

    def _look(
        self, seen: tuple[int | None, int | None], since: datetime
    ) -> tuple[tuple[int | None, int | None], datetime]:
        connection = connections[DEFAULT_DB_ALIAS]
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA data_version")
            version = cursor.fetchone()[0]
        now = timezone.now()
        with self._lock:
            owners = list(self._flags)
        if not owners or version == seen[0]:
            return (version, seen[1]), now if not owners else since
        top = TaskLog.objects.aggregate(last=Max("id"))["last"] or 0
        # A write takes updated_at before it waits for SQLite's write lock:
        # look back a little, at the cost of waking an owner again.
        changed_since = since - timedelta(microseconds=VERSION_SLACK_US)
        changed: set[int] = set()
        for start in range(0, len(owners), 500):
            chunk = owners[start : start + 500]
            changed.update(
                Task.objects.filter(owner_id__in=chunk, updated_at__gte=changed_since)
                .order_by()  # the model's ordering by id would make DISTINCT per task
                .values_list("owner_id", flat=True)
                .distinct()
            )
            if seen[1] is not None and top > seen[1]:
                # SQLite commits one writer at a time: ids appear in order.
                changed.update(
                    TaskLog.objects.filter(id__gt=seen[1], id__lte=top, task__owner_id__in=chunk)
                    .values_list("task__owner_id", flat=True)
                    .distinct()
                )
        for owner in changed:
            self.wake(owner)
        return (version, top), now


def _listen():
    import psycopg

    params = dict(connections[DEFAULT_DB_ALIAS].get_connection_params())
    for django_only in ("cursor_factory", "context", "prepare_threshold", "server_side_binding"):
        params.pop(django_only, None)
    listener = psycopg.connect(**params, autocommit=True)
    listener.execute(f"LISTEN {CHANNEL}")
    return listener


_wakeups: tuple[int, Wakeups] | None = None
_wakeups_lock = threading.Lock()


def wakeups() -> Wakeups | None:
    """This process's listener (PostgreSQL) or watcher (SQLite), started on
    first use; None on other databases."""
    global _wakeups
    vendor = connections[DEFAULT_DB_ALIAS].vendor
    if vendor not in ("postgresql", "sqlite"):
        return None
    with _wakeups_lock:
        if _wakeups is None or _wakeups[0] != os.getpid():
            listener = Wakeups() if vendor == "postgresql" else PollingWakeups()
            listener.start()
            _wakeups = (os.getpid(), listener)
        return _wakeups[1]


class Pace:
    """When a stream polls, sends keep-alives and ends; shared by the
    synchronous driver (`stream`) and the asynchronous one (`astream`)."""

    def __init__(self, now: float) -> None:
        conf = settings.TASKS
        self.poll_every = conf["EVENTS_POLL_SECONDS"]
        self.keepalive = conf["EVENTS_KEEPALIVE_SECONDS"]
        self.ends = now + conf["EVENTS_MAX_SECONDS"]
        self.last_sent = now

    def after_poll(
        self, events: list[Event], *, done: bool, now: float, woken: bool
    ) -> tuple[list[str], float | None]:
        """What to send after a poll, and how long to nap before the next one
        (None: the stream ends). `woken`: a notification will end the nap."""
        chunks = [event.encode() for event in events]
        if events:
            self.last_sent = now
        if done or now >= self.ends:
            return chunks, None
        if now - self.last_sent >= self.keepalive:
            chunks.append(": keep-alive\n\n")
            self.last_sent = now
        if len(events) >= LOG_BATCH:
            return chunks, 0.0  # more lines are waiting
        nap = min(self.ends - now, self.keepalive - (now - self.last_sent))
        if not woken:
            nap = min(nap, self.poll_every)
        return chunks, max(0.0, nap)


def _look_after(flagged: bool, waker: Wakeups | None) -> bool:
    """Whether a stream polls after a nap. Not when the nap ran out with no
    wake-up while the process's listener listens: nothing changed, and only
    a keep-alive is due (a thousand idle streams would otherwise poll every
    keep-alive). The listener wakes every stream when it stops or starts
    listening, so a change it could not see is never skipped."""
    return flagged or waker is None or not waker.listening.is_set()


def poll_once(source: TaskEvents | OwnerEvents) -> list[Event]:
    try:
        return source.poll()
    finally:
        release_connection()


def poll_in_pool(source: TaskEvents | OwnerEvents) -> list[Event]:
    """A poll of `astream`, in the event loop's thread pool: a few threads
    poll for every stream of the process, so each keeps its connection
    (opening one per poll would cost more than the poll), dropping it only
    when obsolete or broken, as a request thread does."""
    close_old_connections()
    return source.poll()


def stream(
    source: TaskEvents | OwnerEvents,
    *,
    clock: Callable[[], float] = time.monotonic,
    listener: Wakeups | bool = True,
) -> Iterator[str]:
    """The text of an event stream: events as they come, a keep-alive
    comment after KEEPALIVE seconds without any, the end after MAX seconds
    (or after a task's terminal status).

    Between polls it sleeps EVENTS_POLL_SECONDS; on PostgreSQL, while the
    process's listener listens, it sleeps until a notification for its owner
    (or the next keep-alive) instead."""
    waker: Wakeups | None
    if isinstance(listener, Wakeups):
        waker = listener
    else:
        waker = wakeups() if listener else None
    flag = threading.Event()
    if waker:
        waker.subscribe(source.owner_id, flag)
    try:
        pace = Pace(clock())
        yield f"retry: {RETRY_MS}\n\n"
        look = True
        while True:
            events = poll_once(source) if look else []
            woken = waker is not None and waker.listening.is_set()
            chunks, nap = pace.after_poll(events, done=source.done, now=clock(), woken=woken)
            yield from chunks
            if nap is None:
                return
            # A notification during the poll left the flag set: no nap then.
            look = _look_after(flag.wait(nap), waker)
            flag.clear()
    finally:
        if waker:
            waker.unsubscribe(source.owner_id, flag)


async def astream(
    source: TaskEvents | OwnerEvents,
    *,
    clock: Callable[[], float] = time.monotonic,
    listener: Wakeups | bool = True,
) -> AsyncIterator[str]:
    """`stream` for ASGI (StreamingHttpResponse takes an async iterator
    there; a synchronous one would be read to its end before a byte is
    sent). The polls run in the loop's thread pool, the naps on the event
    loop, so an open stream holds no thread while it waits. On PostgreSQL the
    process's listener wakes it as it wakes `stream`."""
    from asgiref.sync import sync_to_async

    waker: Wakeups | None
    if isinstance(listener, Wakeups):
        waker = listener
    else:
        waker = wakeups() if listener else None
    flag = LoopFlag(asyncio.get_running_loop())
    if waker:
        waker.subscribe(source.owner_id, flag)
    try:
        pace = Pace(clock())
        yield f"retry: {RETRY_MS}\n\n"
        look = True
        while True:
            events = []
            if look:
                events = await sync_to_async(poll_in_pool, thread_sensitive=False)(source)
            woken = waker is not None and waker.listening.is_set()
            chunks, nap = pace.after_poll(events, done=source.done, now=clock(), woken=woken)
            for chunk in chunks:
                yield chunk
            if nap is None:
                return
            # A notification during the poll left the flag set: no nap then.
            try:
                await asyncio.wait_for(flag.event.wait(), nap)
                flagged = True
            except TimeoutError:
                flagged = False
            look = _look_after(flagged, waker)
            flag.event.clear()
    finally:
        if waker:
            waker.unsubscribe(source.owner_id, flag)
