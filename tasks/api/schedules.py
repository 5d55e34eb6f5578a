"""`/schedules`: the caller's schedules, a DRF viewset."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.response import Response

from config.errors import ErrorSerializer
from config.pagination import MAX_ID, NewestFirst, parse_id

from .. import schedules, selectors
from ..models import Schedule
from .serializers import StrictSerializer

SCHEDULE_ID = OpenApiParameter(
    "id", OpenApiTypes.INT64, OpenApiParameter.PATH, description="The schedule's id."
)
NOT_FOUND = OpenApiResponse(
    ErrorSerializer, description='"Schedule not found" (also for another user\'s schedule).'
)
BAD_ID = OpenApiResponse(ErrorSerializer, description="The id is not an integer.")
INVALID = OpenApiResponse(
    ErrorSerializer, description="Field errors: a bad cron expression, time zone, type or args."
)


class ScheduleWriteSerializer(StrictSerializer):
    """What a client may send; the service checks the schedule as a whole."""

    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    type = serializers.CharField(max_length=100, help_text="A registered task type.")
    args = serializers.DictField(required=False, default=dict, help_text="The type's arguments.")
    cron = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=200,
        help_text="Five cron fields (minute hour day-of-month month day-of-week), "
        "read in `timezone`. Give this or `interval`.",
    )
    interval = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=366 * 86400,
        source="interval_seconds",
        help_text="Fire every this many seconds. Give this or `cron`.",
    )
    timezone = serializers.CharField(
        required=False,
        default="UTC",
        max_length=64,
        source="time_zone",
        help_text="IANA time zone the cron expression is read in (e.g. Europe/Paris).",
    )
    enabled = serializers.BooleanField(required=False, default=True)
    catch_up = serializers.ChoiceField(
        choices=Schedule.CatchUp.choices,
        required=False,
        default=Schedule.CatchUp.ONCE,
        help_text="After downtime: skip missed times, fire once for them all, or each "
        "(at most TASK_SCHEDULE_MAX_CATCH_UP).",
    )
    overlap = serializers.ChoiceField(
        choices=Schedule.Overlap.choices,
        required=False,
        default=Schedule.Overlap.SKIP,
        help_text="skip: a time that comes while the last task is unfinished fires nothing.",
    )
    timeout = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=settings.TASKS["MAX_TIMEOUT"]
    )
    max_retries = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=settings.TASKS["MAX_RETRIES"]
    )
    priority = serializers.IntegerField(required=False, default=0, min_value=-100, max_value=100)
    concurrency_key = serializers.CharField(
        required=False, default="", allow_blank=True, max_length=200
    )

    def validate_args(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("Expected a JSON object.")
        return value


class ScheduleSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(read_only=True)
    url = serializers.SerializerMethodField()
    owner = serializers.CharField(source="owner.get_username", read_only=True)
    interval = serializers.IntegerField(source="interval_seconds", allow_null=True)
    timezone = serializers.CharField(source="time_zone")
    cron = serializers.SerializerMethodField()
    tasks_url = serializers.SerializerMethodField()

    class Meta:
        model = Schedule
        fields = [
            "id",
            "url",
            "owner",
            "name",
            "type",
            "args",
            "cron",
            "interval",
            "timezone",
            "enabled",
            "catch_up",
            "overlap",
            "timeout",
            "max_retries",
            "priority",
            "concurrency_key",
            "next_run_at",
            "last_fired_at",
            "fired_count",
            "skipped_count",
            "tasks_url",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_url(self, schedule) -> str:
        return f"/schedules/{schedule.pk}"

    def get_cron(self, schedule) -> str | None:
        return schedule.cron or None

    def get_tasks_url(self, schedule) -> str:
        return f"/tasks?schedule={schedule.pk}"


class ScheduleFired(serializers.Serializer):
    message = serializers.CharField()
    task_id = serializers.IntegerField()
    schedule_id = serializers.IntegerField()


def get_own_schedule(request, raw_id: str) -> Schedule:
    schedule_id = parse_id(raw_id, "schedule")
    schedule = None
    if 0 < schedule_id <= MAX_ID:
        schedule = selectors.schedule_of(user=request.user, schedule_id=schedule_id)
    if schedule is None:
        raise exceptions.NotFound("Schedule not found")
    return schedule


class ScheduleViewSet(viewsets.GenericViewSet):
    """Schedules of the authenticated user."""

    serializer_class = ScheduleSerializer
    pagination_class = NewestFirst

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Schedule.objects.none()
        return selectors.schedules_of(user=self.request.user)

    def _body(self, request, *, partial: bool) -> dict:
        if not isinstance(request.data, dict):
            raise exceptions.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        incoming = ScheduleWriteSerializer(data=request.data, partial=partial)
        incoming.is_valid(raise_exception=True)
        data = dict(incoming.validated_data)
        if "cron" in data and data["cron"] == "":
            data.pop("cron")
        return data

    def _answer(self, request, schedule, code=status.HTTP_200_OK) -> Response:
        body = ScheduleSerializer(schedule, context={"request": request}).data
        return Response(body, status=code)

    @extend_schema(
        operation_id="schedules_list",
        tags=["schedules"],
        summary="List your schedules (newest first, cursor-paginated)",
        responses={
            200: ScheduleSerializer(many=True),
            400: OpenApiResponse(ErrorSerializer, description="A bad cursor or page size."),
        },
    )
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(
            ScheduleSerializer(page, many=True, context={"request": request}).data
        )

    @extend_schema(
        operation_id="schedules_create",
        tags=["schedules"],
        summary="Create a cron or interval schedule",
        request=ScheduleWriteSerializer,
        responses={201: ScheduleSerializer, 400: INVALID},
    )
    def create(self, request):
        schedule = schedules.create_schedule(
            owner=request.user, **self._body(request, partial=False)
        )
        return self._answer(request, schedule, status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="schedules_retrieve",
        tags=["schedules"],
        summary="One schedule",
        parameters=[SCHEDULE_ID],
        responses={200: ScheduleSerializer, 400: BAD_ID, 404: NOT_FOUND},
    )
    def retrieve(self, request, pk=None):
        return self._answer(request, get_own_schedule(request, pk))

    @extend_schema(
        operation_id="schedules_partial_update",
        tags=["schedules"],
        summary="Edit or pause a schedule (takes effect at once)",
        parameters=[SCHEDULE_ID],
        request=ScheduleWriteSerializer(partial=True),
        responses={200: ScheduleSerializer, 400: INVALID, 404: NOT_FOUND},
    )
    def partial_update(self, request, pk=None):
        schedule = get_own_schedule(request, pk)
        updated = schedules.update_schedule(schedule=schedule, **self._body(request, partial=True))
        return self._answer(request, updated)

    @extend_schema(
        operation_id="schedules_destroy",
        tags=["schedules"],
        summary="Delete a schedule (its tasks stay)",
        parameters=[SCHEDULE_ID],
        responses={204: None, 400: BAD_ID, 404: NOT_FOUND},
    )
    def destroy(self, request, pk=None):
        schedules.delete_schedule(schedule=get_own_schedule(request, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        operation_id="schedules_run",
        tags=["schedules"],
        summary="Fire a schedule now",
        parameters=[SCHEDULE_ID],
        request=None,
        responses={
            202: ScheduleFired,
            400: OpenApiResponse(ErrorSerializer, description="A bad id, or args now invalid."),
            404: NOT_FOUND,
            429: OpenApiResponse(ErrorSerializer, description="You are at the unfinished cap."),
        },
    )
    def run(self, request, pk=None):
        schedule = get_own_schedule(request, pk)
        task = schedules.run_schedule(schedule=schedule)
        return Response(
            {"message": "Task started", "task_id": task.pk, "schedule_id": schedule.pk},
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": f"/tasks/{task.pk}"},
        )
