"""`make run` as a newcomer uses it: in a copy of the project with no .env and
no database, it serves the API with the workers running on SQLite, honours
PORT and DATABASE_URL from the environment over .env, and stopping it
(Ctrl-C, or SIGTERM to `make` alone, as `timeout` or a process manager sends
it) leaves nothing running. A cluster killed under it is replaced; a killed
worker supervisor takes its cluster along instead of leaving it orphaned.

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
    """Pids of the live processes whose working directory is `directory`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == directory:
                    pids.append(int(entry.name))
            except OSError:  # gone, a zombie, or not ours to look at
                continue
    return pids


def command_of(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


def parent_of(pid: int) -> int | None:
    try:
        # The fields after the command name, which is in parentheses.
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


class MakeRun:
    """`make run` in the project copy, with its own process group."""

    def __init__(self, copy: Path) -> None:
        self.copy = copy
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = copy.parent / "make-run.log"
        self.database = copy.parent / "elsewhere.sqlite3"
        # Only what a shell would have, and two settings that must win over
        # the .env that make writes (README: "the environment wins").
        env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
        env |= {"PORT": str(self.port), "DATABASE_URL": f"sqlite:///{self.database}"}
        self.make = subprocess.Popen(
            ["make", "-o", ".venv/.installed-run", "run"],
            cwd=copy,
            env=env,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a terminal's job
        )
        self.auth: dict[str, str] = {}

    def health(self) -> dict | None:
        try:
            return requests.get(self.base + "/health", timeout=HTTP_TIMEOUT).json()
        except requests.RequestException:
            return None

    def wait_ready(self) -> dict:
        def ready():
            body = self.health()
            return body and body["status"] == "ok" and body["checks"]["workers"]["alive"] >= 1

        wait_for(ready, 120, interval=0.5, what="`make run` to serve with workers")
        # The admin that `make run` creates from .env.
        login = requests.post(
            self.base + "/login",
            json={"username": "admin", "password": "admin-change-me"},
            timeout=HTTP_TIMEOUT,
        )
        assert login.status_code == 200, login.text
        self.auth = {"Authorization": "Bearer " + login.json()["Token"]}
        return self.health()

    def run_task(self, text: str) -> dict:
        created = requests.post(
            self.base + "/tasks",
            json={"type": "wordcount", "args": {"text": text}},
            headers=self.auth,
            timeout=HTTP_TIMEOUT,
        )
        assert created.status_code == 202, created.text
        url = f"{self.base}/tasks/completed/{created.json()['task_id']}"
        return wait_for(
            lambda: (
                (r := requests.get(url, headers=self.auth, timeout=HTTP_TIMEOUT))
                and r.status_code == 200
                and r.json()
            ),
            60,
            interval=0.2,
            what="the task to complete",
        )

    def cluster_pids(self) -> list[int]:
        """qcluster main processes: the ones started by `manage.py runworkers`."""
        supervisors = set(self.supervisor_pids())
        return [
            pid
            for pid in processes_in(self.copy)
            if command_of(pid)[-2:] == ["manage.py", "qcluster"] and parent_of(pid) in supervisors
        ]

    def supervisor_pids(self) -> list[int]:
        return [
            pid
            for pid in processes_in(self.copy)
            if command_of(pid)[-2:] == ["manage.py", "runworkers"]
        ]

    def group_alive(self, pgid: int) -> bool:
        return any(os.getpgid(pid) == pgid for pid in processes_in(self.copy) if _exists(pid))

    def wait_all_gone(self) -> None:
        try:
            self.make.wait(timeout=30)
            wait_for(
                lambda: not processes_in(self.copy),
                15,
                interval=0.2,
                what="every process of `make run` to exit",
            )
        except (AssertionError, subprocess.TimeoutExpired) as exc:
            left = [command_of(pid) for pid in processes_in(self.copy)]
            raise AssertionError(f"{exc}: {left}\n{self.log.read_text()[-5000:]}") from None
        with pytest.raises(requests.ConnectionError):
            requests.get(self.base + "/health", timeout=5)

    def ctrl_c(self) -> None:
        if self.make.poll() is None:
            os.killpg(self.make.pid, signal.SIGINT)


def _exists(pid: int) -> bool:
    try:
        os.getpgid(pid)
        return True
    except ProcessLookupError:
        return False


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
    run = MakeRun(project_copy)
    try:
        health = run.wait_ready()
        assert health["queues"] == {}
        assert (project_copy / ".env").is_file()
        assert run.database.is_file() and not (project_copy / "db.sqlite3").exists()
        assert run.run_task("one two three")["output"]["words"] == 3
    finally:
        if stop == "ctrl-c":
            run.ctrl_c()
        else:
            run.make.send_signal(signal.SIGTERM)
    run.wait_all_gone()


def test_a_killed_cluster_is_replaced_and_tasks_go_on(project_copy):
    run = MakeRun(project_copy)
    try:
        run.wait_ready()
        assert run.run_task("before")["output"]["words"] == 1
        [old] = run.cluster_pids()

        os.kill(old, signal.SIGKILL)

        # Its sentinel and workers (same process group) go too, and a new
        # cluster takes over under the same supervisor.
        wait_for(lambda: not run.group_alive(old), 30, what="the old cluster's processes to go")
        [new] = wait_for(run.cluster_pids, 60, what="a new cluster")
        assert new != old
        assert run.run_task("after the kill")["output"]["words"] == 3
        assert "qcluster exited unexpectedly" in run.log.read_text()
    finally:
        run.ctrl_c()
    run.wait_all_gone()


def test_a_killed_worker_supervisor_takes_its_cluster_along(project_copy):
    run = MakeRun(project_copy)
    try:
        run.wait_ready()
        [supervisor] = run.supervisor_pids()
        [cluster] = run.cluster_pids()

        os.kill(supervisor, signal.SIGKILL)

        # The cluster hears of it (SIGTERM on its parent's death) and stops;
        # honcho then sees the worker gone and stops the web server too.
        wait_for(lambda: not run.group_alive(cluster), 30, what="the orphaned cluster to stop")
    finally:
        run.ctrl_c()
    run.wait_all_gone()
