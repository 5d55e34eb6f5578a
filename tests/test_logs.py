"""LOG_FORMAT=json: one JSON object per line, the request id on a request's
lines, the task id and attempt on a worker's."""

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from config.logs import ContextFilter, JsonFormatter, task_context
from tasks.models import Task

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def json_lines():
    """What the root logger writes through the project's JSON handler."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)

    def lines():
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield lines
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_a_record_is_one_json_line_even_with_a_traceback(json_lines):
    try:
        raise ValueError("multi\nline")
    except ValueError:
        logging.getLogger("tasks.test").exception("it broke: %s", {"a": 1})

    (line,) = json_lines()
    assert line["level"] == "ERROR"
    assert line["logger"] == "tasks.test"
    assert line["message"] == "it broke: {'a': 1}"
    assert "ValueError: multi\nline" in line["exception"]
    assert line["time"].endswith("+00:00")
    assert "request_id" not in line and "task_id" not in line


@pytest.mark.django_db
def test_every_line_of_a_request_names_it(json_lines, api, outsider_api, owner):
    task = Task.objects.create(owner=owner, type="wordcount", args={"text": "a"}, timeout=60)

    response = outsider_api.get(f"/tasks/{task.pk}")  # 404: Django logs a warning
    refused = APIClient().get("/tasks")  # 401: another request, another id

    ids = {response["X-Request-ID"], refused["X-Request-ID"]}
    assert len(ids) == 2
    lines = [line for line in json_lines() if line["logger"] == "django.request"]
    assert len(lines) == 2
    assert {line["request_id"] for line in lines} == ids


@pytest.mark.django_db
def test_a_sane_client_request_id_is_kept_and_a_wild_one_replaced(api):
    kept = api.get("/me", HTTP_X_REQUEST_ID="trace-42.abc")
    replaced = api.get("/me", HTTP_X_REQUEST_ID="evil\nINFO forged line " + "x" * 200)

    assert kept["X-Request-ID"] == "trace-42.abc"
    assert len(replaced["X-Request-ID"]) == 32 and "\n" not in replaced["X-Request-ID"]


@pytest.mark.django_db
def test_a_workers_lines_name_the_task_and_attempt(json_lines, api, run_jobs):
    response = run_jobs(
        api.post, "/tasks", {"type": "test.fail", "args": {"message": "boom"}}, format="json"
    )
    task_id = response.json()["task_id"]

    worker_lines = [line for line in json_lines() if line["logger"] == "tasks.worker"]
    assert len(worker_lines) >= 2  # started, failed
    for line in worker_lines:
        assert line["task_id"] == task_id
        assert line["attempt"] == 1
    # Outside the attempt, nothing names a task.
    logging.getLogger("tasks.test").info("after")
    assert "task_id" not in json_lines()[-1]


def test_a_task_functions_own_logging_names_its_task(json_lines):
    with task_context(task=7, attempt_number=2):
        logging.getLogger("myapp.jobs").warning("halfway")

    (line,) = json_lines()
    assert (line["task_id"], line["attempt"], line["message"]) == (7, 2, "halfway")


def settings_with(**env):
    return subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.LOGGING)"],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "SECRET_KEY": "x" * 50,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_unknown_log_format_is_refused_with_a_sentence():
    result = settings_with(LOG_FORMAT="xml")

    assert result.returncode != 0
    assert "LOG_FORMAT must be plain or json" in result.stderr
    assert "'formatter': 'json'" in settings_with(LOG_FORMAT="json").stdout


def test_django_q_lines_about_an_attempt_name_it(json_lines):
    logging.getLogger("django-q").info("Process-1 processing task-12-attempt-3 'run_task'")
    logging.getLogger("django-q").info("Q Cluster starting.")

    about, other = json_lines()
    assert (about["task_id"], about["attempt"]) == (12, 3)
    assert "task_id" not in other
