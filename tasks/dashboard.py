"""The operators' dashboard in the admin (/admin/dashboard/): tasks by status
and type, queue depths, live workers with their tasks, and the last hour's
throughput and failures per minute.

Every number comes from an operator-level selector: aggregates on indexes,
and bounded (the chart reads only the last hour's finished tasks), so the
page costs the same with a hundred tasks or millions. The page refreshes
itself by fetching /admin/dashboard/live/ (both are the admin site's URLs:
tasks/admin_site.py), which answers with the numbers
and the same panels rendered again (one template renders both), so no
numbers are formatted twice, in Python and in a script.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.http import JsonResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache

from config.errors import json_error

from . import display, selectors
from .models import Status

# How often the page fetches fresh numbers (milliseconds).
REFRESH_MS = 5000
CHART_MINUTES = 60


def snapshot() -> dict:
    """Everything the dashboard shows, read now."""
    now = timezone.now()
    by_type: dict[str, dict[str, int]] = {}
    totals = dict.fromkeys(Status.values, 0)
    for status, type_name, count in selectors.task_counts_by_status_and_type():
        by_type.setdefault(type_name, dict.fromkeys(Status.values, 0))[status] = count
        totals[status] += count
    minutes = selectors.finished_per_minute(minutes=CHART_MINUTES, now=now)
    workers = selectors.live_workers(now=now)
    return {
        "now": now,
        "totals": totals,
        "by_type": dict(sorted(by_type.items())),
        "queues": dict(sorted(selectors.queue_depths(now=now).items())),
        "workers": workers,
        "stale_workers": selectors.stale_worker_count(now=now),
        "minutes": minutes,
        "last_hour": {
            "completed": sum(m.completed for m in minutes),
            "failed": sum(m.failed for m in minutes),
            "cancelled": sum(m.cancelled for m in minutes),
        },
    }


def as_json(data: dict) -> dict:
    """The snapshot's numbers, for the live endpoint."""
    return {
        "generated_at": data["now"].isoformat(),
        "totals": data["totals"],
        "by_type": data["by_type"],
        "queues": data["queues"],
        "workers": [
            {
                "name": w.heartbeat.name,
                "last_seen": w.heartbeat.last_seen.isoformat(),
                "seconds_ago": round((data["now"] - w.heartbeat.last_seen).total_seconds(), 1),
                "running": [
                    {"id": t.pk, "type": t.type, "progress": t.progress} for t in w.running
                ],
            }
            for w in data["workers"]
        ],
        "stale_workers": data["stale_workers"],
        "last_hour": data["last_hour"],
        "per_minute": [
            {
                "start": m.start.isoformat(),
                "completed": m.completed,
                "failed": m.failed,
                "cancelled": m.cancelled,
            }
            for m in data["minutes"]
        ],
    }


def panels_context(data: dict) -> dict:
    statuses = [
        {"value": value, "label": label, "colour": display.STATUS_COLOURS[value]}
        for value, label in Status.choices
    ]
    return {
        **data,
        "statuses": statuses,
        "status_totals": [{**s, "count": data["totals"][s["value"]]} for s in statuses],
        "type_rows": [
            {
                "type": type_name,
                "counts": [(s["value"], counts[s["value"]]) for s in statuses],
                "total": sum(counts.values()),
            }
            for type_name, counts in data["by_type"].items()
        ],
        "chart": display.throughput_chart(data["minutes"]),
        "workers": [
            {
                "name": w.heartbeat.name,
                "host": w.heartbeat.host,
                "pid": w.heartbeat.pid,
                "seen": display.relative_time(w.heartbeat.last_seen, now=data["now"]),
                "running": [{"task": t, "progress": display.progress_bar(t)} for t in w.running],
            }
            for w in data["workers"]
        ],
        "stale_after": settings.TASKS["WORKER_STALE_SECONDS"],
    }


def may_view(request) -> bool:
    return admin.site.has_permission(request) and request.user.has_perm("tasks.view_task")


@never_cache
def dashboard_view(request):
    """The page (behind admin.site.admin_view: anonymous users go to the login)."""
    if request.method not in ("GET", "HEAD"):
        return json_error(request, 405)
    if not may_view(request):
        return json_error(request, 403, "The dashboard is for staff who may view tasks.")
    context = {
        **admin.site.each_context(request),
        **panels_context(snapshot()),
        "title": "Dashboard",
        "refresh_ms": REFRESH_MS,
    }
    return TemplateResponse(request, "admin/tasks/dashboard.html", context)


@never_cache
def dashboard_live(request):
    """JSON for the page's refresh: the numbers and the panels' HTML."""
    if request.method not in ("GET", "HEAD"):
        return json_error(request, 405)
    if not request.user.is_authenticated:
        return json_error(request, 401, "Log in to the admin first.", "not_authenticated")
    if not may_view(request):
        return json_error(request, 403, "The dashboard is for staff who may view tasks.")
    data = snapshot()
    panels = render_to_string(
        "admin/tasks/dashboard_panels.html", panels_context(data), request=request
    )
    return JsonResponse({**as_json(data), "html": panels})
