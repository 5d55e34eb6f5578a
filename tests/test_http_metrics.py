"""HTTP request metrics beside the task metrics on /metrics (config/http_metrics.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from config import http_metrics

from . import tasks_in_states
from .conftest import client_for

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[1]
REQUESTS = "task_runner_http_requests_total"
LATENCY = "task_runner_http_request_duration_seconds"


@pytest.fixture
def staff_api(make_user):
    return client_for(make_user("operator", is_staff=True))


def samples(text: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def scrape(client) -> list:
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    return samples(response.content.decode())


def total(found, name, **labels) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    return sum(
        s.value
        for s in found
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_requests_are_counted_by_route_method_and_status(api, owner, outsider, staff_api):
    mine = tasks_in_states.queued(owner)
    theirs = tasks_in_states.queued(outsider)
    before = scrape(staff_api)

    for _ in range(3):
        assert api.get(f"/tasks/{mine.pk}").status_code == 200
    assert api.get(f"/tasks/{theirs.pk}").status_code == 404
    assert api.post("/tasks", "{not json", content_type="application/json").status_code == 400

    after = scrape(staff_api)
    route = {"route": "task-detail", "method": "GET"}
    assert (
        total(after, REQUESTS, **route, status="200")
        - total(before, REQUESTS, **route, status="200")
        == 3
    )
    assert (
        total(after, REQUESTS, **route, status="404")
        - total(before, REQUESTS, **route, status="404")
        == 1
    )
    created = {"route": "task-list", "method": "POST", "status": "400"}
    assert total(after, REQUESTS, **created) - total(before, REQUESTS, **created) == 1
    # The latency histogram: a count, a sum and cumulative buckets up to +Inf.
    count = total(after, f"{LATENCY}_count", **route) - total(before, f"{LATENCY}_count", **route)
    assert count == 4
    assert total(after, f"{LATENCY}_sum", **route) > total(before, f"{LATENCY}_sum", **route)
    inf = total(after, f"{LATENCY}_bucket", **route, le="+Inf")
    assert inf == total(after, f"{LATENCY}_count", **route)
    buckets = [
        s.value
        for s in after
        if s.name == f"{LATENCY}_bucket"
        and s.labels["route"] == "task-detail"
        and s.labels["method"] == "GET"
    ]
    assert len(buckets) == len(http_metrics.LATENCY_BUCKETS) + 1
    assert buckets == sorted(buckets)


def test_unknown_paths_collapse_into_one_route(staff_api):
    client = Client()
    before = scrape(staff_api)

    for path in ("/no/such/thing", "/wp-login.php", "/tasks/1/nonsense", "/%E2%82%AC"):
        assert client.get(path).status_code == 404

    after = scrape(staff_api)
    unknown = {"route": "unknown-route", "method": "GET", "status": "404"}
    assert total(after, REQUESTS, **unknown) - total(before, REQUESTS, **unknown) == 4
    routes = {s.labels["route"] for s in after if s.name == REQUESTS}
    assert not any("/" in route or "wp-login" in route for route in routes), routes


def test_odd_methods_and_refused_bodies_keep_the_labels_bounded(api, staff_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    before = scrape(staff_api)

    odd = api.generic("BREW", "/tasks")
    big = api.post("/tasks", {"type": "wordcount", "args": {"text": "x" * 500}}, format="json")

    assert odd.status_code == 405
    assert big.status_code == 413 and big.json()["code"] == "too_large"
    after = scrape(staff_api)
    brew = {"route": "task-list", "method": "other", "status": "405"}
    assert total(after, REQUESTS, **brew) - total(before, REQUESTS, **brew) == 1
    # Refused by a middleware before URL resolution, still named by its route.
    refused = {"route": "task-list", "method": "POST", "status": "413"}
    assert total(after, REQUESTS, **refused) - total(before, REQUESTS, **refused) == 1
    assert not [s for s in after if s.name == REQUESTS and s.labels["method"] == "BREW"]


def test_metrics_stay_closed_to_non_staff(api):
    response = api.get("/metrics")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert Client().get("/metrics").status_code == 401


SERVE = """
import django
django.setup()
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
client = Client()
for _ in range({n}):
    assert client.get("/no/such/page").status_code == 404
assert client.get("/login").status_code == 405
"""


def test_every_process_is_counted_when_they_share_a_directory(tmp_path, settings):
    """Two web processes serve requests; the page adds up both, whichever
    process renders it (here: this one, which served none of them)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.test_settings",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
    }
    for n in (3, 4):
        subprocess.run(
            [sys.executable, "-c", SERVE.format(n=n)], cwd=ROOT, env=env, check=True, timeout=120
        )
    assert len(list(tmp_path.glob("*.db"))) >= 2  # one file per process and kind

    settings.PROMETHEUS_MULTIPROC_DIR = str(tmp_path)
    registry = CollectorRegistry(auto_describe=False)
    http_metrics.register(registry)
    found = samples(generate_latest(registry).decode())

    assert total(found, REQUESTS, route="unknown-route", method="GET", status="404") == 7
    assert total(found, REQUESTS, route="login", method="GET", status="405") == 2
    assert total(found, f"{LATENCY}_count", route="unknown-route", method="GET") == 7
