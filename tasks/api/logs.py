"""GET /tasks/{id}/logs: a task's log lines, paged by seq."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ErrorSerializer
from config.pagination import MAX_ID

from .. import selectors
from .views import ID_PARAMETER, NOT_FOUND, get_own_task


class LogParamsSerializer(serializers.Serializer):
    after = serializers.IntegerField(
        default=0,
        min_value=0,
        max_value=MAX_ID,
        help_text="Only lines with a seq above this (the last seq you have; 0: from the start).",
    )
    limit = serializers.IntegerField(
        default=200, min_value=1, max_value=1000, help_text="Most lines in one answer."
    )


class LogLineSerializer(serializers.Serializer):
    seq = serializers.IntegerField(help_text="The line's number in the task's log, from 1.")
    at = serializers.DateTimeField()
    level = serializers.CharField(
        help_text="DEBUG, INFO, WARNING, ERROR, CRITICAL; DROPPED for the marker that "
        "stands for older lines dropped over the caps."
    )
    attempt = serializers.IntegerField(help_text="The attempt that wrote it (0: the marker).")
    message = serializers.CharField()


class LogPageSerializer(serializers.Serializer):
    task_id = serializers.IntegerField()
    results = LogLineSerializer(many=True)
    next_after = serializers.IntegerField(help_text="Pass as `after` for the next lines.")
    has_more = serializers.BooleanField(help_text="More lines are stored already.")
    finished = serializers.BooleanField(
        help_text="The task is finished: once `has_more` is false, no line will follow."
    )


def line_data(line) -> dict:
    return {
        "seq": line.seq,
        "at": line.at,
        "level": line.level,
        "attempt": line.attempt,
        "message": line.message,
    }


class TaskLogsView(APIView):
    @extend_schema(
        operation_id="tasks_logs",
        tags=["tasks"],
        summary="A task's log lines (what it wrote with ctx.log), oldest first",
        parameters=[ID_PARAMETER, LogParamsSerializer],
        responses={
            200: LogPageSerializer,
            400: OpenApiResponse(ErrorSerializer, description="A bad id, `after` or `limit`."),
            404: NOT_FOUND,
        },
    )
    def get(self, request, pk: str):
        task = get_own_task(request, pk)
        params = LogParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        after, limit = params.validated_data["after"], params.validated_data["limit"]
        # One more than asked tells whether another page is stored already.
        lines = selectors.log_lines_of(task=task, after=after, limit=limit + 1)
        page = lines[:limit]
        return Response(
            {
                "task_id": task.pk,
                "results": [line_data(line) for line in page],
                "next_after": page[-1].seq if page else after,
                "has_more": len(lines) > limit,
                "finished": task.is_finished,
            }
        )
