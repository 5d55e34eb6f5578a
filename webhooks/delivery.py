"""Sending deliveries: the sender thread of each worker cluster.

Each cluster's housekeeping starts one `Sender` thread (tasks.cluster), so
sending never runs in the claiming path nor in a task's worker: a slow or
dead receiver delays nothing but other deliveries. The sender claims due
deliveries atomically (a conditional UPDATE per row, after a
`SKIP LOCKED` read on PostgreSQL), then sends each outside any transaction,
a few at once, with WEBHOOK_TIMEOUT_SECONDS on connecting and on every read.

A claim moves `next_attempt_at` past the request's longest possible time,
so a sender that dies mid-send leaves the delivery due again (at least
once). The outcome is recorded only if the claim is still this sender's
(`attempts` unchanged). A failure is tried again after an exponential
backoff with jitter until `expires_at`, then the delivery is `failed`.
"""

from __future__ import annotations

import http.client
import logging
import os
import random
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, transaction
from django.db.models import F
from django.utils import timezone
from standardwebhooks.webhooks import Webhook as Signer

from . import targets
from .models import Delivery, DeliveryAttempt

logger = logging.getLogger(__name__)

# Bytes of a response body kept with its attempt.
RESPONSE_KEPT = 1024
# Deliveries one sender claims at a time, and sends at once.
BATCH = 20
PARALLEL = 4
USER_AGENT = "task-runner-webhooks/1"
# Seconds between two purges of old deliveries by one sender.
PURGE_EVERY = 60.0


@dataclass
class Outcome:
    status_code: int | None = None
    response_body: str = ""
    error: str = ""
    duration_ms: int = 0

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def claim_lease() -> timedelta:
    # Connect, send and read each may take the timeout; a margin on top.
    return timedelta(seconds=3 * settings.WEBHOOK_TIMEOUT_SECONDS + 30)


def backoff_seconds(attempt: int) -> float:
    """The wait after the `attempt`-th failed try: exponential, full jitter
    in its upper half, capped at WEBHOOK_RETRY_MAX_SECONDS."""
    base = settings.WEBHOOK_RETRY_BASE_SECONDS
    ceiling = min(base * 2 ** (attempt - 1), settings.WEBHOOK_RETRY_MAX_SECONDS)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _due(now: datetime):
    return Delivery.objects.filter(state=Delivery.State.PENDING, next_attempt_at__lte=now).order_by(
        "next_attempt_at"
    )


def claim_due(*, limit: int = BATCH) -> list[tuple[int, int]]:
    """Take up to `limit` due deliveries: [(id, attempt number)]."""
    now = timezone.now()
    if connection.vendor == "postgresql":
        # Rows another sender is claiming are skipped, not waited for.
        with transaction.atomic():
            ids = list(
                _due(now).select_for_update(skip_locked=True).values_list("pk", flat=True)[:limit]
            )
            return _take(ids, now)
    return _take(list(_due(now).values_list("pk", flat=True)[:limit]), now)


def _take(ids: list[int], now: datetime) -> list[tuple[int, int]]:
    taken = []
    until = now + claim_lease()
    for pk in ids:
        # Conditional: of two senders racing for a row, one wins.
        won = _due(now).filter(pk=pk).update(next_attempt_at=until, attempts=F("attempts") + 1)
        if won:
            attempts = Delivery.objects.filter(pk=pk).values_list("attempts", flat=True).first()
            if attempts is not None:
                taken.append((pk, attempts))
    return taken


def headers_for(delivery: Delivery, secret: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (its time is signed too)."""
    signature = Signer(secret).sign(msg_id=delivery.msg_id, timestamp=at, data=delivery.body)
    return {
        "webhook-id": delivery.msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def post(target: targets.Target, body: bytes, headers: dict[str, str]) -> Outcome:
    """One POST to the checked address, no redirects followed; at most
    RESPONSE_KEPT bytes of the answer are read."""
    timeout = settings.WEBHOOK_TIMEOUT_SECONDS
    conn: http.client.HTTPConnection
    if target.scheme == "https":
        conn = http.client.HTTPSConnection(
            target.host, target.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)

    # Connect to the address that was checked, not to a second lookup of the
    # name; TLS still verifies the certificate against the host name.
    def connect_checked(address, timeout=timeout, source_address=None):
        return socket.create_connection((target.address, target.port), timeout, source_address)

    conn._create_connection = connect_checked  # type: ignore[attr-defined]
    # The timeout bounds each socket operation; a receiver trickling its
    # answer a byte at a time would pass every one of them. The whole request
    # gets twice the timeout, then its socket is shut from this timer.
    deadline = 2 * timeout
    cut = threading.Event()

    def cut_off() -> None:
        cut.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    watchdog = threading.Timer(deadline, cut_off)
    watchdog.daemon = True
    started = time.monotonic()
    watchdog.start()
    try:
        conn.request("POST", target.path, body=body, headers=headers)
        response = conn.getresponse()
        kept = response.read(RESPONSE_KEPT)
        if cut.is_set():
            raise TimeoutError
        return Outcome(
            status_code=response.status,
            response_body=kept.decode("utf-8", "replace"),
            duration_ms=int((time.monotonic() - started) * 1000),
        )
    except (OSError, http.client.HTTPException) as exc:
        if cut.is_set():
            message = f"Timeout: no whole answer within {deadline:g} seconds."
        else:
            message = f"{type(exc).__name__}: {str(exc) or type(exc).__name__}"
        return Outcome(error=message[:500], duration_ms=int((time.monotonic() - started) * 1000))
    finally:
        watchdog.cancel()
        conn.close()


def attempt(delivery: Delivery) -> Outcome:
    """Check the target again (its name may resolve elsewhere now) and send."""
    try:
        target = targets.check(delivery.webhook.url)
    except targets.TargetRefused as exc:
        return Outcome(error=f"Refused: {exc}"[:500])
    at = datetime.now(tz=UTC)
    headers = headers_for(delivery, delivery.webhook.secret, at)
    return post(target, delivery.body.encode(), headers)


def record(pk: int, number: int, outcome: Outcome) -> str | None:
    """Store attempt `number` of delivery `pk` and what follows from it: the
    new state, or None if the claim was no longer this sender's."""
    now = timezone.now()
    with transaction.atomic():
        mine = Delivery.objects.filter(pk=pk, attempts=number, state=Delivery.State.PENDING)
        delivery = mine.first()
        if delivery is None:
            return None
        changes: dict = {"last_attempt_at": now, "last_status_code": outcome.status_code}
        if outcome.succeeded:
            changes.update(state=Delivery.State.DELIVERED, delivered_at=now, next_attempt_at=None)
        else:
            retry_at = now + timedelta(seconds=backoff_seconds(number))
            if retry_at > delivery.expires_at:
                changes.update(state=Delivery.State.FAILED, next_attempt_at=None)
            else:
                changes.update(next_attempt_at=retry_at)
        if not mine.update(**changes):
            return None
        DeliveryAttempt.objects.create(
            delivery_id=pk,
            number=number,
            at=now,
            duration_ms=outcome.duration_ms,
            status_code=outcome.status_code,
            response_body=outcome.response_body,
            error=outcome.error,
        )
    return changes.get("state", Delivery.State.PENDING)


def deliver(pk: int, number: int) -> str | None:
    """Send one claimed delivery and record the attempt."""
    delivery = Delivery.objects.select_related("webhook").filter(pk=pk).first()
    if delivery is None:  # its webhook was deleted meanwhile
        return None
    outcome = attempt(delivery)
    state = record(pk, number, outcome)
    logger.info(
        "webhook delivery %s (%s, task %s): attempt %s -> %s %s",
        delivery.msg_id,
        delivery.event,
        delivery.task_id,
        number,
        outcome.status_code or outcome.error,
        state,
    )
    return state


def _deliver_in_thread(pk: int, number: int) -> str | None:
    try:
        return deliver(pk, number)
    except Exception:
        logger.exception("webhook delivery %s failed unexpectedly", pk)
        return None
    finally:
        _release_connection()


def deliver_due(*, pool: ThreadPoolExecutor | None = None) -> int:
    """Claim due deliveries and send them (in `pool`, else one by one).
    Returns how many were claimed."""
    claimed = claim_due()
    if pool is None:
        for pk, number in claimed:
            deliver(pk, number)
    else:
        for _ in pool.map(lambda item: _deliver_in_thread(*item), claimed):
            pass
    return len(claimed)


def _release_connection() -> None:
    conn = connections[DEFAULT_DB_ALIAS]
    if not conn.in_atomic_block:
        conn.close()


def purge_old(*, batch_size: int = 500) -> int:
    """Delete delivered and failed deliveries older than WEBHOOK_KEEP_DAYS
    (0: keep them), at most `batch_size` at a time."""
    days = settings.WEBHOOK_KEEP_DAYS
    if not days:
        return 0
    cutoff = timezone.now() - timedelta(days=days)
    old = Delivery.objects.filter(created_at__lt=cutoff).exclude(state=Delivery.State.PENDING)
    ids = list(old.order_by("created_at").values_list("pk", flat=True)[:batch_size])
    if not ids:
        return 0
    # Checked again at the delete: one redelivered meanwhile is pending.
    deleted, _ = old.filter(pk__in=ids).delete()
    return deleted


class Sender(threading.Thread):
    """Sends due deliveries until the process ends."""

    def __init__(self) -> None:
        super().__init__(name="webhook-sender", daemon=True)
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        next_purge = 0.0
        with ThreadPoolExecutor(PARALLEL, thread_name_prefix="webhook-send") as pool:
            while not self._stopping.is_set():
                claimed = 0
                try:
                    if time.monotonic() >= next_purge:
                        next_purge = time.monotonic() + PURGE_EVERY
                        purge_old()
                    claimed = deliver_due(pool=pool)
                except DatabaseError:
                    logger.warning("webhook sender: database error; next on a new connection")
                    _release_connection()
                except Exception:
                    logger.exception("webhook sender failed")
                # Kept between looks (one per cluster), unless broken or too old.
                try:
                    connection.close_if_unusable_or_obsolete()
                except Exception:
                    logger.debug("webhook sender: dropping its connection", exc_info=True)
                    _release_connection()
                if claimed < BATCH:
                    self._stopping.wait(settings.WEBHOOK_POLL_SECONDS)


_sender: tuple[int, Sender] | None = None
_sender_lock = threading.Lock()


def ensure_sender() -> Sender:
    """This process's sender, started on first use (and again in a forked child)."""
    global _sender
    with _sender_lock:
        if _sender is None or _sender[0] != os.getpid() or not _sender[1].is_alive():
            sender = Sender()
            sender.start()
            _sender = (os.getpid(), sender)
        return _sender[1]
