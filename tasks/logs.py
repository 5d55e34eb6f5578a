"""Task log lines: what tasks write with `ctx.log`, stored per task and capped.

A task's lines are numbered (`seq`) from 1 without gaps, so a reader pages
with `after=<seq>` and sees a gap nowhere but where lines were dropped. A
task keeps at most MAX_LOG_LINES lines and MAX_LOG_BYTES bytes of messages;
past either, its oldest lines are deleted and a marker line ("N earlier
lines dropped") takes the seq of the newest line dropped, so a reader that
was behind meets the marker exactly where its lines went missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Sum

from .models import Task, TaskLog

# Longer messages are cut: one line must not eat a task's whole byte cap.
MAX_LINE_CHARS = 4000
MARKER_LEVEL = "DROPPED"


@dataclass(frozen=True)
class Line:
    at: datetime
    level: str
    attempt: int
    message: str


def _size(message: str) -> int:
    return len(message.encode("utf-8", "replace"))


def _clip(message: str) -> str:
    if len(message) <= MAX_LINE_CHARS:
        return message
    return message[: MAX_LINE_CHARS - 1] + "…"


def append(*, task_id: int, lines: list[Line]) -> int:
    """Store `lines` after the task's last one and enforce its caps, in one
    transaction. Returns how many lines were stored (0 if the task is gone)."""
    if not lines:
        return 0
    with transaction.atomic():
        # The task row's lock orders concurrent writers (a late attempt and
        # the current one): seqs are handed out and committed in order.
        if not Task.objects.select_for_update().filter(pk=task_id).exists():
            return 0
        last = TaskLog.objects.filter(task_id=task_id).aggregate(last=Max("seq"))["last"] or 0
        rows = []
        for offset, line in enumerate(lines, start=1):
            message = _clip(line.message)
            rows.append(
                TaskLog(
                    task_id=task_id,
                    seq=last + offset,
                    attempt=line.attempt,
                    level=line.level[:10],
                    at=line.at,
                    message=message,
                    size=_size(message),
                )
            )
        TaskLog.objects.bulk_create(rows)
        _enforce_caps(task_id)
    return len(rows)


def _enforce_caps(task_id: int) -> None:
    max_lines = max(2, settings.TASKS["MAX_LOG_LINES"])
    max_bytes = settings.TASKS["MAX_LOG_BYTES"]
    mine = TaskLog.objects.filter(task_id=task_id)
    totals = mine.aggregate(lines=Count("id"), size=Sum("size"))
    if totals["lines"] <= max_lines and (totals["size"] or 0) <= max_bytes:
        return
    # Newest first, keep what fits beside the marker; everything older goes.
    room_lines, room_bytes = max_lines - 1, max_bytes - 100
    cut = None
    for seq, size in mine.order_by("-seq").values_list("seq", "size"):
        if room_lines <= 0 or size > room_bytes:
            cut = seq
            break
        room_lines -= 1
        room_bytes -= size
    if cut is None:
        return
    mine.filter(seq__lte=cut).delete()
    # Every seq up to `cut` is gone (seqs have no gaps), the marker's own included.
    message = f"{cut} earlier lines dropped (this task keeps its last {max_lines} lines)."
    TaskLog.objects.create(
        task_id=task_id,
        seq=cut,
        attempt=0,
        level=MARKER_LEVEL,
        message=message,
        size=_size(message),
    )


def lines_after(*, task: Task, after: int, limit: int) -> list[TaskLog]:
    """Up to `limit` of the task's lines with a seq above `after`, in order."""
    return list(TaskLog.objects.filter(task=task, seq__gt=after).order_by("seq")[:limit])
