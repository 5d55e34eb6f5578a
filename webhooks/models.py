"""Webhook subscriptions and their deliveries (the outbox).

A `Delivery` is written in the same transaction as the task transition it
reports (webhooks.outbox), so an event is never lost; housekeeping's sender
(webhooks.delivery) sends it afterwards, at least once, under one stable
`msg_id` (the `webhook-id` header) however many times it is tried.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

EVENTS = ("task.started", "task.completed", "task.failed", "task.cancelled")


class Webhook(models.Model):
    """A URL that receives signed events of its owner's tasks."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="webhooks",
        db_index=False,  # webhook_owner_id serves it
    )
    url = models.CharField(max_length=2000)
    # Names from EVENTS; the API never stores an empty list.
    events = models.JSONField(default=list)
    # Task type names; empty: every type.
    types = models.JSONField(default=list, blank=True)
    # "whsec_" + base64: the Standard Webhooks secret format. Shown once.
    secret = models.CharField(max_length=100)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # The API lists an owner's webhooks; a finishing task asks
            # whether its owner has any (tasks.statements).
            models.Index(fields=["owner", "-id"], name="webhook_owner_id"),
        ]

    def __str__(self) -> str:
        return f"Webhook {self.pk} -> {self.url}"

    def wants(self, event: str, task_type: str) -> bool:
        return event in self.events and (not self.types or task_type in self.types)


class Delivery(models.Model):
    """One event for one webhook, and where its sending stands."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    webhook = models.ForeignKey(
        Webhook,
        on_delete=models.CASCADE,
        related_name="deliveries",
        db_index=False,  # delivery_webhook_id serves it
    )
    # The `webhook-id` header: the same on every attempt, so a receiver can
    # drop duplicates (delivery is at least once).
    msg_id = models.CharField(max_length=40, unique=True)
    event = models.CharField(max_length=40)
    # Not a foreign key: a delivery outlives its task's retention.
    task_id = models.BigIntegerField(null=True, blank=True)
    # The exact body signed and sent, rendered when the event happened.
    body = models.TextField()
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # Pending: when it is due. While a sender holds it, when that claim runs
    # out (a sender that died mid-send leaves it due again).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Not tried again after this (WEBHOOK_MAX_AGE_HOURS after the event, or
    # after a redelivery).
    expires_at = models.DateTimeField()
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=["webhook", "-id"], name="delivery_webhook_id"),
            # The sender's scan: partial, so delivered and failed rows never weigh on it.
            models.Index(
                fields=["next_attempt_at"], condition=Q(state="pending"), name="delivery_due"
            ),
            # Retention: the oldest deliveries first (webhooks.delivery.purge_old).
            models.Index(fields=["created_at"], name="delivery_created"),
        ]

    def __str__(self) -> str:
        return f"{self.event} of task {self.task_id} ({self.msg_id})"


class DeliveryAttempt(models.Model):
    """One HTTP request of a delivery and what came of it."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    at = models.DateTimeField(default=timezone.now)
    duration_ms = models.PositiveIntegerField(default=0)
    # None: no HTTP answer (refused target, connection error, timeout).
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    # At most RESPONSE_KEPT bytes of the answer's body, decoded leniently.
    response_body = models.TextField(blank=True, default="")
    error = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["delivery", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="delivery_attempt_number"),
        ]

    def __str__(self) -> str:
        return f"Attempt {self.number} of {self.delivery_id}"

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300
