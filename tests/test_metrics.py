import math

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from tasks import metrics, services, worker
from tasks.models import Task

from . import tasks_in_states
from .conftest import client_for

pytestmark = pytest.mark.django_db

METRICS_TOKEN = "scrape-me-0123456789"


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = METRICS_TOKEN
    return METRICS_TOKEN


@pytest.fixture
def staff_api(make_user):
    return client_for(make_user("operator", is_staff=True))


def scrape(client) -> dict[str, list]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {}
    for family in text_string_to_metric_families(response.content.decode()):
        families[family.name] = family.samples
    return families


def value(samples, name, **labels):
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


def test_it_counts_tasks_by_status_and_type(owner, outsider, run_jobs, staff_api):
    tasks_in_states.completed(owner, run_jobs)
    tasks_in_states.completed(outsider, run_jobs)
    tasks_in_states.failed(owner, run_jobs)
    tasks_in_states.queued(owner)
    tasks_in_states.in_progress(outsider)
    worker.record_heartbeat(name="host:1", host="host", pid=1)

    families = scrape(staff_api)

    tasks = families["task_runner_tasks"]
    assert value(tasks, "task_runner_tasks", status="completed", type="wordcount") == 2
    assert value(tasks, "task_runner_tasks", status="failed", type="test.fail") == 1
    assert value(tasks, "task_runner_tasks", status="queued", type="wordcount") == 1
    assert value(tasks, "task_runner_tasks", status="in_progress", type="wordcount") == 1
    # Empty states still have a series, so "cancelled > 0" alerts see a zero.
    assert value(tasks, "task_runner_tasks", status="cancelled", type="") == 0
    assert sum(s.value for s in tasks) == Task.objects.count() == 5
    workers = families["task_runner_workers_alive"]
    assert value(workers, "task_runner_workers_alive") == 1
    assert "task_runner_broker_reachable" not in families


def test_queue_depth_counts_runnable_and_delayed_tasks_per_queue(owner, staff_api):
    tasks_in_states.queued(owner)
    tasks_in_states.queued(owner)
    tasks_in_states.in_progress(owner)
    # Due at once; nothing runs it, as commits are not captured here.
    services.submit_task(owner=owner, type_name="test.reports")

    families = scrape(staff_api)

    depth = families["task_runner_queue_depth"]
    name = "task_runner_queue_depth"
    assert value(depth, name, queue="default", state="runnable") == 0
    assert value(depth, name, queue="default", state="delayed") == 2
    assert value(depth, name, queue="reports", state="runnable") == 1
    assert value(depth, name, queue="reports", state="delayed") == 0
    assert len(depth) == 4
    assert Task.objects.filter(status="queued", queue="reports").count() == 1


def test_the_duration_histogram_covers_tasks_finished_in_the_window(
    owner, run_jobs, staff_api, settings
):
    settings.TASKS = {**settings.TASKS, "METRICS_WINDOW_SECONDS": 600}
    fast = tasks_in_states.completed(owner, run_jobs)
    tasks_in_states.set_times(fast, finished_ago=10, ran_for=0.3)
    slow = tasks_in_states.completed(owner, run_jobs)
    tasks_in_states.set_times(slow, finished_ago=20, ran_for=45)
    broken = tasks_in_states.failed(owner, run_jobs)
    tasks_in_states.set_times(broken, finished_ago=30, ran_for=2)
    old = tasks_in_states.completed(owner, run_jobs)
    tasks_in_states.set_times(old, finished_ago=3600, ran_for=1)
    # Cancelled before it started: it has no run time to observe.
    tasks_in_states.cancelled(owner)

    families = scrape(staff_api)

    samples = families["task_runner_recent_task_duration_seconds"]
    name = "task_runner_recent_task_duration_seconds"

    def bucket(le, type_="wordcount"):
        return value(samples, name + "_bucket", type=type_, le=le)

    assert bucket("0.1") == 0
    assert bucket("0.5") == 1
    assert bucket("30.0") == 1
    assert bucket("60.0") == 2
    assert bucket("+Inf") == 2
    assert value(samples, name + "_count", type="wordcount") == 2
    assert math.isclose(value(samples, name + "_sum", type="wordcount"), 45.3, rel_tol=1e-6)
    assert bucket("2.5", "test.fail") == 1
    assert bucket("1.0", "test.fail") == 0
    finished = families["task_runner_recent_tasks_finished"]
    metric = "task_runner_recent_tasks_finished"
    assert value(finished, metric, status="completed", type="wordcount") == 2
    assert value(finished, metric, status="failed", type="test.fail") == 1
    assert value(finished, metric, status="cancelled", type="wordcount") == 1
    assert value(families["task_runner_window_seconds"], "task_runner_window_seconds") == 600
    # The task outside the window is still in the table, just not observed.
    assert Task.objects.filter(pk=old.pk).exists()


def test_buckets_are_cumulative_and_end_with_the_count(owner, run_jobs, staff_api):
    for ran_for in (0.05, 0.7, 3, 7, 200, 5000):
        task = tasks_in_states.completed(owner, run_jobs)
        tasks_in_states.set_times(task, finished_ago=1, ran_for=ran_for)

    families = scrape(staff_api)

    samples = [
        s
        for s in families["task_runner_recent_task_duration_seconds"]
        if s.name.endswith("_bucket")
    ]
    counts = [s.value for s in samples]
    assert counts == sorted(counts)
    assert [float(s.labels["le"]) for s in samples] == [*metrics.DURATION_BUCKETS, math.inf]
    assert counts[-1] == 6
    assert counts[-2] == 5  # 5000 s is above the largest finite bucket


def test_the_metrics_token_may_scrape(metrics_token):
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")

    assert response.status_code == 200
    assert b"# TYPE task_runner_tasks gauge" in response.content


def test_a_scraper_accept_header_does_not_matter(metrics_token):
    response = Client().get(
        "/metrics",
        HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}",
        HTTP_ACCEPT="application/openmetrics-text; version=1.0.0",
    )

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")


def test_it_refuses_anonymous_callers(metrics_token):
    response = Client().get("/metrics")

    assert response.status_code == 401
    assert response.json() == {
        "error": "Authentication credentials were not provided.",
        "code": "not_authenticated",
    }
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'


def test_it_refuses_a_wrong_token(metrics_token):
    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")

    assert response.status_code == 401
    assert "error" in response.json()


def test_it_refuses_users_who_are_not_staff(api, metrics_token, owner):
    response = api.get("/metrics")

    assert response.status_code == 403
    assert response.json() == {
        "error": "Metrics are for staff users and the metrics token only.",
        "code": "permission_denied",
    }
    assert owner.is_staff is False


def test_without_a_configured_token_an_empty_bearer_never_matches(settings):
    settings.METRICS_TOKEN = ""
    response = APIClient().get("/metrics", HTTP_AUTHORIZATION="Bearer ")

    assert response.status_code == 401


def test_a_staff_user_logged_into_the_admin_can_open_it(make_user):
    client = Client()
    client.force_login(make_user("operator", is_staff=True))

    assert client.get("/metrics").status_code == 200


def test_a_non_staff_session_is_refused(owner):
    client = Client()
    client.force_login(owner)

    response = client.get("/metrics")

    assert response.status_code == 403
    assert response.json()["error"] == "Metrics are for staff users and the metrics token only."
