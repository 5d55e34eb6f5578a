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
from django.db.models import OuterRef, Subquery
from django.db.models.fields.json import KT
from django.http import HttpResponseNotAllowed, JsonResponse
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator
from django.views.decorators.cache import never_cache

from config.errors import json_error

from . import display, registry, schedules, selectors, services
from .display import STATUS_COLOURS
from .models import Schedule, Status, Task, WorkerHeartbeat

# Log lines the task page shows (the API pages through all of them).
LOG_TAIL = 200
# How often an unfinished task's page fetches its progress and new log lines.
LIVE_REFRESH_MS = 2000


class _NameFilter(admin.SimpleListFilter):
    """Tasks whose field named like the parameter equals one of `names()`;
    a value from the URL that is no longer among them stays selectable."""

    def names(self) -> list[str]:
        return []

    def lookups(self, request, model_admin):
        names = self.names()
        if self.value() and self.value() not in names:
            names.append(self.value())
        return [(name, name) for name in names]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(**{self.parameter_name: self.value()})
        return queryset


class QueueFilter(_NameFilter):
    title = "queue"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        # The queues the task types name and those holding queued tasks:
        # a handful, without a DISTINCT over the whole table.
        names = {t.queue for t in registry.all_types()} | set(selectors.queue_depths())
        return [(name, name) for name in sorted(names)]


class WorkerFilter(_NameFilter):
    title = "worker"
    parameter_name = "worker"

    def names(self) -> list[str]:
        return [w.heartbeat.name for w in selectors.live_workers()]


class ClusterFilter(_NameFilter):
    title = "claimed by (cluster)"
    parameter_name = "claimed_by"

    def names(self) -> list[str]:
        return list(selectors.clusters_claiming())


class OwnerFilter(admin.SimpleListFilter):
    """Lists the users with unfinished tasks (a bounded list, however many
    users there are); any user's tasks are at ?owner=<id>."""

    title = "owner"
    parameter_name = "owner"

    def lookups(self, request, model_admin):
        choices = [(str(pk), name) for pk, name in selectors.owners_with_unfinished_tasks()]
        value = self.value()
        if value and value.isdigit() and value not in {pk for pk, _ in choices}:
            choices.append((value, f"user {value}"))
        return choices

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if not value.isdigit() or int(value) > 2**63 - 1:
            return queryset.none()
        return queryset.filter(owner_id=int(value))


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
        "queue",
        "worker",
        "created_ago",
        "run_at_display",
        "started_ago",
        "finished_ago",
        "duration_display",
        "error_summary",
    ]
    list_display_links = ["id", "type"]
    list_filter = [
        "status",
        "type",
        QueueFilter,
        OwnerFilter,
        WorkerFilter,
        ClusterFilter,
        "cancel_requested",
        "created_at",
    ]
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
        ("Log", {"fields": ["log_tail"]}),
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

    @admin.display(description="last log lines")
    def log_tail(self, task):
        lines = selectors.last_log_lines_of(task=task, count=LOG_TAIL)
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
            ((ln.seq, ln.at, ln.attempt or "-", ln.level, ln.message) for ln in lines),
        )
        # Rendered even when empty: the page appends the lines a running task writes.
        return format_html(
            '<table id="task-log"><thead><tr><th>#</th><th>at</th><th>attempt</th><th>level</th>'
            "<th>message</th></tr></thead><tbody>{}</tbody></table>",
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
        return display.status_label(task)

    @admin.display(description="owner", ordering="owner__username")
    def owner_link(self, task):
        opts = task.owner._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[task.owner_id])
        return format_html('<a href="{}">{}</a>', url, task.owner)

    @admin.display(description="progress", ordering="progress")
    def progress_display(self, task):
        return display.progress_bar(task)

    @admin.display(description="created", ordering="created_at")
    def created_ago(self, task):
        return display.relative_time(task.created_at)

    @admin.display(description="run at", ordering="run_at")
    def run_at_display(self, task):
        return display.relative_time(task.run_at)

    @admin.display(description="started", ordering="started_at")
    def started_ago(self, task):
        return display.relative_time(task.started_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished_ago(self, task):
        return display.relative_time(task.finished_at)

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
            # JSON, so not behind admin_view (it would redirect to the login page).
            path("<path:object_id>/live/", self.live_view, name="tasks_task_live"),
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
        if task is not None and not task.is_finished:
            last = selectors.last_log_lines_of(task=task, count=1)
            extra_context["task_live"] = {
                "url": reverse("admin:tasks_task_live", args=[task.pk]),
                "after": last[0].seq if last else 0,
                "every_ms": LIVE_REFRESH_MS,
                "keep_lines": LOG_TAIL,
            }
        return super().change_view(request, object_id, form_url, extra_context)

    @method_decorator(never_cache)
    def live_view(self, request, object_id):
        """A task's status, progress and log lines after `?after=<seq>`, as
        JSON, for its page to follow it while it runs."""
        if request.method not in ("GET", "HEAD"):
            return json_error(request, 405)
        if not request.user.is_authenticated:
            return json_error(request, 401, "Log in to the admin first.", "not_authenticated")
        if not (self.admin_site.has_permission(request) and self.has_view_permission(request)):
            return json_error(request, 403, "Only staff who may view tasks can follow one.")
        after = request.GET.get("after", "0")
        if not after.isdigit() or int(after) > 2**31:
            return json_error(request, 400, "`after` must be a log line number (0 or more).")
        task = None
        if object_id.isdigit() and int(object_id) <= 2**63 - 1:
            task = Task.objects.filter(pk=int(object_id)).first()
        if task is None:
            return json_error(request, 404, f"No task with id {object_id!r}.")
        lines = selectors.log_lines_of(task=task, after=int(after), limit=LOG_TAIL)
        return JsonResponse(
            {
                "id": task.pk,
                "status": task.status,
                "finished": task.is_finished,
                "progress": task.progress,
                "progress_message": task.progress_message,
                "status_html": display.status_label(task),
                "progress_html": display.progress_bar(task),
                "lines": [
                    {
                        "seq": line.seq,
                        "at": line.at.isoformat(),
                        "attempt": line.attempt or "-",
                        "level": line.level,
                        "message": line.message,
                    }
                    for line in lines
                ],
            }
        )

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
    """Worker processes, newest heartbeat first. A silent one stays listed as
    dead until housekeeping prunes it (TASK_WORKER_PRUNE_SECONDS, a day)."""

    list_display = [
        "name",
        "alive",
        "last_seen_ago",
        "current_task",
        "host",
        "pid",
        "started_ago",
    ]
    readonly_fields = ["name", "host", "pid", "started_at", "last_seen"]
    ordering = ["-last_seen"]

    def get_queryset(self, request):
        # The task each worker runs now, in the list's one query: a lookup
        # per row on the in-progress tasks (a range on the status index).
        running = Task.objects.filter(status=Status.IN_PROGRESS, worker=OuterRef("name")).order_by(
            "id"
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                running_id=Subquery(running.values("pk")[:1]),
                running_type=Subquery(running.values("type")[:1]),
                running_progress=Subquery(running.values("progress")[:1]),
            )
        )

    @admin.display(boolean=True, description="alive")
    def alive(self, beat):
        stale = timedelta(seconds=settings.TASKS["WORKER_STALE_SECONDS"])
        return beat.last_seen >= timezone.now() - stale

    @admin.display(description="last heartbeat", ordering="last_seen")
    def last_seen_ago(self, beat):
        return display.relative_time(beat.last_seen)

    @admin.display(description="started", ordering="started_at")
    def started_ago(self, beat):
        return display.relative_time(beat.started_at)

    @admin.display(description="running")
    def current_task(self, beat):
        if getattr(beat, "running_id", None) is None:
            return "-"
        query = urlencode({"worker": beat.name, "status__exact": Status.IN_PROGRESS})
        return format_html(
            '<a href="{}">Task {}</a> {} ({}%) · <a href="{}">all its tasks in progress</a>',
            reverse("admin:tasks_task_change", args=[beat.running_id]),
            beat.running_id,
            beat.running_type,
            beat.running_progress,
            reverse("admin:tasks_task_changelist") + "?" + query,
        )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    """Schedules are created and edited through the API, where every field is
    validated; here operators see them, and enable, disable or fire them."""

    list_display = [
        "id",
        "__str__",
        "type",
        "when",
        "time_zone",
        "enabled",
        "owner_link",
        "next_run_at",
        "last_fired_at",
        "fired_count",
        "skipped_count",
    ]
    list_display_links = ["id", "__str__"]
    list_filter = ["enabled", "type", "catch_up", "overlap"]
    search_fields = ["name", "type", "owner__username"]
    list_select_related = ["owner"]
    actions = ["enable_selected", "disable_selected", "run_selected"]
    readonly_fields = [
        "id",
        "name",
        "owner",
        "type",
        "args_pretty",
        "cron",
        "interval_seconds",
        "time_zone",
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
        "created_at",
        "updated_at",
        "recent_tasks",
    ]
    fields = list(readonly_fields)
    # How many of its latest tasks a schedule's page lists.
    RECENT = 20

    @admin.display(description="owner", ordering="owner__username")
    def owner_link(self, schedule):
        opts = schedule.owner._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[schedule.owner_id])
        return format_html('<a href="{}">{}</a>', url, schedule.owner)

    @admin.display(description="args")
    def args_pretty(self, schedule):
        return pretty(schedule.args)

    @admin.display(description="recent tasks")
    def recent_tasks(self, schedule):
        rows = (
            Task.objects.filter(schedule=schedule)
            .order_by("-scheduled_for")
            .only("pk", "status", "scheduled_for", "started_at", "finished_at")[: self.RECENT]
        )
        if not rows:
            return "-"
        items = format_html_join(
            "",
            '<li><a href="{}">Task {}</a> for {}: <strong style="color: {}">{}</strong></li>',
            (
                (
                    reverse("admin:tasks_task_change", args=[task.pk]),
                    task.pk,
                    task.scheduled_for.isoformat(timespec="seconds") if task.scheduled_for else "-",
                    STATUS_COLOURS.get(task.status, "inherit"),
                    task.get_status_display(),
                )
                for task in rows
            ),
        )
        url = (
            reverse("admin:tasks_task_changelist")
            + "?"
            + urlencode({"schedule__id__exact": schedule.pk})
        )
        return format_html(
            '<ul style="margin: 0">{}</ul><a href="{}">all its tasks</a>', items, url
        )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # The page is read-only; the "change" permission is what the actions need.
        if obj is not None:
            return False
        return super().has_change_permission(request)

    def _apply(self, request, queryset, verb: str, change) -> None:
        done, refused = 0, []
        for schedule in queryset.select_related("owner"):
            try:
                change(schedule)
                done += 1
            except services.ServiceError as exc:
                refused.append(f"#{schedule.pk}: {exc.message}")
        if done:
            self.message_user(request, f"{verb} {done} schedule(s).", messages.SUCCESS)
        if refused:
            self.message_user(request, "Refused " + "; ".join(refused), messages.WARNING)

    @admin.action(description="Enable selected schedules", permissions=["change"])
    def enable_selected(self, request, queryset):
        self._apply(
            request,
            queryset,
            "Enabled",
            lambda s: schedules.update_schedule(schedule=s, enabled=True),
        )

    @admin.action(description="Disable selected schedules", permissions=["change"])
    def disable_selected(self, request, queryset):
        self._apply(
            request,
            queryset,
            "Disabled",
            lambda s: schedules.update_schedule(schedule=s, enabled=False),
        )

    @admin.action(description="Run selected schedules now", permissions=["change"])
    def run_selected(self, request, queryset):
        self._apply(request, queryset, "Fired", lambda s: schedules.run_schedule(schedule=s))
