"""`make run` as a newcomer uses it: in a copy of the project with no .env and
no database, it serves the API with the workers running on SQLite, honours
PORT and DATABASE_URL from the environment over .env, and stopping it
(Ctrl-C, or SIGTERM to `make` alone, as `timeout` or a process manager sends
it) leaves nothing running.

The copy shares the suite's virtualenv (a symlink); `-o` keeps make from
reinstalling into it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from .harness import HTTP_TIMEOUT, ROOT, free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", ".env", "*.sqlite3", "__pycache__", ".pytest_cache", ".ruff_cache",
    "test-artifacts", "node_modules",
)  # fmt: skip


def processes_in(directory: Path) -> list[int]:
    """Pids of the processes whose working directory is `directory`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == directory:
                    pids.append(int(entry.name))
            except OSError:  # gone, or not ours to look at
                continue
    return pids


@pytest.fixture
def project_copy(tmp_path):
    if not Path("/proc/self/cwd").exists():
        pytest.skip("needs /proc to find the processes `make run` leaves behind")
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    copy = tmp_path / "project"
    shutil.copytree(ROOT, copy, ignore=NOT_COPIED)
    (copy / ".venv").symlink_to(ROOT / ".venv")
    yield copy.resolve()
    for pid in processes_in(copy.resolve()):  # only if the test failed
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm-to-make"])
def test_make_run_serves_runs_tasks_and_stops_cleanly(project_copy, stop):
    port = free_port()
    log = project_copy.parent / "make-run.log"
    # Only what a shell would have, and two settings that must win over the
    # .env that make writes (README: "the environment wins").
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    database = project_copy.parent / "elsewhere.sqlite3"
    env |= {"PORT": str(port), "DATABASE_URL": f"sqlite:///{database}"}
    make = subprocess.Popen(
        ["make", "-o", ".venv/.installed", "run"],
        cwd=project_copy,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, like a terminal's job
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy():
            try:
                body = requests.get(base + "/health", timeout=HTTP_TIMEOUT).json()
            except requests.RequestException:
                return None
            return body["status"] == "ok" and body["checks"]["workers"]["alive"] >= 1 and body

        health = wait_for(healthy, 120, interval=0.5, what="`make run` to serve with workers")
        assert health["queue"]["broker"] == "orm"
        assert (project_copy / ".env").is_file()
        assert database.is_file() and not (project_copy / "db.sqlite3").exists()

        # The admin that `make run` creates from .env logs in and runs a task.
        login = requests.post(
            base + "/login",
            json={"username": "admin", "password": "admin-change-me"},
            timeout=HTTP_TIMEOUT,
        )
        assert login.status_code == 200, login.text
        auth = {"Authorization": "Bearer " + login.json()["Token"]}
        created = requests.post(
            base + "/tasks",
            json={"type": "wordcount", "args": {"text": "one two three"}},
            headers=auth,
            timeout=HTTP_TIMEOUT,
        )
        assert created.status_code == 202, created.text
        task_id = created.json()["task_id"]
        done = wait_for(
            lambda: (
                (r := requests.get(f"{base}/tasks/completed/{task_id}", headers=auth, timeout=30))
                and r.status_code == 200
                and r.json()
            ),
            60,
            interval=0.2,
            what="the task to complete",
        )
        assert done["output"]["words"] == 3
    finally:
        if stop == "ctrl-c":
            os.killpg(make.pid, signal.SIGINT)
        else:
            make.send_signal(signal.SIGTERM)
        make.wait(timeout=30)

    try:
        wait_for(
            lambda: not processes_in(project_copy),
            15,
            interval=0.2,
            what="every process of `make run` to exit",
        )
    except AssertionError as exc:
        left = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in processes_in(project_copy)]
        raise AssertionError(f"{exc}: {left}\n{log.read_text()[-5000:]}") from None
    with pytest.raises(requests.ConnectionError):
        requests.get(base + "/health", timeout=5)
