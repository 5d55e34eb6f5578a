from datetime import timedelta

import pytest
from django.db import OperationalError, connections
from django.test import Client
from django.utils import timezone

from tasks import services, worker
from tasks.models import WorkerHeartbeat

from . import tasks_in_states

pytestmark = pytest.mark.django_db


def beat(name="host:1", seconds_ago=0.0):
    worker.record_heartbeat(name=name, host="host", pid=1)
    WorkerHeartbeat.objects.filter(name=name).update(
        last_seen=timezone.now() - timedelta(seconds=seconds_ago)
    )


def test_it_is_healthy_with_a_database_and_a_live_worker(owner):
    beat("host:1")
    beat("host:2", seconds_ago=5)
    tasks_in_states.queued(owner)
    tasks_in_states.queued(owner)
    tasks_in_states.in_progress(owner)
    # Due now, but not run: jobs run inline only in tests that capture commits.
    services.submit_task(owner=owner, type_name="test.reports")

    response = Client().get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert "error" not in body
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["workers"]["ok"] is True
    assert body["checks"]["workers"]["alive"] == 2
    assert body["tasks"] == {"queued": 3, "in_progress": 1}
    # Queued tasks per queue: due now, or waiting for a later run_at.
    assert body["queues"] == {
        "default": {"runnable": 0, "delayed": 2},
        "reports": {"runnable": 1, "delayed": 0},
    }
    assert WorkerHeartbeat.objects.count() == 2


def test_it_is_unavailable_when_every_heartbeat_is_stale(settings):
    settings.TASKS = {**settings.TASKS, "WORKER_STALE_SECONDS": 30}
    beat("host:1", seconds_ago=31)

    response = Client().get("/health/")

    assert response.status_code == 503
    body = response.json()
    assert body["error"] == ("Unhealthy: no worker has sent a heartbeat in the last 30 seconds.")
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["workers"] == {"ok": False, "alive": 0, "stale_after_seconds": 30}
    assert WorkerHeartbeat.objects.filter(name="host:1").exists()


def test_it_is_unavailable_with_no_worker_at_all():
    response = Client().get("/health")

    assert response.status_code == 503
    assert "no worker" in response.json()["error"]
    assert WorkerHeartbeat.objects.count() == 0


def test_it_is_unavailable_when_the_database_does_not_answer(monkeypatch):
    beat("host:1")

    def broken_cursor(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(connections["default"], "cursor", broken_cursor)
    response = Client().get("/health")
    monkeypatch.undo()

    assert response.status_code == 503
    body = response.json()
    assert body["error"] == (
        "Unhealthy: the database is unreachable; no worker has sent a heartbeat "
        "in the last 30 seconds."
    )
    assert body["checks"]["database"] == {"ok": False}
    assert body["tasks"] is None
    assert body["queues"] is None
    assert WorkerHeartbeat.objects.count() == 1


def test_it_needs_no_token_and_reveals_no_worker_names(owner):
    beat("secret-host.internal:4242")

    response = Client(HTTP_ACCEPT="text/plain").get("/health")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "secret-host" not in response.content.decode()
    assert "4242" not in response.content.decode()


def test_a_database_failing_after_the_first_query_counts_as_down(monkeypatch):
    beat("host:1")

    def failing(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr("tasks.selectors.workers_alive", failing)
    response = Client().get("/health")

    assert response.status_code == 503
    assert response.json()["checks"]["database"] == {"ok": False}
    assert response.json()["error"].startswith("Unhealthy: the database is unreachable")
