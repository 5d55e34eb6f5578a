"""System checks of the tasks settings that only the tasks app can read."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, register

from .registry import parse_retention


@register()
def retention_setting(app_configs, **kwargs):
    """TASK_RETENTION must parse, or housekeeping could not apply it."""
    try:
        parse_retention(settings.TASKS["RETENTION"])
    except ValueError as exc:
        return [Error(f"TASK_RETENTION: {exc}", id="tasks.E001")]
    return []


# Intervals the workers and the web processes sleep or wait for: zero or
# less would spin a loop on the database (or never renew a lease in time).
POSITIVE_SECONDS = {
    "HEARTBEAT_SECONDS": "TASK_HEARTBEAT_SECONDS",
    "LEASE_SECONDS": "TASK_LEASE_SECONDS",
    "MAINTENANCE_SECONDS": "TASK_MAINTENANCE_SECONDS",
    "SCHEDULE_POLL_SECONDS": "TASK_SCHEDULE_POLL_SECONDS",
    "EVENTS_POLL_SECONDS": "TASK_EVENTS_POLL_SECONDS",
    "EVENTS_KEEPALIVE_SECONDS": "TASK_EVENTS_KEEPALIVE_SECONDS",
    "EVENTS_MAX_SECONDS": "TASK_EVENTS_MAX_SECONDS",
}


@register()
def timing_settings(app_configs, **kwargs):
    """Every interval is positive, and a lease outlasts the heartbeat that
    renews it (else every running task would look lost)."""
    conf = settings.TASKS
    errors = [
        Error(f"{variable} must be more than 0 (it is {conf[key]}).", id="tasks.E002")
        for key, variable in POSITIVE_SECONDS.items()
        if not conf[key] > 0
    ]
    if not errors and conf["LEASE_SECONDS"] <= 2 * conf["HEARTBEAT_SECONDS"]:
        errors.append(
            Error(
                "TASK_LEASE_SECONDS must be more than twice TASK_HEARTBEAT_SECONDS "
                f"(they are {conf['LEASE_SECONDS']} and {conf['HEARTBEAT_SECONDS']}): "
                "a lease must outlast a late renewal.",
                id="tasks.E003",
            )
        )
    return errors
