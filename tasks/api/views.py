from __future__ import annotations

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, filters, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.throttles import TaskCreateThrottle
from config.errors import ErrorSerializer
from config.pagination import MAX_ID, NewestFirst, parse_id
from config.waits import LoopWait, drf_finish, waits_on_loop

from .. import registry, selectors, services
from ..models import Status, Task
from .filters import TaskFilter
from .schema import example_args
from .serializers import (
    ORDERINGS,
    TaskCompletedSerializer,
    TaskCreateSerializer,
    TaskDetailSerializer,
    TaskListParamsSerializer,
    TaskNeverCompletesSerializer,
    TaskNotCompletedSerializer,
    TaskRetrieveParamsSerializer,
    TaskSerializer,
    TaskStartedSerializer,
    TaskStatusSerializer,
    TaskTypesSerializer,
    idempotency_key_of,
    idempotency_key_parameter,
)

ID_PARAMETER = OpenApiParameter(
    "id", OpenApiTypes.INT64, OpenApiParameter.PATH, description="The task's id."
)
BAD_ID = OpenApiResponse(ErrorSerializer, description="The id is not an integer.")
NOT_FOUND = OpenApiResponse(
    ErrorSerializer, description='"Task not found" (also for another user\'s task).'
)
CONFLICT = OpenApiResponse(ErrorSerializer, description="Not possible in the task's state.")


def parse_task_id(raw: str) -> int:
    return parse_id(raw, "task")


def get_own_task(request, raw_id: str) -> Task:
    task_id = parse_task_id(raw_id)
    task = None
    if 0 < task_id <= MAX_ID:
        task = selectors.task_of(user=request.user, task_id=task_id)
    if task is None:
        raise exceptions.NotFound("Task not found")
    return task


class TaskOrdering(filters.OrderingFilter):
    """Lets cursor pagination follow `?ordering=`; the value itself is
    validated (400 when unknown) by TaskListParamsSerializer."""

    ordering_fields = ["id", "created_at"]

    def get_schema_operation_parameters(self, view):
        return []  # documented explicitly on the list operation


class TaskViewSet(viewsets.GenericViewSet):
    """Tasks of the authenticated user."""

    serializer_class = TaskSerializer
    pagination_class = NewestFirst
    filter_backends = [TaskOrdering, DjangoFilterBackend]
    filterset_class = TaskFilter
    ordering_fields = ["id", "created_at"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Task.objects.none()
        params = TaskListParamsSerializer(data=self.request.query_params)
        params.is_valid(raise_exception=True)
        if params.validated_data["all"]:
            return selectors.all_tasks_for_staff(user=self.request.user)
        return selectors.tasks_of(user=self.request.user)

    def get_throttles(self):
        if self.action == "create":
            return [TaskCreateThrottle()]
        return super().get_throttles()

    @extend_schema(
        operation_id="tasks_list",
        tags=["tasks"],
        summary="List your tasks (newest first, cursor-paginated)",
        parameters=[
            TaskListParamsSerializer,
            OpenApiParameter(
                "ordering", OpenApiTypes.STR, enum=ORDERINGS, description="Sort order."
            ),
        ],
        responses={
            200: TaskSerializer(many=True),
            400: OpenApiResponse(
                ErrorSerializer, description="A bad filter value, cursor or page size."
            ),
            403: OpenApiResponse(ErrorSerializer, description="`all=true` by a non-staff user."),
        },
    )
    def list(self, request):
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(
            TaskSerializer(page, many=True, context={"request": request}).data
        )

    @extend_schema(
        operation_id="tasks_create",
        tags=["tasks"],
        summary="Start a task (an empty body starts the demo task)",
        request=TaskCreateSerializer,
        parameters=[
            idempotency_key_parameter("task"),
            OpenApiParameter(
                "Location",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                response=[200, 202],
                description="The task's URL, /tasks/{id}.",
            ),
        ],
        responses={
            202: TaskStartedSerializer,
            200: OpenApiResponse(
                TaskStartedSerializer,
                description="The task this Idempotency-Key already made, or your unfinished "
                "task with this `unique_key` (`deduplicated: true`).",
            ),
            400: OpenApiResponse(
                ErrorSerializer,
                description="A bad body: unknown type, invalid args (under `fields`), "
                "args too large.",
            ),
            409: OpenApiResponse(
                ErrorSerializer, description="Idempotency-Key reused with a different request."
            ),
            429: OpenApiResponse(
                ErrorSerializer,
                description="Throttled (see Retry-After), or too many unfinished tasks.",
            ),
        },
    )
    def create(self, request):
        serializer = TaskCreateSerializer(data=request.data)
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
            idempotency_key=idempotency_key_of(request),
            concurrency_key=data.get("concurrency_key", ""),
            unique_key=data.get("unique_key"),
            depends_on=data.get("depends_on"),
            on_dependency_failure=data.get("on_dependency_failure", "cancel"),
        )
        task = submitted.task
        body = {
            "message": "Task started" if submitted.created else "Task already exists",
            "task_id": task.pk,
            "status": task.status,
            "type": task.type,
            "queue": task.queue,
            "run_at": task.run_at,
        }
        if submitted.deduplicated:
            body["deduplicated"] = True
        return Response(
            body,
            status=status.HTTP_202_ACCEPTED if submitted.created else status.HTTP_200_OK,
            headers={"Location": f"/tasks/{task.pk}"},
        )

    @extend_schema(
        operation_id="tasks_retrieve",
        tags=["tasks"],
        summary="One task with all its fields (optionally waiting for it to finish)",
        parameters=[ID_PARAMETER, TaskRetrieveParamsSerializer],
        responses={
            200: TaskDetailSerializer,
            400: OpenApiResponse(ErrorSerializer, description="A bad id or `wait` value."),
            404: NOT_FOUND,
        },
    )
    def retrieve(self, request, pk=None):
        task = get_own_task(request, pk)
        params = TaskRetrieveParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        wait = params.validated_data["wait"]
        if wait and not task.is_finished:
            user, task_id = request.user, task.pk
            if waits_on_loop(request):
                # Under `make serve` the wait holds no request thread.
                return LoopWait(
                    wait=lambda: selectors.atask_of_when_finished(
                        user=user, task_id=task_id, wait=wait
                    ),
                    finish=lambda found: drf_finish(
                        self, request, lambda: self._detail(request, found)
                    ),
                )
            task = selectors.task_of_when_finished(user=user, task_id=task_id, wait=wait)
        return self._detail(request, task)

    @staticmethod
    def _detail(request, task: Task | None) -> Response:
        if task is None:  # deleted while we waited
            raise exceptions.NotFound("Task not found")
        return Response(TaskDetailSerializer(task, context={"request": request}).data)

    @extend_schema(
        operation_id="tasks_cancel",
        tags=["tasks"],
        summary="Cancel a queued task, or ask a running one to stop",
        parameters=[ID_PARAMETER],
        request=None,
        responses={200: TaskSerializer, 400: BAD_ID, 404: NOT_FOUND, 409: CONFLICT},
    )
    def cancel(self, request, pk=None):
        task = services.cancel_task(task=get_own_task(request, pk))
        return Response(TaskSerializer(task, context={"request": request}).data)

    @extend_schema(
        operation_id="tasks_retry",
        tags=["tasks"],
        summary="Run a failed or cancelled task again",
        parameters=[ID_PARAMETER],
        request=None,
        responses={
            202: TaskSerializer,
            400: BAD_ID,
            404: NOT_FOUND,
            409: CONFLICT,
            429: OpenApiResponse(ErrorSerializer, description="You are at the unfinished cap."),
        },
    )
    def retry(self, request, pk=None):
        task = services.retry_task(task=get_own_task(request, pk))
        return Response(
            TaskSerializer(task, context={"request": request}).data,
            status=status.HTTP_202_ACCEPTED,
        )


class TaskTypesView(APIView):
    """The catalogue: every registered task type with its defaults and the
    JSON Schema of its arguments."""

    @extend_schema(
        operation_id="task_types",
        tags=["tasks"],
        summary="The task types you can start, with their argument schemas",
        responses={200: TaskTypesSerializer},
    )
    def get(self, request):
        types = [
            {
                "name": t.name,
                "description": t.description,
                "timeout": t.timeout,
                "max_retries": t.max_retries,
                "queue": t.queue,
                "concurrency": t.concurrency,
                "key_concurrency": t.key_concurrency,
                "retention": int(t.retention.total_seconds()) if t.retention else None,
                "args_schema": t.args_schema(),
                "args_example": example_args(t),
            }
            for t in registry.all_types()
        ]
        return Response({"types": types})


class TaskStatusView(APIView):
    """The original status route: `{"status": ...}` plus progress."""

    @extend_schema(
        operation_id="tasks_status",
        tags=["original"],
        summary="A task's status (original route)",
        parameters=[ID_PARAMETER],
        responses={200: TaskStatusSerializer, 400: BAD_ID, 404: NOT_FOUND},
    )
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
    """The original output route: 200 once completed, 202 while it may still
    complete, 409 once it never will."""

    @extend_schema(
        operation_id="tasks_completed",
        tags=["original"],
        summary="A completed task's output (original route)",
        parameters=[ID_PARAMETER],
        responses={
            200: TaskCompletedSerializer,
            202: OpenApiResponse(
                TaskNotCompletedSerializer, description="Queued or running: ask again later."
            ),
            400: BAD_ID,
            404: NOT_FOUND,
            409: OpenApiResponse(
                TaskNeverCompletesSerializer, description="Failed or cancelled: it never will."
            ),
        },
    )
    def get(self, request, pk: str):
        task = get_own_task(request, pk)
        if task.status == Status.COMPLETED:
            return Response({"Task": "completed", "output": task.output, "task_id": task.pk})
        if task.status in (Status.QUEUED, Status.IN_PROGRESS):
            return Response(
                {
                    "error": "Task not completed yet",
                    "code": "not_finished",
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
                "code": "conflict",
                "status": task.status,
            },
            status=status.HTTP_409_CONFLICT,
        )
