import json

from django.contrib import admin, messages
from django.utils.html import format_html

from . import services
from .models import Task, TaskAttempt, WorkerHeartbeat


def pretty(value) -> str:
    if value is None:
        return "-"
    return format_html(
        '<pre style="white-space: pre-wrap; margin: 0">{}</pre>',
        json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True),
    )


class AttemptInline(admin.TabularInline):
    model = TaskAttempt
    extra = 0
    can_delete = False
    fields = ["number", "outcome", "worker", "started_at", "finished_at", "error_message"]
    readonly_fields = fields

    @admin.display(description="error")
    def error_message(self, attempt):
        return (attempt.error or {}).get("message", "")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "type",
        "status",
        "owner",
        "progress",
        "attempts",
        "created_at",
        "finished_at",
        "duration_display",
    ]
    list_filter = ["status", "type", "created_at"]
    search_fields = ["=id", "type", "owner__username", "idempotency_key"]
    date_hierarchy = "created_at"
    list_select_related = ["owner"]
    show_full_result_count = False
    actions = ["cancel_selected", "retry_selected"]
    inlines = [AttemptInline]
    fields = [
        "id",
        "owner",
        "type",
        "status",
        "progress",
        "progress_message",
        "args_pretty",
        "output_pretty",
        "output_truncated",
        "error_pretty",
        "attempts",
        "max_retries",
        "retries_left",
        "lost_count",
        "timeout",
        "priority",
        "run_at",
        "enqueued_at",
        "cancel_requested",
        "lease_expires_at",
        "worker",
        "transport_id",
        "idempotency_key",
        "created_at",
        "started_at",
        "finished_at",
        "updated_at",
    ]
    readonly_fields = fields

    @admin.display(description="args")
    def args_pretty(self, task):
        return pretty(task.args)

    @admin.display(description="output")
    def output_pretty(self, task):
        return pretty(task.output)

    @admin.display(description="error")
    def error_pretty(self, task):
        return pretty(task.error)

    @admin.display(description="duration")
    def duration_display(self, task):
        return str(task.duration).split(".")[0] if task.duration else "-"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # Viewing only: status changes go through the actions below.
        return False

    def _apply(self, request, queryset, service, verb: str) -> None:
        done, refused = 0, []
        for task in queryset:
            try:
                service(task=task)
                done += 1
            except services.ServiceError as exc:
                refused.append(f"#{task.pk}: {exc.message}")
        if done:
            self.message_user(request, f"{verb} {done} task(s).", messages.SUCCESS)
        if refused:
            self.message_user(request, "Refused " + "; ".join(refused), messages.WARNING)

    @admin.action(description="Cancel selected tasks", permissions=["view"])
    def cancel_selected(self, request, queryset):
        self._apply(request, queryset, services.cancel_task, "Cancelled")

    @admin.action(description="Retry selected tasks", permissions=["view"])
    def retry_selected(self, request, queryset):
        self._apply(request, queryset, services.retry_task, "Retried")


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ["name", "host", "pid", "started_at", "last_seen"]
    readonly_fields = list_display

    def has_add_permission(self, request):
        return False
