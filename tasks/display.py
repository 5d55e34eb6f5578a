"""HTML pieces the admin's lists, task pages and dashboard share: a status
label, a progress bar, a relative time, the throughput chart."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from .models import Status, Task

STATUS_COLOURS: dict[str, str] = {
    Status.QUEUED: "#666",
    Status.IN_PROGRESS: "#1f6fb2",
    Status.COMPLETED: "#2e7d32",
    Status.FAILED: "#c62828",
    Status.CANCELLED: "#b26a00",
}


def status_label(task: Task, *, now: datetime | None = None) -> SafeString:
    """The coloured status; a queued task not yet due says until when it waits."""
    label = format_html(
        '<strong style="color: {}">{}</strong>',
        STATUS_COLOURS.get(task.status, "inherit"),
        task.get_status_display(),
    )
    if task.cancel_requested and not task.is_finished:
        return format_html("{} (cancel requested)", label)
    if task.status == Status.QUEUED and "waiting" not in task.get_deferred_fields():
        if task.waiting:
            return format_html(
                '{} <span class="task-delayed">waiting for its parents</span>', label
            )
        now = now or timezone.now()
        if task.run_at and task.run_at > now:
            return format_html(
                '{} <span class="task-delayed" title="{}">delayed until {}</span>',
                label,
                task.run_at.isoformat(timespec="seconds"),
                relative_time(task.run_at, now=now, bare=True),
            )
    return label


def progress_bar(task: Task) -> SafeString:
    message = Truncator(task.progress_message).chars(40) if task.progress_message else ""
    return format_html(
        '<span class="task-progress"><progress max="100" value="{}">{}%</progress> '
        '<span class="task-progress-text">{}%</span>{}</span>',
        task.progress,
        task.progress,
        task.progress,
        format_html(" · {}", message) if message else "",
    )


def relative_time(
    value: datetime | None, *, now: datetime | None = None, bare: bool = False
) -> SafeString | str:
    """ "3 s ago", "in 5 min" (or "5 min" when `bare`), with the exact time
    on hover; "-" for no time."""
    if value is None:
        return "-"
    now = now or timezone.now()
    seconds = (now - value).total_seconds()
    text = _span(abs(seconds))
    if not bare:
        text = f"{text} ago" if seconds >= 0 else f"in {text}"
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        value.isoformat(),
        value.strftime("%Y-%m-%d %H:%M:%S %Z"),
        text,
    )


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} d"


CHART_WIDTH, CHART_HEIGHT, CHART_TOP, CHART_BOTTOM = 720, 180, 16, 20


def throughput_chart(minutes: Sequence) -> SafeString:
    """A stacked bar per minute (completed, failed, cancelled) as inline SVG.

    `minutes` are selectors.Minute, oldest first. Each bar has a tooltip with
    its numbers; the scale's top is the busiest minute.
    """
    count = max(len(minutes), 1)
    slot = CHART_WIDTH / count
    plot = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    peak = max((m.completed + m.failed + m.cancelled for m in minutes), default=0) or 1
    bars = []
    for i, minute in enumerate(minutes):
        x = i * slot + 1
        base = CHART_HEIGHT - CHART_BOTTOM
        parts = []
        for status, value in (
            (Status.COMPLETED, minute.completed),
            (Status.FAILED, minute.failed),
            (Status.CANCELLED, minute.cancelled),
        ):
            if not value:
                continue
            height = value / peak * plot
            base -= height
            parts.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}" class="bar-{}"/>',
                    f"{x:.1f}",
                    f"{base:.1f}",
                    f"{max(slot - 2, 1):.1f}",
                    f"{height:.1f}",
                    STATUS_COLOURS[status],
                    status,
                )
            )
        title = (
            f"{minute.start:%H:%M} UTC: {minute.completed} completed, "
            f"{minute.failed} failed, {minute.cancelled} cancelled"
        )
        # A full-height transparent rect, so every minute has a tooltip.
        bars.append(
            format_html(
                '<g class="minute"><title>{}</title><rect x="{}" y="{}" width="{}" height="{}" '
                'fill="transparent"/>{}</g>',
                title,
                f"{i * slot:.1f}",
                CHART_TOP,
                f"{slot:.1f}",
                plot,
                format_html_join("", "{}", ((p,) for p in parts)),
            )
        )
    axis_y = CHART_HEIGHT - CHART_BOTTOM
    return format_html(
        '<svg id="throughput-chart" viewBox="0 0 {w} {h}" width="100%" role="img" '
        'aria-label="Tasks finished per minute over the last hour" '
        'style="max-width: {w}px; font: 11px sans-serif">'
        '<line x1="0" y1="{top}" x2="{w}" y2="{top}" stroke="#ddd"/>'
        '<text x="2" y="{top_text}" fill="#666">{peak} / min</text>'
        '<line x1="0" y1="{axis}" x2="{w}" y2="{axis}" stroke="#999"/>'
        "{bars}"
        '<text x="0" y="{h_text}" fill="#666">{first}</text>'
        '<text x="{w}" y="{h_text}" fill="#666" text-anchor="end">now</text>'
        "</svg>",
        w=CHART_WIDTH,
        h=CHART_HEIGHT,
        top=CHART_TOP,
        top_text=CHART_TOP - 4,
        peak=peak,
        axis=axis_y,
        bars=format_html_join("", "{}", ((b,) for b in bars)),
        h_text=CHART_HEIGHT - 5,
        first=f"-{count} min",
    )
