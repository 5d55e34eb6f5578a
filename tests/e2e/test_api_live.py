"""The API against real processes: long-poll on `make serve`'s uvicorn workers, and
schemathesis fuzzing every documented operation from the live schema."""

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .harness import Stack

pytestmark = [pytest.mark.e2e]


def test_wait_answers_when_the_task_finishes_without_blocking_others(stack):
    session = stack.login()
    task_id = stack.submit(session, "test.sleep", {"seconds": 1.5})
    parked = stack.submit(session, "wordcount", {"text": "later"}, delay=3600)

    with ThreadPoolExecutor(max_workers=4) as pool:
        started = time.monotonic()
        finished = pool.submit(
            session.get, f"{stack.base}/tasks/{task_id}", params={"wait": 30}, timeout=60
        )
        waiting = [
            pool.submit(session.get, f"{stack.base}/tasks/{parked}", params={"wait": 3}, timeout=60)
            for _ in range(2)
        ]
        # Other requests are served while three clients wait.
        me = session.get(f"{stack.base}/me", timeout=10)
        assert me.status_code == 200
        done = finished.result()
        done_after = time.monotonic() - started
        parked_answers = [f.result() for f in waiting]

    assert done.status_code == 200
    assert done.json()["status"] == "completed"
    assert done.json()["output"] == {"slept": 1.5}
    # It answered when the task finished, well before the 30 s were up.
    assert done_after < 25
    for answer in parked_answers:
        assert answer.status_code == 200
        assert answer.json()["status"] == "queued"


def test_schemathesis_finds_no_server_error_or_schema_violation(tmp_path):
    stack = Stack(
        tmp_path,
        env={
            # Fuzzing submits many tasks; the cap is tested elsewhere.
            "TASK_MAX_UNFINISHED_PER_USER": "0",
            "Q_WORKERS": "1",
            # An event stream stays open this long at most.
            "TASK_EVENTS_MAX_SECONDS": "3",
        },
    )
    try:
        stack.start()
        token = stack.login().headers["Authorization"]
        report = tmp_path / "schemathesis"
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{stack.base}/api/schema/",
                "--header",
                f"Authorization: {token}",
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,"
                "response_schema_conformance,response_headers_conformance",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "30"),
                # One worker: hypothesis strategies are not thread-safe, and
                # parallel workers have been seen to crash schemathesis itself.
                "--workers",
                "1",
                # Above the longest `?wait=` (30 s), which answers after it.
                "--request-timeout",
                "45",
                "--seed",
                "1",
                "--no-color",
                "--report-dir",
                str(report),
            ],
            # Its cache of crashes goes under tmp_path, not into the work tree.
            cwd=tmp_path,
            capture_output=True,
            text=True,
            # Minutes on a busy machine: hundreds of requests, some long-polls.
            timeout=900,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-15000:]
        counts = re.search(r"(\d+) generated, (\d+) passed", output)
        assert counts, output[-5000:]
        assert int(counts[1]) == int(counts[2]) > 100, output[-5000:]
        # Every operation of the schema was selected (however many there are).
        assert re.search(r"Operations:\s+(\d+) selected / \1 total", output), output[:3000]
        logs = stack.all_logs()
        assert '" 500 ' not in logs and "Traceback" not in logs, logs[-10000:]
    finally:
        stack.stop()


def test_limits_and_error_pages_hold_on_the_real_server(stack):
    session = stack.login()
    # With DEBUG=False, no HTML page for an unknown route, a wrong method or a non-JSON body.
    for response in (
        session.get(f"{stack.base}/no/such/route", timeout=30),
        session.post(f"{stack.base}/no/such/route", json={}, timeout=30),
        session.delete(f"{stack.base}/tasks", timeout=30),
        session.post(f"{stack.base}/tasks", data="type=demo", timeout=30),
    ):
        assert response.status_code in (404, 405, 415), response.text[:300]
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.json()["error"]

    before = session.get(f"{stack.base}/tasks", timeout=30).json()["results"]

    def chunks(*parts):
        yield from parts

    # Without Content-Length (chunked): read, bounded, and not mistaken for an empty body.
    small = session.post(
        f"{stack.base}/tasks",
        data=chunks(b'{"type": "wordcount", ', b'"args": {"text": "chunked"}}'),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    big_chunked = session.post(
        f"{stack.base}/tasks",
        data=chunks(b'{"type": "wordcount", "args": {"text": "', b"x" * 2_000_000, b'"}}'),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    big = session.post(
        f"{stack.base}/tasks",
        data=b'{"type": "wordcount", "args": {"text": "' + b"x" * 10_000_000 + b'"}}',
        headers={"Content-Type": "application/json"},
        timeout=60,
    )

    assert small.status_code == 202, small.text
    done = stack.wait_status(session, small.json()["task_id"], "completed")
    assert done["args"] == {"text": "chunked", "top": 10}
    for response in (big_chunked, big):
        assert response.status_code == 413, response.text[:300]
        assert "MAX_REQUEST_BYTES" in response.json()["error"]
    after = session.get(f"{stack.base}/tasks", timeout=30).json()["results"]
    assert len(after) == len(before) + 1
