"""The Python client and the `taskrunner` command line against a live server
(gunicorn + a real cluster): the round trip, credentials and exit codes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from taskrunner_client import AuthenticationFailed, Client, NotFound, Unreachable
from taskrunner_client.cli import parse_arg

from .conftest import failed
from .harness import PASSWORD, Stack, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LONG = 60  # seconds: a task that runs until the test cancels it


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("client"))
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture
def server(live, request):
    yield live
    if failed(request):
        print(live.all_logs(tail=8000))


@pytest.fixture
def config_home(tmp_path):
    return tmp_path / "config"


def taskrunner(stack: Stack, *args: str, config_home: Path, stdin: str = "", **env: str):
    """Run the command line in a process of its own; (exit code, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "taskrunner_client", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "XDG_CONFIG_HOME": str(config_home),
            "TASKRUNNER_URL": stack.base,
            "TASKRUNNER_API_KEY": "",
            **env,
        },
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def cli(server, config_home):
    """The command line, logged in as alice."""
    code, _, stderr = taskrunner(
        server,
        "login",
        "--username",
        "alice",
        "--password-stdin",
        config_home=config_home,
        stdin=PASSWORD + "\n",
    )
    assert code == 0, stderr

    def run(*args: str, **env: str):
        return taskrunner(server, *args, config_home=config_home, **env)

    return run


def credentials(config_home: Path) -> Path:
    return config_home / "taskrunner" / "credentials.json"


def test_login_stores_tokens_readable_by_the_user_alone(server, cli, config_home):
    path = credentials(config_home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    stored = json.loads(path.read_text())[server.base]
    assert stored["username"] == "alice"
    assert stored["access"] and stored["refresh"]

    code, stdout, _ = cli("types")
    assert code == 0
    assert any(line.startswith("primes ") for line in stdout.splitlines())


def test_submit_wait_json_prints_the_finished_task(cli):
    code, stdout, stderr = cli("submit", "primes", "--arg", "limit=100", "--wait", "--json")
    assert code == 0, stderr
    task = json.loads(stdout)
    assert task["status"] == "completed"
    assert task["output"] == {"limit": 100, "count": 25, "largest": 97}
    assert task["args"] == {"limit": 100}


def test_arguments_are_json_when_they_parse_else_strings(cli):
    code, stdout, stderr = cli(
        "submit",
        "wordcount",
        "--args-json",
        '{"text": "overwritten"}',
        "--arg",
        "text=the cat and the hat",
        "--arg",
        "top=1",
        "--wait",
    )
    assert code == 0, stderr
    assert json.loads(stdout)["most_common"] == [["the", 2]]
    assert parse_arg("n=10") == ("n", 10)
    assert parse_arg('s="10"') == ("s", "10")
    assert parse_arg("flag=true") == ("flag", True)
    assert parse_arg("list=[1, 2]") == ("list", [1, 2])
    assert parse_arg("word=hello") == ("word", "hello")
    assert parse_arg("eq=a=b") == ("eq", "a=b")
    # Python's json reads these; JSON has no such numbers: strings.
    assert parse_arg("x=NaN") == ("x", "NaN")
    assert parse_arg("x=-Infinity") == ("x", "-Infinity")


def test_submit_then_status_wait_and_list(cli):
    code, stdout, stderr = cli("submit", "wordcount", "--arg", "text=a b")
    assert code == 0, stderr
    task_id = int(stdout.strip())
    assert f"Task {task_id} started (wordcount)." in stderr

    code, stdout, stderr = cli(
        "submit", "wordcount", "--arg", "text=a b", "--idempotency-key", "cli-once"
    )
    assert code == 0
    again = cli("submit", "wordcount", "--arg", "text=a b", "--idempotency-key", "cli-once")
    assert again[0] == 0
    assert again[1] == stdout
    assert f"Task {int(stdout)} already exists (wordcount)." in again[2]

    code, stdout, _ = cli("wait", str(task_id), "--timeout", "60")
    assert code == 0
    assert json.loads(stdout)["words"] == 2

    code, stdout, _ = cli("status", str(task_id))
    assert code == 0
    assert stdout.startswith(f"{task_id} wordcount completed 100%")

    code, stdout, _ = cli("list", "--type", "wordcount", "--json")
    assert code == 0
    listed = json.loads(stdout)
    assert task_id in [t["id"] for t in listed]
    assert {t["type"] for t in listed} == {"wordcount"}
    code, stdout, _ = cli("list", "--limit", "1")
    assert code == 0 and len(stdout.splitlines()) == 1


def test_a_failed_task_exits_1(cli):
    code, stdout, stderr = cli("submit", "test.fail", "--arg", "message=nope", "--wait")
    assert code == 1
    assert stdout == ""
    assert "failed. nope" in stderr
    task_id = int(stderr.split()[1])
    code, stdout, _ = cli("status", str(task_id))
    assert code == 1
    assert "error: nope" in stdout


def test_cancel_then_retry(server, cli):
    code, stdout, _ = cli("submit", "test.hold", "--arg", f"seconds={LONG}")
    task_id = int(stdout.strip())
    server.wait_started(server.login("alice"), task_id)
    code, _, stderr = cli("wait", str(task_id), "--timeout", "1")
    assert code == 1
    assert f"Task {task_id} is still in_progress." in stderr

    code, stdout, _ = cli("cancel", str(task_id))
    assert code == 0
    assert stdout.strip() in (
        f"Task {task_id} cancelled.",
        f"Task {task_id} asked to stop (it is in_progress).",
    )
    code, _, stderr = cli("wait", str(task_id), "--timeout", "60")
    assert code == 1
    assert f"Task {task_id} cancelled." in stderr

    code, stdout, _ = cli("cancel", str(task_id))
    assert code == 1  # finished: a conflict

    code, stdout, _ = cli("retry", str(task_id), "--json")
    assert code == 0
    assert json.loads(stdout)["status"] in ("queued", "in_progress")
    assert cli("cancel", str(task_id))[0] == 0
    assert cli("wait", str(task_id), "--timeout", "60")[0] == 1


def test_logs_prints_every_page_of_a_tasks_log_and_follows_it(cli):
    code, stdout, _ = cli("submit", "test.log", "--arg", "lines=250", "--wait", "--json")
    task_id = json.loads(stdout)["id"]
    code, stdout, stderr = cli("logs", str(task_id))
    assert code == 0, stderr
    printed = stdout.splitlines()
    assert len(printed) == 250  # two pages of 200 and 50
    assert printed[0].endswith("INFO line 1 of attempt 1")
    assert printed[-1].endswith("INFO line 250 of attempt 1")

    code, stdout, _ = cli("submit", "demo", "--arg", "seconds=2", "--json")
    task_id = json.loads(stdout)["id"]
    code, stdout, stderr = cli("logs", str(task_id), "--follow")
    assert code == 0, stderr
    printed = stdout.splitlines()
    assert len(printed) == 10
    assert "100% done" in printed[-1]

    code, _, stderr = cli("status", "999999")
    assert code == 1
    assert "Task not found" in stderr


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("submit",),
        ("submit", "primes", "--arg", "limit"),
        ("submit", "primes", "--args-json", "[1]"),
        ("submit", "primes", "--args-json", "{nope"),
        ("status", "twelve"),
        ("submit", "no-such-type"),
        ("submit", "primes", "--arg", "limit=1"),
        ("submit", "primes", "--args-json", '{"limit": NaN}'),
        ("list", "--limit", "0"),
        ("list", "--limit", "-3"),
        ("login", "--username", "alice"),  # no terminal, nothing on stdin
    ],
)
def test_usage_errors_exit_2(cli, args):
    code, _, stderr = cli(*args)
    assert code == 2, stderr
    assert stderr and "Traceback" not in stderr


def test_a_url_that_is_not_http_is_a_usage_error(server, config_home):
    code, _, stderr = taskrunner(
        server, "--url", "file:///etc/passwd", "types", config_home=config_home
    )
    assert code == 2
    assert "Not an http(s) URL" in stderr


def test_an_unreachable_server_exits_3(server, config_home):
    url = f"http://127.0.0.1:{free_port()}"
    code, _, stderr = taskrunner(
        server, "--url", url, "types", config_home=config_home, TASKRUNNER_API_KEY="k"
    )
    assert code == 3
    assert f"Cannot reach {url}" in stderr


def test_missing_or_refused_credentials_exit_3(server, config_home):
    code, _, stderr = taskrunner(server, "types", config_home=config_home)
    assert code == 3
    assert "Not logged in" in stderr

    code, _, stderr = taskrunner(
        server,
        "login",
        "-u",
        "alice",
        "--password-stdin",
        config_home=config_home,
        stdin="wrong\n",
    )
    assert code == 3
    assert "Login refused: Invalid username or password" in stderr
    assert not credentials(config_home).exists()

    code, _, stderr = taskrunner(server, "--api-key", "not-a-key", "types", config_home=config_home)
    assert code == 3
    assert "Not authenticated" in stderr


def test_a_refused_access_token_is_refreshed_and_the_new_tokens_kept(server, cli, config_home):
    path = credentials(config_home)
    stored = json.loads(path.read_text())
    old_refresh = stored[server.base]["refresh"]
    stored[server.base]["access"] = "expired-or-garbage"
    path.write_text(json.dumps(stored))

    code, _, stderr = cli("list", "--json")
    assert code == 0, stderr
    renewed = json.loads(path.read_text())[server.base]
    assert renewed["access"] != "expired-or-garbage"
    assert renewed["refresh"] != old_refresh  # rotated, and the new one kept
    assert renewed["username"] == "alice"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    # The old refresh token is revoked: once both are bad, login is needed.
    renewed["access"], renewed["refresh"] = "garbage", old_refresh
    path.write_text(json.dumps({server.base: renewed}))
    code, _, stderr = cli("list")
    assert code == 3


def test_logout_forgets_the_tokens(cli, config_home, server):
    assert cli("logout")[0] == 0
    assert server.base not in json.loads(credentials(config_home).read_text())
    assert cli("types")[0] == 3


def test_the_console_script_is_installed(server, config_home):
    script = Path(sys.executable).parent / "taskrunner"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "Exit codes" in done.stdout


def test_the_python_client_round_trip(server):
    client = Client(server.base)
    client.login("alice", PASSWORD)

    assert client.submit("primes", limit=100).wait().output == {
        "limit": 100,
        "count": 25,
        "largest": 97,
    }
    held = client.create("test.hold", {"seconds": LONG}, priority=5)
    assert held.refresh().data["priority"] == 5
    assert held.cancel().wait(timeout=60).status == "cancelled"
    assert held.retry().status in ("queued", "in_progress")
    held.cancel()
    assert held.id in [t.id for t in client.tasks(type="test.hold")]

    with pytest.raises(NotFound):
        client.task(999999)
    with pytest.raises(AuthenticationFailed):
        Client(server.base, api_key="not-a-key").types()
    with pytest.raises(Unreachable):
        Client(f"http://127.0.0.1:{free_port()}", token="x").types()


def test_an_api_key_works_on_the_command_line_and_in_python_until_revoked(server, config_home):
    session = server.login()
    created = session.post(server.base + "/api-keys", json={"name": "cli"}, timeout=30)
    assert created.status_code == 201, created.text
    key, prefix = created.json()["key"], created.json()["prefix"]

    code, stdout, stderr = taskrunner(
        server, "--api-key", key, "submit", "primes", "--arg", "limit=30", "--wait", "--json",
        config_home=config_home,
    )  # fmt: skip
    assert code == 0, stderr
    assert json.loads(stdout)["output"] == {"limit": 30, "count": 10, "largest": 29}
    code, stdout, stderr = taskrunner(
        server, "list", config_home=config_home, TASKRUNNER_API_KEY=key
    )
    assert code == 0, stderr
    assert Client(server.base, api_key=key).submit("primes", limit=10).wait().output["count"] == 4

    assert session.delete(f"{server.base}/api-keys/{prefix}", timeout=30).status_code == 204
    code, _, _ = taskrunner(server, "--api-key", key, "types", config_home=config_home)
    assert code == 3
    with pytest.raises(AuthenticationFailed):
        Client(server.base, api_key=key).types()
