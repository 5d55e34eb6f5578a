"""LOG_FORMAT=json on the real processes: gunicorn as `make serve` runs it
(config/gunicorn.conf.py) and a qcluster. Every line they write is one JSON
object; a request's lines carry its id, a task's lines its id and attempt."""

import json

import pytest

from .harness import Stack, wait_for

pytestmark = [pytest.mark.e2e]

ACCESS = "uvicorn.access"


def json_lines(text: str) -> list[dict]:
    lines = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            raise AssertionError(f"not a JSON line: {raw!r}") from None
        assert isinstance(line, dict), raw
        assert {"time", "level", "logger", "message"} <= set(line), raw
        lines.append(line)
    return lines


def test_every_line_is_json_and_names_its_request_or_task(tmp_path):
    stack = Stack(tmp_path, env={"LOG_FORMAT": "json", "WEB_WORKERS": "1", "WEB_THREADS": "2"})
    stack.env["PORT"] = str(stack.port)
    try:
        stack.manage("migrate", "--no-input")
        stack.add_users("alice")
        stack.web = stack.spawn("web", "-m", "gunicorn", "-c", "config/gunicorn.conf.py")
        wait_for(stack._web_up, 60, what="the web server")
        stack.start_cluster()
        session = stack.login()

        task_id = stack.submit(session, "test.fail", {"message": "planned"})
        stack.wait_status(session, task_id, "failed", timeout=60)
        missing = session.get(f"{stack.base}/tasks/999999", headers={"X-Request-ID": "trace-1"})
        assert missing.status_code == 404
        assert missing.headers["X-Request-ID"] == "trace-1"

        def lines_of(name, predicate, wanted):
            """The lines of `name` that match, once `wanted` holds for them."""

            def ready():
                found = [line for line in json_lines(stack.log(name)) if predicate(line)]
                return found if wanted(found) else None

            return wait_for(ready, 30, what=f"{name} log lines")

        # Django's warning about the 404 and the server's access line (uvicorn's
        # under `make serve`'s default WEB_SERVER=asgi), both naming the request.
        lines_of(
            "web",
            lambda line: line.get("request_id") == "trace-1",
            lambda found: {line["logger"] for line in found} >= {"django.request", ACCESS},
        )
        access = [line for line in json_lines(stack.log("web")) if line["logger"] == ACCESS]
        assert all(line.get("request_id") for line in access), access

        task_lines = lines_of(
            "cluster",
            lambda line: line.get("task_id") == task_id,
            lambda found: any("failed" in line["message"] for line in found),
        )
        assert {line["attempt"] for line in task_lines} == {1}
        # Ours, and django-q2's own about the attempt.
        assert {"tasks.worker", "django-q"} <= {line["logger"] for line in task_lines}
        # Every line of both processes parses (json_lines fails on any other).
        assert json_lines(stack.log("web")) and json_lines(stack.log("cluster"))
    finally:
        stack.stop()
