from django.urls import re_path

from .batch import TaskBatchView
from .events import OwnerEventsView, TaskEventsView
from .logs import TaskLogsView
from .operations import HealthView, MetricsView
from .schedules import ScheduleViewSet
from .views import TaskCompletedView, TaskStatusView, TaskTypesView, TaskViewSet

# Every route answers with and without a trailing slash: a redirect would
# turn a POST into a GET and lose the task.
ID = r"(?P<pk>[^/]+)"

task_list = TaskViewSet.as_view({"get": "list", "post": "create"})
task_detail = TaskViewSet.as_view({"get": "retrieve"})
task_cancel = TaskViewSet.as_view({"post": "cancel"})
task_retry = TaskViewSet.as_view({"post": "retry"})
schedule_list = ScheduleViewSet.as_view({"get": "list", "post": "create"})
schedule_detail = ScheduleViewSet.as_view(
    {"get": "retrieve", "patch": "partial_update", "delete": "destroy"}
)
schedule_run = ScheduleViewSet.as_view({"post": "run"})

urlpatterns = [
    re_path(r"^tasks/?$", task_list, name="task-list"),
    # Before tasks/{id}, which would otherwise take "types" for an id.
    re_path(r"^tasks/types/?$", TaskTypesView.as_view(), name="task-types"),
    re_path(r"^tasks/batch/?$", TaskBatchView.as_view(), name="task-batch"),
    re_path(rf"^tasks/status/{ID}/?$", TaskStatusView.as_view(), name="task-status"),
    re_path(rf"^tasks/completed/{ID}/?$", TaskCompletedView.as_view(), name="task-completed"),
    re_path(rf"^tasks/{ID}/cancel/?$", task_cancel, name="task-cancel"),
    re_path(rf"^tasks/{ID}/retry/?$", task_retry, name="task-retry"),
    re_path(rf"^tasks/{ID}/logs/?$", TaskLogsView.as_view(), name="task-logs"),
    re_path(rf"^tasks/{ID}/events/?$", TaskEventsView.as_view(), name="task-events"),
    re_path(r"^events/?$", OwnerEventsView.as_view(), name="events"),
    re_path(rf"^tasks/{ID}/?$", task_detail, name="task-detail"),
    re_path(r"^schedules/?$", schedule_list, name="schedule-list"),
    re_path(rf"^schedules/{ID}/run/?$", schedule_run, name="schedule-run"),
    re_path(rf"^schedules/{ID}/?$", schedule_detail, name="schedule-detail"),
    re_path(r"^health/?$", HealthView.as_view(), name="health"),
    re_path(r"^metrics/?$", MetricsView.as_view(), name="metrics"),
]
