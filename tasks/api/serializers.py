from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from ..jobs import DEFAULT_TYPE
from ..models import Status, Task, TaskAttempt


class StrictSerializer(serializers.Serializer):
    """Refuses keys it does not know, so a typo is an error, not a silent default."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)


class TaskCreateSerializer(StrictSerializer):
    type = serializers.CharField(
        required=False,
        default=DEFAULT_TYPE,
        max_length=100,
        help_text="A registered task type (see /tasks/types). Defaults to the demo task.",
    )
    args = serializers.JSONField(
        required=False, default=dict, help_text="The type's arguments, a JSON object."
    )
    timeout = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=settings.TASKS["MAX_TIMEOUT"],
        help_text="Seconds before the task is stopped and failed; defaults to the type's.",
    )
    max_retries = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=settings.TASKS["MAX_RETRIES"],
        help_text="Automatic retries after a failure; defaults to the type's.",
    )
    priority = serializers.IntegerField(
        required=False,
        default=0,
        min_value=-100,
        max_value=100,
        help_text="Higher first among delayed tasks and retries that fall due together.",
    )
    run_at = serializers.DateTimeField(
        required=False, help_text="Do not start before this time (ISO 8601)."
    )
    delay = serializers.FloatField(
        required=False,
        min_value=0,
        max_value=30 * 86400,
        help_text="Do not start before this many seconds from now.",
    )

    def validate_args(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("Expected a JSON object.")
        return value

    def validate(self, attrs):
        if "run_at" in attrs and "delay" in attrs:
            raise serializers.ValidationError({"delay": ["Give either run_at or delay, not both."]})
        return attrs


class TaskErrorField(serializers.Field):
    """The task's error; the traceback is shown to staff only."""

    def __init__(self, **kwargs):
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def to_representation(self, value):
        if not value:
            return None
        request = self.context.get("request")
        if request is not None and getattr(request.user, "is_staff", False):
            return value
        return {key: val for key, val in value.items() if key != "traceback"}

    def get_attribute(self, instance):
        return instance.error


class AttemptSerializer(serializers.ModelSerializer):
    error = TaskErrorField()

    class Meta:
        model = TaskAttempt
        fields = ["number", "outcome", "worker", "started_at", "finished_at", "error"]


class TaskSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(read_only=True)
    error = TaskErrorField()
    progress = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = [
            "id",
            "url",
            "type",
            "args",
            "status",
            "progress",
            "output",
            "output_truncated",
            "error",
            "attempts",
            "max_retries",
            "retries_left",
            "timeout",
            "priority",
            "run_at",
            "cancel_requested",
            "idempotency_key",
            "created_at",
            "started_at",
            "finished_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_progress(self, task) -> dict:
        return {"percent": task.progress, "message": task.progress_message}

    def get_url(self, task) -> str:
        return f"/tasks/{task.pk}"


class TaskDetailSerializer(TaskSerializer):
    attempt_log = AttemptSerializer(many=True, read_only=True)

    class Meta(TaskSerializer.Meta):
        fields = [*TaskSerializer.Meta.fields, "attempt_log"]
        read_only_fields = fields


class TaskStartedSerializer(serializers.Serializer):
    message = serializers.CharField()
    task_id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Status.choices)
    type = serializers.CharField()


class TaskStatusSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Status.choices)
    task_id = serializers.IntegerField()
    type = serializers.CharField()
    progress = serializers.IntegerField()
    progress_message = serializers.CharField()
    attempts = serializers.IntegerField()
    run_at = serializers.DateTimeField(allow_null=True)
