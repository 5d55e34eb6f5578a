"""What users do with webhooks: subscribe, edit, delete, redeliver."""

from __future__ import annotations

import base64
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from tasks import registry
from tasks.services import ServiceError

from . import targets
from .models import EVENTS, Delivery, Webhook

# Random bytes in a secret (Standard Webhooks asks for 24 to 64).
SECRET_BYTES = 32
MAX_TYPES = 100


class InvalidWebhook(ServiceError):
    """Field errors, under `fields`."""

    code = "invalid"

    def __init__(self, fields: dict[str, Any]) -> None:
        super().__init__("Invalid input: " + ", ".join(sorted(fields)) + ".", fields=fields)


class TooManyWebhooks(ServiceError):
    status = 429
    code = "cap_reached"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _check(*, url: str | None, events: Any, types: Any) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if url is not None:
        try:
            targets.check(url)
        except targets.TargetRefused as exc:
            errors["url"] = [str(exc)]
    if events is not None:
        unknown = sorted(set(events) - set(EVENTS))
        if not events:
            errors["events"] = [f"Name at least one of {', '.join(EVENTS)}."]
        elif unknown:
            errors["events"] = [f"Unknown events {unknown}; known: {', '.join(EVENTS)}."]
    if types is not None:
        unknown = sorted(name for name in set(types) if registry.get_type(name) is None)
        if len(types) > MAX_TYPES:
            errors["types"] = [f"At most {MAX_TYPES} types."]
        elif unknown:
            errors["types"] = [f"Unknown task types {unknown} (see GET /tasks/types)."]
    return errors


def create_webhook(
    *, owner, url: str, events: list[str], types: list[str] | None = None
) -> Webhook:
    """Subscribe `owner` to events of their tasks. The answer is the only
    place the secret is shown."""
    types = types or []
    errors = _check(url=url, events=events, types=types)
    if errors:
        raise InvalidWebhook(errors)
    with transaction.atomic():
        cap = settings.WEBHOOK_MAX_PER_USER
        # The owner's row lock: two creates at once cannot both pass the cap.
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        if cap and Webhook.objects.filter(owner=owner).count() >= cap:
            raise TooManyWebhooks(
                f"You already have {cap} webhooks (WEBHOOK_MAX_PER_USER); delete one first.",
                limit=cap,
            )
        return Webhook.objects.create(
            owner=owner,
            url=url,
            events=sorted(set(events), key=EVENTS.index),
            types=sorted(set(types)),
            secret=new_secret(),
        )


def update_webhook(
    *,
    webhook: Webhook,
    url: str | None = None,
    events: list[str] | None = None,
    types: list[str] | None = None,
    active: bool | None = None,
) -> Webhook:
    """Change what a webhook receives, or pause it (`active`: false)."""
    errors = _check(url=url, events=events, types=types)
    if errors:
        raise InvalidWebhook(errors)
    changes: dict[str, Any] = {"updated_at": timezone.now()}
    if url is not None:
        changes["url"] = url
    if events is not None:
        changes["events"] = sorted(set(events), key=EVENTS.index)
    if types is not None:
        changes["types"] = sorted(set(types))
    if active is not None:
        changes["active"] = active
    Webhook.objects.filter(pk=webhook.pk).update(**changes)
    webhook.refresh_from_db()
    return webhook


def delete_webhook(*, webhook: Webhook) -> None:
    """Delete a webhook and its deliveries (pending ones are not sent)."""
    webhook.delete()


def redeliver(*, delivery: Delivery) -> Delivery:
    """Send a delivery again soon, with the same `webhook-id` and body, and
    a fresh WEBHOOK_MAX_AGE_HOURS of retries."""
    now = timezone.now()
    Delivery.objects.filter(pk=delivery.pk).update(
        state=Delivery.State.PENDING,
        next_attempt_at=now,
        expires_at=now + timedelta(hours=settings.WEBHOOK_MAX_AGE_HOURS),
    )
    delivery.refresh_from_db()
    return delivery
