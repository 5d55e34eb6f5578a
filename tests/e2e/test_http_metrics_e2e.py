"""HTTP metrics under `make serve`'s gunicorn (config/gunicorn.conf.py): two
web processes, and every scrape, whichever process answers it, counts the
requests both served."""

import os
import signal
import tempfile
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from .harness import HTTP_TIMEOUT, Stack, free_port, process_group, wait_for

pytestmark = [pytest.mark.e2e]

TOKEN = "e2e-metrics-token-0123456789"


@pytest.fixture
def served(tmp_path, request):
    """A migrated database and gunicorn started as `make serve` starts it."""
    port = free_port()
    stack = Stack(
        tmp_path,
        env={
            "PORT": str(port),
            "WEB_WORKERS": "2",
            "WEB_THREADS": "2",
            "METRICS_TOKEN": TOKEN,
            "PROMETHEUS_MULTIPROC_DIR": "",
        },
    )
    stack.port, stack.base = port, f"http://127.0.0.1:{port}"
    try:
        stack.manage("migrate", "--no-input")
        stack.web = stack.spawn("web", "-m", "gunicorn", "-c", "config/gunicorn.conf.py")
        wait_for(stack._web_up, 60, what="gunicorn")
        yield stack
    finally:
        stack.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(stack.all_logs(tail=8000))


def metrics_dir_of(stack) -> Path:
    """The directory gunicorn made for its processes' files (it holds theirs)."""
    workers = process_group(stack.web.pid) - {stack.web.pid}
    for folder in Path(tempfile.gettempdir()).glob("task-runner-http-metrics-*"):
        if any((folder / f"counter_{pid}.db").exists() for pid in workers):
            return folder
    return None


def health_count(stack) -> float:
    response = requests.get(
        stack.base + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=HTTP_TIMEOUT
    )
    assert response.status_code == 200, response.text
    return sum(
        s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
        if s.name == "task_runner_http_requests_total"
        and s.labels == {"route": "health", "method": "GET", "status": "503"}
    )


def test_every_scrape_counts_the_requests_of_every_web_process(served):
    workers = wait_for(
        lambda: len(p := process_group(served.web.pid) - {served.web.pid}) == 2 and p,
        60,
        what="two gunicorn workers",
    )
    sent = 0

    def both_served() -> bool:
        nonlocal sent
        # A new connection each time, so either process may take it. No
        # worker is running: /health answers 503, which is what is counted.
        assert requests.get(served.base + "/health", timeout=HTTP_TIMEOUT).status_code == 503
        sent += 1
        folder = metrics_dir_of(served)
        return folder is not None and all(
            (folder / f"counter_{pid}.db").exists() for pid in workers
        )

    wait_for(both_served, 60, interval=0.01, what="requests served by both processes")
    folder = metrics_dir_of(served)

    # Each scrape is answered by one process or the other; all see the total.
    for _ in range(10):
        assert health_count(served) == sent

    # A reload (SIGHUP) starts new workers and reads the settings again; the
    # directory is still gunicorn's own to remove at the end.
    os.kill(served.web.pid, signal.SIGHUP)
    wait_for(
        lambda: process_group(served.web.pid) - {served.web.pid} - workers,
        60,
        what="new workers after a reload",
    )
    served.stop()
    assert not folder.exists(), "gunicorn removes the directory it made"
