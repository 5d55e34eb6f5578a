"""Recording task events for webhooks, in the transaction of the transition.

Every place that moves a task to running, completed, failed or cancelled
calls `task_event` in the same transaction, after the move: one `Delivery`
row per matching subscription, so an event is committed with its
transition or not at all, and the sender (webhooks.delivery) picks it up
later; a slow receiver never delays a task.

Owners without webhooks must pay nearly nothing on the two hot paths
(starting and completing an attempt): those keep their single UPDATE, with
a NOT EXISTS probe of this app's owner index in its condition
(tasks.statements). Only when that UPDATE moves nothing (the owner has a
webhook, or the attempt is no longer ours) do they take the slower path
that records events.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from .models import EVENTS, Delivery, Webhook

STARTED, COMPLETED, FAILED, CANCELLED = EVENTS
# The event a task's new status reports (an automatic retry reports nothing).
FOR_STATUS = {"completed": COMPLETED, "failed": FAILED, "cancelled": CANCELLED}


def new_msg_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


# The API's serializer of one task (`GET /tasks/{id}`), so that a body shows
# exactly what a GET would. Set by WebhooksConfig.ready(): the API layer
# imports the lifecycle that calls this module, so it is not imported here.
task_serializer: Any = None


def _render(event: str, task, at) -> str:
    """The body of `event`: the task as `GET /tasks/{id}` shows it now (no
    request: the traceback is left out, as for any non-staff reader)."""
    body = {"type": event, "timestamp": at.isoformat(), "data": task_serializer(task).data}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str)


def task_event(event: str, task_id: int, *, owner_id: int | None = None) -> int:
    """Record `event` of a task for each of its owner's webhooks that want
    it; call inside the transaction that made the transition. Returns how
    many deliveries were recorded. An owner without webhooks costs one
    indexed query (two when `owner_id` is not given)."""
    from tasks.models import Task
    from tasks.selectors import tasks_of

    if owner_id is None:
        owner_id = Task.objects.filter(pk=task_id).values_list("owner_id", flat=True).first()
        if owner_id is None:
            return 0
    hooks = list(Webhook.objects.filter(owner_id=owner_id, active=True).order_by("id"))
    if not hooks:
        return 0
    task = tasks_of(user=owner_id).filter(pk=task_id).first()
    if task is None:
        return 0
    hooks = [hook for hook in hooks if hook.wants(event, task.type)]
    if not hooks:
        return 0
    now = timezone.now()
    body = _render(event, task, now)
    expires = now + timedelta(hours=settings.WEBHOOK_MAX_AGE_HOURS)
    Delivery.objects.bulk_create(
        Delivery(
            webhook=hook,
            msg_id=new_msg_id(),
            event=event,
            task_id=task_id,
            body=body,
            next_attempt_at=now,
            expires_at=expires,
            created_at=now,
        )
        for hook in hooks
    )
    return len(hooks)
