from __future__ import annotations

import copy
from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema_field
from rest_framework import exceptions, serializers

from .. import dependencies, selectors
from ..jobs import DEFAULT_TYPE
from ..models import DependencyFailure, Status, Task, TaskAttempt


class StrictSerializer(serializers.Serializer):
    """Refuses keys it does not know, so a typo is an error, not a silent default."""

    def get_fields(self):
        # DRF deep-copies every declared field for each serializer, that is
        # builds each field and its validators again on every request: 0.17
        # of the 0.26 ms `POST /tasks` spent validating its body. A shallow
        # copy is enough for plain fields: binding sets attributes of the
        # copy only, and what the copies share (validators, messages, a
        # DictField's child) is only read while validating. A nested
        # serializer holds its own bound fields, so it is still deep-copied.
        return {
            name: copy.deepcopy(field)
            if isinstance(field, serializers.BaseSerializer)
            else copy.copy(field)
            for name, field in self._declared_fields.items()
        }

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)


class SecondsField(serializers.FloatField):
    """A number of seconds. DRF's FloatField takes `true` for 1.0, where its
    IntegerField refuses it: JSON's booleans are no numbers here either."""

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class TaskCreateSerializer(StrictSerializer):
    type = serializers.CharField(
        required=False,
        default=DEFAULT_TYPE,
        max_length=100,
        help_text="A registered task type (see /tasks/types). Defaults to the demo task.",
    )
    args = serializers.DictField(
        required=False,
        default=dict,
        help_text="The type's arguments, a JSON object (see /tasks/types for each type's).",
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
        help_text="-100..100: runnable tasks with a higher priority start first.",
    )
    run_at = serializers.DateTimeField(
        required=False,
        help_text="Do not start before this time (ISO 8601; at most TASK_MAX_DELAY ahead).",
    )
    delay = SecondsField(
        required=False,
        min_value=0,
        max_value=settings.TASKS["MAX_DELAY_SECONDS"],
        help_text="Do not start before this many seconds from now.",
    )
    concurrency_key = serializers.CharField(
        required=False,
        default="",
        allow_blank=True,
        max_length=200,
        help_text="Tasks of this type sharing this key run at most the type's "
        "`key_concurrency` at once (only for types that set it).",
    )
    unique_key = serializers.CharField(
        required=False,
        allow_null=True,
        max_length=255,
        help_text="While you have an unfinished task of this type with this key, "
        "submitting again returns that task (200, `deduplicated: true`).",
    )

    depends_on = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),
        required=False,
        max_length=100,
        help_text="Ids of your tasks that must complete before this one starts.",
    )
    on_dependency_failure = serializers.ChoiceField(
        choices=DependencyFailure.choices,
        required=False,
        default=DependencyFailure.CANCEL,
        help_text="When a task it depends on fails or is cancelled: cancel this one "
        "too (default), or run it anyway once they all finished.",
    )

    def validate_args(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("Expected a JSON object.")
        return value

    def validate(self, attrs):
        if "run_at" in attrs and "delay" in attrs:
            raise serializers.ValidationError({"delay": ["Give either run_at or delay, not both."]})
        return attrs


TASK_ERROR_SCHEMA = {
    "type": "object",
    "nullable": True,
    "description": "Why the task (or attempt) failed; `traceback` is shown to staff only.",
    "properties": {
        "message": {"type": "string"},
        "type": {"type": "string"},
        "traceback": {"type": "string"},
    },
}


@extend_schema_field(TASK_ERROR_SCHEMA)
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


class ProgressSerializer(serializers.Serializer):
    percent = serializers.IntegerField(min_value=0, max_value=100)
    message = serializers.CharField(allow_blank=True)


class TaskSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(read_only=True)
    owner = serializers.CharField(source="owner.get_username", read_only=True)
    error = TaskErrorField()
    progress = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    depends_on = serializers.SerializerMethodField()
    waiting_for = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = [
            "id",
            "url",
            "owner",
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
            "queue",
            "priority",
            "concurrency_key",
            "unique_key",
            "run_at",
            "cancel_requested",
            "idempotency_key",
            "schedule",
            "scheduled_for",
            "depends_on",
            "waiting_for",
            "on_dependency_failure",
            "created_at",
            "started_at",
            "finished_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, task) -> dict:
        return {"percent": task.progress, "message": task.progress_message}

    def get_url(self, task) -> str:
        return f"/tasks/{task.pk}"

    def get_depends_on(self, task) -> list[int]:
        return sorted(link.parent_id for link in task.parent_links.all())

    def get_waiting_for(self, task) -> list[int]:
        """Ids of the tasks it depends on that have not completed yet."""
        return dependencies.waiting_for(task)


class TaskDetailSerializer(TaskSerializer):
    attempt_log = serializers.SerializerMethodField()

    @extend_schema_field(AttemptSerializer(many=True))
    def get_attempt_log(self, task) -> Any:
        attempts = selectors.attempts_of(task=task)
        return AttemptSerializer(attempts, many=True, context=self.context).data

    class Meta(TaskSerializer.Meta):
        fields = [*TaskSerializer.Meta.fields, "attempt_log"]
        read_only_fields = fields


class TaskStartedSerializer(serializers.Serializer):
    message = serializers.CharField(help_text='"Task started" (or "Task already exists").')
    task_id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Status.choices)
    type = serializers.CharField()
    queue = serializers.CharField()
    run_at = serializers.DateTimeField(allow_null=True)
    deduplicated = serializers.BooleanField(
        required=False, help_text="Present and true when `unique_key` returned an existing task."
    )


class TaskStatusSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Status.choices)
    task_id = serializers.IntegerField()
    type = serializers.CharField()
    progress = serializers.IntegerField()
    progress_message = serializers.CharField()
    attempts = serializers.IntegerField()
    run_at = serializers.DateTimeField(allow_null=True)


class TaskCompletedSerializer(serializers.Serializer):
    Task = serializers.CharField(help_text='Always "completed".')
    output = serializers.JSONField(help_text="What the task returned.")
    task_id = serializers.IntegerField()


class TaskNotCompletedSerializer(serializers.Serializer):
    error = serializers.CharField(help_text='"Task not completed yet".')
    code = serializers.CharField(help_text='"not_finished".')
    status = serializers.ChoiceField(choices=[Status.QUEUED, Status.IN_PROGRESS])
    progress = serializers.IntegerField()


class TaskNeverCompletesSerializer(serializers.Serializer):
    error = serializers.CharField()
    code = serializers.CharField(help_text='"conflict".')
    status = serializers.ChoiceField(choices=[Status.FAILED, Status.CANCELLED])


class TaskTypeSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    timeout = serializers.IntegerField(help_text="Default timeout in seconds.")
    max_retries = serializers.IntegerField(help_text="Default automatic retries.")
    queue = serializers.CharField(help_text="The queue its tasks wait in.")
    concurrency = serializers.IntegerField(
        allow_null=True, help_text="Most of its tasks running at once (null: no limit)."
    )
    key_concurrency = serializers.IntegerField(
        allow_null=True,
        help_text="Most of its tasks sharing a `concurrency_key` running at once (null: no limit).",
    )
    retention = serializers.IntegerField(
        allow_null=True,
        help_text="Seconds its finished tasks are kept (null: TASK_RETENTION applies).",
    )
    args_schema = serializers.DictField(help_text="JSON Schema of the type's `args`.")
    args_example = serializers.DictField(help_text="A valid `args` for this type.")


class TaskTypesSerializer(serializers.Serializer):
    types = TaskTypeSerializer(many=True)


ORDERINGS = ["-id", "id", "-created_at", "created_at"]


class TaskListParamsSerializer(serializers.Serializer):
    """Query parameters of the list besides the filters."""

    all = serializers.BooleanField(
        default=False, help_text="Staff only: list every user's tasks, not just your own."
    )
    ordering = serializers.ChoiceField(
        choices=ORDERINGS, required=False, help_text="Sort order; newest first by default."
    )


class TaskRetrieveParamsSerializer(serializers.Serializer):
    wait = serializers.IntegerField(
        default=0,
        min_value=0,
        max_value=30,
        help_text="Answer as soon as the task is finished, or after this many seconds "
        "with its current state (0: at once).",
    )


class IdempotencyKeySerializer(serializers.Serializer):
    key = serializers.RegexField(
        r"^[\x21-\x7e]{1,255}$",
        error_messages={"invalid": "Use 1 to 255 printable ASCII characters without spaces."},
    )


def idempotency_key_of(request) -> str | None:
    """The request's Idempotency-Key header, checked; None when not sent."""
    raw = request.headers.get("Idempotency-Key")
    if raw is None or raw == "":
        return None
    key = IdempotencyKeySerializer(data={"key": raw})
    if not key.is_valid():
        raise exceptions.ValidationError({"Idempotency-Key": key.errors["key"]})
    return key.validated_data["key"]


def idempotency_key_parameter(what: str) -> OpenApiParameter:
    return OpenApiParameter(
        "Idempotency-Key",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        description=f"Send the same key again to get the same {what} back instead of "
        "a second one (printable ASCII, at most 255 characters).",
    )
