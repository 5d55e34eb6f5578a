"""`POST /tasks/batch`: many tasks in one request, all or none."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.throttles import TaskCreateThrottle
from config.errors import ErrorSerializer

from .. import services
from .serializers import TaskCreateSerializer, idempotency_key_of, idempotency_key_parameter


@extend_schema_field({"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string"}]})
class DependencyField(serializers.Field):
    """A task id, or "$<index>" naming an earlier item of the batch."""

    default_error_messages = {
        "invalid": 'A task id or "$<index>" of an earlier item.',
    }

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, int):
            if not 0 < data < 2**63:
                self.fail("invalid")
            return data
        if isinstance(data, str) and services.BATCH_REFERENCE.fullmatch(data):
            return data
        self.fail("invalid")

    def to_representation(self, value):
        return value


class BatchItemSerializer(TaskCreateSerializer):
    depends_on = serializers.ListField(
        child=DependencyField(),
        required=False,
        max_length=100,
        help_text='Your task ids, or "$0", "$1"... for earlier items of this batch.',
    )


class BatchSerializer(serializers.Serializer):
    """The request body (documentation; items are checked one by one)."""

    tasks = BatchItemSerializer(many=True, help_text="Each item as for `POST /tasks`.")


class BatchAcceptedSerializer(serializers.Serializer):
    message = serializers.CharField()
    task_ids = serializers.ListField(
        child=serializers.IntegerField(), help_text="The tasks' ids, in the items' order."
    )
    deduplicated = serializers.ListField(
        child=serializers.IntegerField(),
        required=False,
        help_text="Indexes of items answered with an existing task (`unique_key`).",
    )


def _items(data: Any) -> list[dict[str, Any]]:
    """The validated items of a batch body; a 400 listing errors by item index."""
    if not isinstance(data, dict):
        raise exceptions.ValidationError({"non_field_errors": ["Expected a JSON object."]})
    unknown = sorted(set(data) - {"tasks"})
    if unknown:
        raise exceptions.ValidationError({key: ["Unknown field."] for key in unknown})
    raw = data.get("tasks")
    limit = settings.TASKS["MAX_BATCH"]
    if not isinstance(raw, list):
        raise exceptions.ValidationError({"tasks": ["A list of tasks."]})
    if not raw:
        raise exceptions.ValidationError({"tasks": ["Give at least one task."]})
    if len(raw) > limit:
        raise exceptions.ValidationError({"tasks": [f"At most {limit} tasks in one batch."]})
    items, errors = [], {}
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            errors[str(index)] = {"non_field_errors": ["Expected a JSON object."]}
            continue
        serializer = BatchItemSerializer(data=item)
        if not serializer.is_valid():
            errors[str(index)] = serializer.errors
            continue
        data_ = serializer.validated_data
        items.append(
            {
                "type_name": data_["type"],
                "args": data_.get("args"),
                "timeout": data_.get("timeout"),
                "max_retries": data_.get("max_retries"),
                "priority": data_.get("priority", 0),
                "run_at": data_.get("run_at"),
                "delay": data_.get("delay"),
                "concurrency_key": data_.get("concurrency_key", ""),
                "unique_key": data_.get("unique_key"),
                "depends_on": data_.get("depends_on"),
                "on_dependency_failure": data_.get("on_dependency_failure", "cancel"),
            }
        )
    if errors:
        raise exceptions.ValidationError({"tasks": errors})
    return items


class TaskBatchView(APIView):
    throttle_classes = [TaskCreateThrottle]

    @extend_schema(
        operation_id="tasks_batch",
        tags=["tasks"],
        summary="Start many tasks at once (all or none), chains and fan-ins included",
        request=BatchSerializer,
        parameters=[idempotency_key_parameter("batch")],
        responses={
            202: BatchAcceptedSerializer,
            200: OpenApiResponse(
                BatchAcceptedSerializer, description="The batch this Idempotency-Key already made."
            ),
            400: OpenApiResponse(
                ErrorSerializer,
                description="Errors under `fields.tasks`, by item index; nothing was created.",
            ),
            409: OpenApiResponse(
                ErrorSerializer,
                description="A unique_key race (send it again), or an Idempotency-Key "
                "reused with other items.",
            ),
            429: OpenApiResponse(
                ErrorSerializer, description="The items would take you past your unfinished cap."
            ),
        },
    )
    def post(self, request):
        submitted = services.submit_batch(
            owner=request.user,
            items=_items(request.data),
            idempotency_key=idempotency_key_of(request),
        )
        # Items deduplicated onto an unfinished task (or onto each other)
        # started nothing new.
        count = len(submitted.task_ids) - len(submitted.deduplicated)
        started = f"{count} task{'' if count == 1 else 's'} started"
        body: dict[str, Any] = {
            "message": started if submitted.created else "Batch already exists",
            "task_ids": submitted.task_ids,
        }
        if submitted.deduplicated:
            body["deduplicated"] = submitted.deduplicated
        created = status.HTTP_202_ACCEPTED if submitted.created else status.HTTP_200_OK
        return Response(body, status=created)
