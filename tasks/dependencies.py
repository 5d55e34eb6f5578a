"""Tasks that run after others: `depends_on`.

A dependant is queued with `waiting=True` while any of its parents has not
completed; the claim's partial index leaves waiting tasks out, so they cost
the claim nothing. Whatever finishes a task calls `parents_finished` in the
same transaction (tasks.lifecycle, tasks.services.cancel_task): each of its
waiting dependants is then released (`waiting=False`, claimable at once)
when its last parent completed, or cancelled with an error naming the
parent when one failed or was cancelled, unless it asked for
`on_dependency_failure: run` (then it is released once every parent
finished, however). A cancelled dependant cancels its own dependants in
turn.

Race with a parent finishing while a dependant is being created: the
creating transaction marks the parents `has_dependants` (and locks them:
SQLite runs one writer at a time anyway) before it reads their states, so
a parent's final update waits for the dependant to be committed, and then
finds it. A task nobody depends on completes with one UPDATE, as before.

Race with another parent of the same child finishing at once: `settle`
locks the child before it reads the parents' states (see there).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.db import connection
from django.utils import timezone

from webhooks import outbox

from . import queue
from .models import UNFINISHED, DependencyFailure, Status, Task, TaskDependency

logger = logging.getLogger(__name__)

# Most parents one task may name.
MAX_PARENTS = 100
FAILED_PARENT = frozenset({Status.FAILED, Status.CANCELLED})


def lock_parents(owner, parent_ids: Iterable[int]) -> dict[int, str]:
    """Inside the creating transaction: mark the owner's tasks among
    `parent_ids` as having dependants, which locks their rows (a parent
    cannot finish until this transaction ends), and read their states
    ({id: status}; ids that are not the owner's tasks are left out)."""
    ids = sorted(set(parent_ids))
    if not ids:
        return {}
    mine = Task.objects.filter(pk__in=ids, owner=owner)
    mine.filter(has_dependants=False).update(has_dependants=True)
    if connection.vendor == "postgresql":
        # Those already marked are locked too: FOR SHARE is enough to make
        # their finishing UPDATE wait (the foreign key takes only KEY SHARE).
        sql, params = mine.order_by("pk").values_list("pk", "status").query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(f"{sql} FOR SHARE", params)
            return dict(cursor.fetchall())
    return dict(mine.values_list("pk", "status"))


def parents_finished(parent_ids: Iterable[int]) -> None:
    """Settle the dependants of tasks that just finished (in their transaction)."""
    ids = list(parent_ids)
    if not ids:
        return
    children = list(
        TaskDependency.objects.filter(
            parent_id__in=ids, task__status=Status.QUEUED, task__waiting=True
        )
        .values_list("task_id", flat=True)
        .distinct()
    )
    if children:
        settle(children)


def settle(child_ids: Iterable[int]) -> None:
    """Release or cancel each waiting task of `child_ids` whose parents allow
    it now; cancelled ones pass the cancellation on to their own dependants."""
    pending = list(child_ids)
    while pending:
        # Lock the waiting children first, then read their parents' states
        # in a later statement: two parents finishing at once in two
        # transactions would otherwise each see the other still running and
        # neither release their common child. The second waits here for the
        # first to commit; READ COMMITTED then shows it the first's result.
        waiting = Task.objects.filter(pk__in=pending, status=Status.QUEUED, waiting=True)
        policies = dict(
            waiting.select_for_update().order_by("pk").values_list("pk", "on_dependency_failure")
        )
        parents: dict[int, list[tuple[int, str]]] = defaultdict(list)
        links = TaskDependency.objects.filter(task_id__in=list(policies)).values_list(
            "task_id", "parent_id", "parent__status"
        )
        for child, parent, status in links:
            parents[child].append((parent, status))
        now = timezone.now()
        cancelled: list[int] = []
        for child, policy in policies.items():
            states = parents.get(child, [])
            failed = sorted(p for p, status in states if status in FAILED_PARENT)
            unfinished = [p for p, status in states if status in UNFINISHED]
            if failed and policy != DependencyFailure.RUN:
                if _cancel(child, failed[0], dict(states)[failed[0]], now):
                    cancelled.append(child)
            elif not unfinished:
                _release(child)
        pending = list(
            TaskDependency.objects.filter(
                parent_id__in=cancelled, task__status=Status.QUEUED, task__waiting=True
            )
            .values_list("task_id", flat=True)
            .distinct()
        )


def _cancel(child: int, parent: int, parent_status: str, now) -> bool:
    error = {
        "message": f"Task {parent}, which this task depends on, {parent_status}.",
        "type": "DependencyFailed",
        "traceback": "",
        "task_id": parent,
    }
    moved = Task.objects.filter(pk=child, status=Status.QUEUED, waiting=True).transition(
        Status.CANCELLED, waiting=False, error=error, finished_at=now, lease_expires_at=None
    )
    if moved:
        logger.info("task %s: cancelled, its parent %s %s", child, parent, parent_status)
        outbox.task_event(outbox.CANCELLED, child)
    return bool(moved)


def _release(child: int) -> None:
    released = Task.objects.filter(pk=child, status=Status.QUEUED, waiting=True).update(
        waiting=False, updated_at=timezone.now()
    )
    if not released:
        return
    logger.info("task %s: every task it depends on finished; runnable", child)
    queue_name = Task.objects.filter(pk=child).values_list("queue", flat=True).first()
    if queue_name:
        queue.announce_work(queue_name)


def dependants_of(parent_id: int) -> list[int]:
    """The ids of the tasks that depend on `parent_id` (inline mode runs those
    it released: tasks.worker.run_now, tasks.services.cancel_task)."""
    links = TaskDependency.objects.filter(parent_id=parent_id)
    return list(links.values_list("task_id", flat=True))


def outputs_of_parents(task_id: int) -> dict[int, Any]:
    """{parent id: its output} for a task's parents (None for a parent that
    did not complete: possible with on_dependency_failure=run)."""
    rows = TaskDependency.objects.filter(task_id=task_id).values_list(
        "parent_id", "parent__status", "parent__output"
    )
    return {
        parent: output if status == Status.COMPLETED else None for parent, status, output in rows
    }


def waiting_for(task: Task) -> list[int]:
    """The ids of `task`'s parents that have not completed (none once it runs)."""
    if not task.waiting:
        return []
    links = getattr(task, "_prefetched_objects_cache", {}).get("parent_links")
    if links is not None:
        return sorted(link.parent_id for link in links if link.parent_status != Status.COMPLETED)
    return sorted(
        TaskDependency.objects.filter(task=task)
        .exclude(parent__status=Status.COMPLETED)
        .values_list("parent_id", flat=True)
    )
