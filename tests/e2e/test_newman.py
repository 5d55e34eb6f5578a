"""The Postman collection, run by newman against a real server and cluster.

Skipped where newman is not installed, except under CI=true, where it fails.
"""

import json
import os
import shutil
import subprocess

import pytest
import requests

from .harness import PASSWORD, ROOT, wait_for

pytestmark = [pytest.mark.e2e]

COLLECTION = ROOT / "postman" / "task-runner.postman_collection.json"


def test_the_whole_collection_passes_against_a_running_server(stack, tmp_path):
    newman = shutil.which("newman")
    if newman is None:
        reason = "newman is not installed (npm install -g newman)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: the collection must run).")
        pytest.skip(reason)
    stack.manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_superuser('operator', password={PASSWORD!r})",
    )
    wait_for(
        lambda: requests.get(stack.base + "/health", timeout=10).status_code == 200,
        60,
        what="a worker heartbeat",
    )
    report = tmp_path / "newman.json"

    result = subprocess.run(
        [
            newman,
            "run",
            str(COLLECTION),
            "--env-var",
            f"baseUrl={stack.base}",
            "--env-var",
            "username=operator",
            "--env-var",
            f"password={PASSWORD}",
            "--reporters",
            "cli,json",
            "--reporter-json-export",
            str(report),
            "--timeout-request",
            "30000",
            "--color",
            "off",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout[-10000:] + result.stderr[-3000:]
    run = json.loads(report.read_text())["run"]
    assert run["stats"]["assertions"]["failed"] == 0
    assert run["stats"]["assertions"]["total"] >= 40
    executed = {(e["item"]["name"]) for e in run["executions"]}
    folders = json.loads(COLLECTION.read_text())["item"]
    assert executed == {item["name"] for folder in folders for item in folder["item"]}
