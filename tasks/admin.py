"""The operators' view of tasks and workers.

Tasks are never edited by hand: the detail page is read-only and every change
goes through the same services as the API (the cancel and retry actions).
"""

import json
from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models.fields.json import KT
from django.http import HttpResponseNotAllowed
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from . import selectors, services
from .models import Status, Task, WorkerHeartbeat

STATUS_COLOURS = {
    Status.QUEUED: "#666",
    Status.IN_PROGRESS: "#1f6fb2",
    Status.COMPLETED: "#2e7d32",
    Status.FAILED: "#c62828",
    Status.CANCELLED: "#b26a00",
}


def pretty(value) -> str:
    if value is None:
        return "-"
    return format_html(
        '<pre style="white-space: pre-wrap; margin: 0">{}</pre>',
        json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True),
    )


def short_duration(value: timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = value.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f}s"
    return str(timedelta(seconds=round(seconds)))


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "type",
        "status_label",
        "owner_link",
        "progress_display",
        "attempts",
        "created_at",
        "duration_display",
        "error_summary",
    ]
    list_display_links = ["id", "type"]
    list_filter = ["status", "type", "cancel_requested", "created_at"]
    search_fields = ["type", "owner__username", "idempotency_key", "worker"]
    date_hierarchy = "created_at"
    list_select_related = ["owner"]
    # COUNT(*) over millions of rows on every page view is the slow part of a
    # big changelist; the filtered count is enough.
    show_full_result_count = False
    actions = ["cancel_selected", "retry_selected"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "owner_link",
                    "type",
                    "status_label",
                    "progress_display",
                    "cancel_requested",
                ]
            },
        ),
        (
            "Arguments and result",
            {"fields": ["args_pretty", "output_pretty", "output_truncated", "error_display"]},
        ),
        (
            "Attempts",
            {
                "fields": [
                    "attempt_history",
                    "attempts",
                    "max_retries",
                    "retries_left",
                    "lost_count",
                    "timeout",
                ]
            },
        ),
        (
            "Times",
            {
                "fields": [
                    "created_at",
                    "run_at",
                    "started_at",
                    "finished_at",
                    "duration_display",
                    "updated_at",
                ]
            },
        ),
        (
            "Queue",
            {
                "classes": ["collapse"],
                "fields": [
                    "queue",
                    "priority",
                    "turn",
                    "concurrency_key",
                    "unique_key",
                    "claimed_by",
                    "worker",
                    "lease_expires_at",
                    "idempotency_key",
                ],
            },
        ),
    ]
    readonly_fields = [str(field) for _, options in fieldsets for field in options["fields"]]

    @admin.display(description="attempt history")
    def attempt_history(self, task):
        attempts = selectors.attempts_of(task=task)
        if not attempts:
            return "-"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    a.number,
                    a.get_outcome_display(),
                    a.worker or "-",
                    a.started_at or "-",
                    a.finished_at or "-",
                    (a.error or {}).get("message", ""),
                )
                for a in attempts
            ),
        )
        return format_html(
            "<table><thead><tr><th>#</th><th>outcome</th><th>worker</th><th>started</th>"
            "<th>finished</th><th>error</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if term.isdigit():
            # A number is a task id; substring matches on keys and worker
            # names ("host:4242") would bury that one task among others.
            if int(term) > 2**63 - 1:
                return queryset.none(), False
            return queryset.filter(pk=int(term)), False
        return super().get_search_results(request, queryset, search_term)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match and match.url_name == "tasks_task_changelist":
            # A page of 100 rows must not load 100 outputs of up to
            # MAX_OUTPUT_BYTES each; the list shows the error message only.
            queryset = queryset.defer("args", "output", "error").annotate(
                error_message=KT("error__message")
            )
        return queryset

    @admin.display(description="status", ordering="status")
    def status_label(self, task):
        label = format_html(
            '<strong style="color: {}">{}</strong>',
            STATUS_COLOURS.get(task.status, "inherit"),
            task.get_status_display(),
        )
        if task.cancel_requested and not task.is_finished:
            return format_html("{} (cancel requested)", label)
        return label

    @admin.display(description="owner", ordering="owner__username")
    def owner_link(self, task):
        opts = task.owner._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[task.owner_id])
        return format_html('<a href="{}">{}</a>', url, task.owner)

    @admin.display(description="progress", ordering="progress")
    def progress_display(self, task):
        if task.progress_message:
            return f"{task.progress}% · {Truncator(task.progress_message).chars(40)}"
        return f"{task.progress}%"

    @admin.display(description="duration")
    def duration_display(self, task):
        return short_duration(task.duration)

    @admin.display(description="error")
    def error_summary(self, task):
        message = getattr(task, "error_message", None)
        if message is None and "error" not in task.get_deferred_fields():
            message = (task.error or {}).get("message")
        return Truncator(message).chars(80) if message else ""

    @admin.display(description="args")
    def args_pretty(self, task):
        return pretty(task.args)

    @admin.display(description="output")
    def output_pretty(self, task):
        return pretty(task.output)

    @admin.display(description="error")
    def error_display(self, task):
        if not task.error:
            return "-"
        # The traceback is a string with newlines; inside pretty JSON it would
        # show as one long line of "\n"s, so it gets its own block.
        error = dict(task.error)
        traceback = error.pop("traceback", "")
        return format_html(
            "{}{}",
            pretty(error),
            format_html('<pre style="white-space: pre-wrap; margin: 0.5em 0 0">{}</pre>', traceback)
            if traceback
            else "",
        )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # A task's page is read-only for everyone (Django then shows it to
        # whoever may view or change tasks). The "change" permission is what
        # the cancel and retry actions on the list require.
        if obj is not None:
            return False
        return super().has_change_permission(request)

    def has_delete_permission(self, request, obj=None):
        # Deleting a running task would pull its row from under its worker.
        # This also refuses deleting a user who still has unfinished tasks.
        if obj is not None and not obj.is_finished:
            return False
        return super().has_delete_permission(request, obj)

    # --- Cancel and retry buttons on a task's page -----------------------------

    def get_urls(self):
        own = [
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name="tasks_task_cancel",
            ),
            path(
                "<path:object_id>/retry/",
                self.admin_site.admin_view(self.retry_view),
                name="tasks_task_retry",
            ),
        ]
        return own + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        task = self.get_object(request, unquote(object_id))
        buttons = []
        if task is not None and self.has_change_permission(request):
            if not task.is_finished and not task.cancel_requested:
                buttons.append(("cancel", "Cancel task", "admin:tasks_task_cancel"))
            if task.status in (Status.FAILED, Status.CANCELLED):
                buttons.append(("retry", "Retry task", "admin:tasks_task_retry"))
        extra_context = {
            **(extra_context or {}),
            "task_actions": [
                {"name": name, "label": label, "url": reverse(url_name, args=[task.pk])}
                for name, label, url_name in buttons
            ],
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def cancel_view(self, request, object_id):
        return self._task_button(request, object_id, services.cancel_task)

    def retry_view(self, request, object_id):
        return self._task_button(request, object_id, services.retry_task)

    def _task_button(self, request, object_id, service):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request):
            raise PermissionDenied
        task = self.get_object(request, unquote(object_id))
        if task is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        try:
            task = service(task=task)
        except services.ServiceError as exc:
            self.message_user(request, exc.message, messages.WARNING)
        else:
            if task.status == Status.IN_PROGRESS and task.cancel_requested:
                done = "asked to stop; it ends at its next cancellation check"
            else:
                done = f"now {task.get_status_display().lower()}"
            self.message_user(request, f"Task {task.pk} is {done}.", messages.SUCCESS)
        return redirect(reverse("admin:tasks_task_change", args=[task.pk]))

    # --- Actions on the list ---------------------------------------------------------

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

    @admin.action(description="Cancel selected tasks", permissions=["change"])
    def cancel_selected(self, request, queryset):
        self._apply(request, queryset, services.cancel_task, "Cancelled")

    @admin.action(description="Retry selected tasks", permissions=["change"])
    def retry_selected(self, request, queryset):
        self._apply(request, queryset, services.retry_task, "Retried")


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ["name", "alive", "host", "pid", "started_at", "last_seen", "running_tasks"]
    readonly_fields = ["name", "host", "pid", "started_at", "last_seen"]
    ordering = ["-last_seen"]

    @admin.display(boolean=True, description="alive")
    def alive(self, beat):
        stale = timedelta(seconds=settings.TASKS["WORKER_STALE_SECONDS"])
        return beat.last_seen >= timezone.now() - stale

    @admin.display(description="running tasks")
    def running_tasks(self, beat):
        query = urlencode({"worker": beat.name, "status__exact": Status.IN_PROGRESS})
        url = reverse("admin:tasks_task_changelist") + "?" + query
        return format_html('<a href="{}">tasks in progress</a>', url)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
