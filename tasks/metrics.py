"""The /metrics page: task statistics in the Prometheus text format (0.0.4),
followed by the web tier's HTTP request metrics (config/http_metrics.py).

The task statistics are computed at scrape time from the database (the Task
rows are the record, and tasks are finished by worker processes on any
host, which no web process sees). Every query is one aggregate on an index;
see the selectors.

Task durations are a histogram over a sliding window: the tasks that
finished in the last METRICS_WINDOW_SECONDS. Cumulative counters would need
a write on every task's completion, on the workers' hot path, and cannot be
rebuilt from the rows (purge_tasks deletes them), while a window is bounded
by recent throughput and answers what a dashboard asks ("p95 over the last
five minutes"). Because old observations leave the window, the buckets can
go down: use `histogram_quantile()` on them directly, not on `rate()`.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from config import http_metrics

from . import selectors
from .models import Status

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
PREFIX = "task_runner"
# Seconds: from quick jobs to the longest timeout a request may ask for.
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class TaskCollector(Collector):
    def collect(self):
        now = timezone.now()
        window = timedelta(seconds=settings.TASKS["METRICS_WINDOW_SECONDS"])

        tasks = GaugeMetricFamily(
            f"{PREFIX}_tasks",
            "Tasks in the database, by status and type.",
            labels=["status", "type"],
        )
        seen_status = set()
        for status, type_name, count in selectors.task_counts_by_status_and_type():
            tasks.add_metric([status, type_name], count)
            seen_status.add(status)
        # Every status has a series even when empty, so alerts on "queued > N"
        # see 0 instead of no data.
        for status in Status.values:
            if status not in seen_status:
                tasks.add_metric([status, ""], 0)
        yield tasks

        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_depth",
            "Queued tasks per queue: runnable now, or delayed (a later run_at).",
            labels=["queue", "state"],
        )
        for queue_name, counts in sorted(selectors.queue_depths(now=now).items()):
            for state, count in counts.items():
                depth.add_metric([queue_name, state], count)
        yield depth
        yield GaugeMetricFamily(
            f"{PREFIX}_workers_alive",
            "Worker processes with a heartbeat newer than WORKER_STALE_SECONDS.",
            value=selectors.workers_alive(now=now),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_window_seconds",
            "Length of the sliding window of the recent_* metrics.",
            value=window.total_seconds(),
        )

        finished = GaugeMetricFamily(
            f"{PREFIX}_recent_tasks_finished",
            "Tasks that finished within the window, by final status and type.",
            labels=["status", "type"],
        )
        for status, type_name, count in selectors.recent_finished_counts(window=window, now=now):
            finished.add_metric([status, type_name], count)
        yield finished

        durations = HistogramMetricFamily(
            f"{PREFIX}_recent_task_duration_seconds",
            "Run time (finished_at - started_at) of the tasks that finished within "
            "the window, by type. A sliding window: use histogram_quantile() "
            "without rate().",
            labels=["type"],
        )
        for stats in selectors.recent_duration_stats(
            window=window, bounds=DURATION_BUCKETS, now=now
        ):
            buckets = [(_le(bound), count) for bound, count in stats.buckets]
            buckets.append(("+Inf", stats.count))
            durations.add_metric([stats.type], buckets, sum_value=stats.sum_seconds)
        yield durations


def _le(bound: float) -> str:
    return str(float(bound))


def render() -> bytes:
    """The metrics page body, freshly computed: the tasks, then the web tier's
    HTTP requests (config.http_metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TaskCollector())
    http_metrics.register(registry)
    return generate_latest(registry)
