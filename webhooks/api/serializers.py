from __future__ import annotations

from rest_framework import serializers

from tasks.api.serializers import StrictSerializer

from ..models import EVENTS, Delivery, DeliveryAttempt, Webhook
from ..targets import MAX_URL_LENGTH


class StrictListField(serializers.ListField):
    """A list of strings; a string alone is not taken for a list of characters."""

    def to_internal_value(self, data):
        if not isinstance(data, list):
            raise serializers.ValidationError("Expected a list of strings.")
        return super().to_internal_value(data)


class WebhookWriteSerializer(StrictSerializer):
    url = serializers.CharField(
        max_length=MAX_URL_LENGTH,
        trim_whitespace=False,
        help_text="An http(s) URL that resolves to public addresses only "
        "(unless WEBHOOK_ALLOW_PRIVATE).",
    )
    events = StrictListField(
        child=serializers.ChoiceField(choices=EVENTS),
        min_length=1,
        max_length=len(EVENTS),
        help_text="Which task events to send.",
    )
    types = StrictListField(
        child=serializers.CharField(max_length=100),
        required=False,
        max_length=100,
        help_text="Only tasks of these registered types (empty or absent: every type).",
    )
    active = serializers.BooleanField(
        required=False, help_text="false pauses the webhook: no events are recorded for it."
    )


class WebhookSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(read_only=True)
    url = serializers.CharField(read_only=True)
    owner = serializers.CharField(source="owner.get_username", read_only=True)
    deliveries_url = serializers.SerializerMethodField()

    class Meta:
        model = Webhook
        fields = [
            "id",
            "url",
            "owner",
            "events",
            "types",
            "active",
            "deliveries_url",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_deliveries_url(self, webhook) -> str:
        return f"/webhooks/{webhook.pk}/deliveries"


class WebhookCreatedSerializer(WebhookSerializer):
    secret = serializers.CharField(
        read_only=True,
        help_text="The signing secret (Standard Webhooks, whsec_...). Shown only in this answer.",
    )

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class DeliveryAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = ["number", "at", "duration_ms", "status_code", "response_body", "error"]
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(read_only=True)
    webhook_id = serializers.IntegerField(read_only=True)
    attempt_log = DeliveryAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = Delivery
        fields = [
            "id",
            "webhook_id",
            "msg_id",
            "event",
            "task_id",
            "state",
            "attempts",
            "next_attempt_at",
            "expires_at",
            "last_attempt_at",
            "last_status_code",
            "delivered_at",
            "created_at",
            "attempt_log",
        ]
        read_only_fields = fields
