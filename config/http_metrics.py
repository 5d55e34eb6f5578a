"""HTTP request metrics: how many requests, how long they took, how they ended.

Counted by a middleware in each web process. gunicorn runs WEB_WORKERS
processes, and a scrape of /metrics reaches one of them, so a counter kept
in that process's memory would show only its slice of the traffic. With
PROMETHEUS_MULTIPROC_DIR set (`make serve` sets it up: config/gunicorn.conf.py)
prometheus_client keeps every process's values in a memory-mapped file of
that directory, and /metrics adds up all the files: the same totals through
any process, and a restarted process's requests are not lost. Without it
(the development server, the tests: one process) the values live in memory.

Requests are labelled by the URL pattern's name (`task-detail`, not
`/tasks/123`), so the number of series stays fixed: every unknown path is
`unknown-route`, static files are `static`, and an odd method is `other`.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.urls import Resolver404, resolve
from prometheus_client import Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import CollectorRegistry

PREFIX = "task_runner_http"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds: from a cached read to a long-poll that waits its full time.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# Not in prometheus_client's global registry: /metrics builds its own page
# (tasks.metrics), and adds these with `register`.
REQUESTS = Counter(
    f"{PREFIX}_requests",
    "HTTP requests answered, by route (URL pattern name), method and status.",
    ["route", "method", "status"],
    registry=None,
)
LATENCY = Histogram(
    f"{PREFIX}_request_duration_seconds",
    "Time from the request reaching Django to its response (for an event "
    "stream: to its headers), by route and method.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)


def multiprocess_dir() -> str:
    return settings.PROMETHEUS_MULTIPROC_DIR


def register(registry: CollectorRegistry) -> None:
    """Add the HTTP metrics to `registry`: every process's, or this one's."""
    path = multiprocess_dir()
    if path:
        MultiProcessCollector(registry, path=path)
    else:
        registry.register(REQUESTS)
        registry.register(LATENCY)


def route_of(request) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None:
        # Answered before URL resolution: a static file, or a request a
        # middleware refused (too large, unframed); name it by its path.
        if request.path_info.startswith("/" + settings.STATIC_URL.lstrip("/")):
            return "static"
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return "unknown-route"
    return match.view_name or "unnamed"


class HttpMetricsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed = time.perf_counter() - started
        route = route_of(request)
        method = request.method if request.method in METHODS else "other"
        REQUESTS.labels(route, method, str(response.status_code)).inc()
        LATENCY.labels(route, method).observe(elapsed)
        return response
