from __future__ import annotations

from rest_framework import exceptions, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import selectors, services
from ..models import Status, Task
from .serializers import (
    TaskCreateSerializer,
    TaskDetailSerializer,
    TaskSerializer,
)

# Ids are bigints; a larger number cannot name a task, so it is simply not found.
MAX_ID = 2**63 - 1


def parse_task_id(raw: str) -> int:
    if not isinstance(raw, str) or not raw.isascii() or not raw.lstrip("-").isdigit():
        raise exceptions.ValidationError({"id": ["A task id is an integer."]})
    return int(raw)


def get_own_task(request, raw_id: str) -> Task:
    task_id = parse_task_id(raw_id)
    task = None
    if 0 < task_id <= MAX_ID:
        task = selectors.task_of(user=request.user, task_id=task_id)
    if task is None:
        raise exceptions.NotFound("Task not found")
    return task


class NewestFirst(CursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class TaskViewSet(viewsets.GenericViewSet):
    """Tasks of the authenticated user."""

    serializer_class = TaskSerializer
    pagination_class = NewestFirst

    def get_queryset(self):
        queryset = selectors.tasks_of(user=self.request.user)
        params = self.request.query_params
        if "status" in params:
            wanted = params.getlist("status")
            bad = [s for s in wanted if s not in Status.values]
            if bad:
                raise exceptions.ValidationError(
                    {"status": [f"Unknown status {bad[0]!r}; one of {', '.join(Status.values)}."]}
                )
            queryset = queryset.filter(status__in=wanted)
        if "type" in params:
            queryset = queryset.filter(type__in=params.getlist("type"))
        return queryset

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(
            TaskSerializer(page, many=True, context={"request": request}).data
        )

    def create(self, request):
        body = request.data if request.data is not None else {}
        serializer = TaskCreateSerializer(data=body)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        submitted = services.submit_task(
            owner=request.user,
            type_name=data["type"],
            args=data.get("args"),
            timeout=data.get("timeout"),
            max_retries=data.get("max_retries"),
            priority=data.get("priority", 0),
            run_at=data.get("run_at"),
            delay=data.get("delay"),
            idempotency_key=request.headers.get("Idempotency-Key") or None,
        )
        task = submitted.task
        body = {
            "message": "Task started" if submitted.created else "Task already exists",
            "task_id": task.pk,
            "status": task.status,
            "type": task.type,
            "run_at": task.run_at,
        }
        return Response(
            body,
            status=status.HTTP_202_ACCEPTED if submitted.created else status.HTTP_200_OK,
            headers={"Location": f"/tasks/{task.pk}"},
        )

    def retrieve(self, request, pk=None):
        task = get_own_task(request, pk)
        return Response(TaskDetailSerializer(task, context={"request": request}).data)

    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        task = services.cancel_task(task=get_own_task(request, pk))
        return Response(TaskSerializer(task, context={"request": request}).data)

    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        task = services.retry_task(task=get_own_task(request, pk))
        return Response(
            TaskSerializer(task, context={"request": request}).data,
            status=status.HTTP_202_ACCEPTED,
        )


class TaskStatusView(APIView):
    """The seed's status route: `{"status": ...}` plus progress."""

    def get(self, request, pk: str):
        task = get_own_task(request, pk)
        return Response(
            {
                "status": task.status,
                "task_id": task.pk,
                "type": task.type,
                "progress": task.progress,
                "progress_message": task.progress_message,
                "attempts": task.attempts,
                "run_at": task.run_at,
            }
        )


class TaskCompletedView(APIView):
    """The seed's output route: 200 once completed, 202 while it may still
    complete, 409 once it never will."""

    def get(self, request, pk: str):
        task = get_own_task(request, pk)
        if task.status == Status.COMPLETED:
            return Response({"Task": "completed", "output": task.output, "task_id": task.pk})
        if task.status in (Status.QUEUED, Status.IN_PROGRESS):
            return Response(
                {
                    "error": "Task not completed yet",
                    "status": task.status,
                    "progress": task.progress,
                },
                status=status.HTTP_202_ACCEPTED,
            )
        error = (task.error or {}).get("message", "")
        return Response(
            {
                "error": f"Task {task.status}; it will not complete."
                + (f" {error}" if error else ""),
                "status": task.status,
            },
            status=status.HTTP_409_CONFLICT,
        )
