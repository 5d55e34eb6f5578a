"""Reads of webhooks, always scoped by owner."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import Delivery, DeliveryAttempt, Webhook


def webhooks_of(*, user) -> QuerySet[Webhook]:
    return Webhook.objects.filter(owner=user).select_related("owner").order_by("-id")


def webhook_of(*, user, webhook_id: int) -> Webhook | None:
    """One of `user`'s webhooks, or None (also for another user's id)."""
    return webhooks_of(user=user).filter(pk=webhook_id).first()


def deliveries_of(*, webhook: Webhook, state: str | None = None) -> QuerySet[Delivery]:
    deliveries = Delivery.objects.filter(webhook=webhook).order_by("-id")
    return deliveries.filter(state=state) if state else deliveries


def delivery_of(*, webhook: Webhook, delivery_id: int) -> Delivery | None:
    return deliveries_of(webhook=webhook).filter(pk=delivery_id).first()


def attempts_of(*, delivery: Delivery) -> QuerySet[DeliveryAttempt]:
    return DeliveryAttempt.objects.filter(delivery=delivery).order_by("-number")
