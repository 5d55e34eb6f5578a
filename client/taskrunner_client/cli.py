"""`taskrunner`: the Task Runner API from a shell.

Exit codes: 0 done (a waited-for task completed), 1 the task failed or was
cancelled, or the server refused the operation (not found, conflict,
throttled, server error), 2 a usage error (bad options or arguments,
including arguments the server rejects), 3 the server cannot be reached or
the credentials are missing or refused.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import credentials
from .client import (
    DEFAULT_URL,
    APIError,
    AuthenticationFailed,
    Client,
    NotFound,
    Task,
    Unreachable,
)

OK, FAILED, USAGE, UNAVAILABLE = 0, 1, 2, 3


class UsageError(Exception):
    pass


class NotLoggedIn(Exception):
    pass


# --- Arguments -----------------------------------------------------------------


def _not_json(constant: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON has not (the server refuses them).
    raise ValueError(f"{constant} is not JSON")


def parse_arg(text: str) -> tuple[str, Any]:
    """`KEY=VALUE`: the value as JSON when it parses (10, true, [1,2], "x"),
    else as the string it is (NaN too: it is no JSON)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise UsageError(f"--arg takes KEY=VALUE, not {text!r}")
    try:
        return key, json.loads(raw, parse_constant=_not_json)
    except ValueError:
        return key, raw


def task_args(options: argparse.Namespace) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if options.args_json is not None:
        try:
            args = json.loads(options.args_json, parse_constant=_not_json)
        except ValueError as exc:
            raise UsageError(f"--args-json is not valid JSON: {exc}") from exc
        if not isinstance(args, dict):
            raise UsageError("--args-json must be a JSON object")
    for item in options.arg or []:
        key, value = parse_arg(item)
        args[key] = value
    return args


def build_parser() -> argparse.ArgumentParser:
    # The connection options work before or after the command; SUPPRESS keeps a
    # subcommand's parser from overwriting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"the server (env TASKRUNNER_URL; default {DEFAULT_URL})",
    )
    common.add_argument(
        "--api-key",
        default=argparse.SUPPRESS,
        help="an API key (env TASKRUNNER_API_KEY); else the tokens of `taskrunner login`",
    )
    parser = argparse.ArgumentParser(
        prog="taskrunner",
        description="Start Task Runner tasks, follow them and fetch their output.",
        epilog="Exit codes: 0 done, 1 task failed or cancelled (or the server refused), "
        "2 usage, 3 cannot reach the server or authenticate.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, parents=[common])

    login = command("login", "log in with a username and password; the tokens are stored")
    login.add_argument("--username", "-u")
    login.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    command("logout", "revoke and forget the stored tokens")

    types = command("types", "the task types you can start")
    types.add_argument("--json", action="store_true", help="print JSON")

    submit = command("submit", "start a task")
    submit.add_argument("type", metavar="TYPE")
    submit.add_argument(
        "--arg",
        action="append",
        metavar="KEY=VALUE",
        help="an argument (repeatable); VALUE is JSON when it parses, else a string",
    )
    submit.add_argument("--args-json", metavar="JSON", help="the arguments as a JSON object")
    submit.add_argument("--priority", type=int, help="-100..100, higher first")
    submit.add_argument("--delay", type=float, help="start no sooner than SECONDS from now")
    submit.add_argument("--timeout", type=int, help="the task's timeout in seconds")
    submit.add_argument("--idempotency-key", help="the same key returns the same task")
    submit.add_argument("--wait", action="store_true", help="wait for the task to finish")
    submit.add_argument("--json", action="store_true", help="print the task as JSON")

    status = command("status", "a task's status and progress")
    status.add_argument("id", type=int, metavar="ID")
    status.add_argument("--json", action="store_true", help="print the task as JSON")

    wait = command("wait", "wait for a task to finish and print its output")
    wait.add_argument("id", type=int, metavar="ID")
    wait.add_argument("--timeout", type=float, help="give up after SECONDS (exit 1)")
    wait.add_argument("--json", action="store_true", help="print the task as JSON")

    logs = command("logs", "a task's log lines")
    logs.add_argument("id", type=int, metavar="ID")
    logs.add_argument("--follow", "-f", action="store_true", help="until the task finishes")

    listing = command("list", "your tasks, newest first")
    listing.add_argument("--status", help="queued, in_progress, completed, failed or cancelled")
    listing.add_argument("--type", help="only tasks of this type")
    listing.add_argument("--limit", type=int, default=20, help="at most N (default 20)")
    listing.add_argument("--json", action="store_true", help="print JSON")

    cancel = command("cancel", "cancel a task (a running one stops at its next check)")
    cancel.add_argument("id", type=int, metavar="ID")
    retry = command("retry", "run a failed or cancelled task again")
    retry.add_argument("id", type=int, metavar="ID")
    for sub in (cancel, retry):
        sub.add_argument("--json", action="store_true", help="print the task as JSON")
    return parser


# --- Output --------------------------------------------------------------------


def out(text: str = "") -> None:
    print(text, flush=True)


def err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def print_json(value: Any) -> None:
    out(json.dumps(value, indent=2, ensure_ascii=False))


def describe(task: Task) -> str:
    progress = task.progress
    line = f"{task.id} {task.type} {task.status} {progress.get('percent', 0)}%"
    if progress.get("message"):
        line += f" {progress['message']}"
    return line


def finish(task: Task, as_json: bool) -> int:
    """Print a task that was waited for; its exit code."""
    if as_json:
        print_json(task.data)
    elif task.succeeded:
        print_json(task.output)
    elif not task.finished:
        err(f"Task {task.id} is still {task.status}.")
    else:
        message = (task.error or {}).get("message", "")
        err(f"Task {task.id} {task.status}." + (f" {message}" if message else ""))
    return OK if task.succeeded else FAILED


# --- Commands ------------------------------------------------------------------


def make_client(options: argparse.Namespace, *, needs_auth: bool = True) -> Client:
    url = getattr(options, "url", None) or os.environ.get("TASKRUNNER_URL") or DEFAULT_URL
    api_key = getattr(options, "api_key", None) or os.environ.get("TASKRUNNER_API_KEY")
    try:
        client = Client(url, api_key=api_key or None)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if api_key:
        return client
    stored = credentials.load(client.url)
    if needs_auth and not stored.get("access"):
        raise NotLoggedIn(
            f"Not logged in to {client.url}: run `taskrunner login`, or give --api-key "
            "(or TASKRUNNER_API_KEY)."
        )

    def keep(tokens: dict[str, Any]) -> None:
        credentials.save(client.url, {**credentials.load(client.url), **tokens})

    client.token = stored.get("access")
    client.refresh_token = stored.get("refresh")
    client.on_tokens = keep
    return client


def cmd_login(options: argparse.Namespace) -> int:
    client = make_client(options, needs_auth=False)
    client.api_key = None
    try:
        username = options.username or input("Username: ")
        if options.password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass("Password: ")
    except EOFError:
        raise UsageError("no username or password to read (use -u and --password-stdin)") from None
    client.on_tokens = lambda tokens: credentials.save(client.url, {"username": username, **tokens})
    try:
        client.login(username, password)
    except AuthenticationFailed as exc:
        err(f"Login refused: {exc}")
        return UNAVAILABLE
    err(f"Logged in to {client.url} as {username}.")
    return OK


def cmd_logout(options: argparse.Namespace) -> int:
    client = make_client(options, needs_auth=False)
    refresh = credentials.load(client.url).get("refresh")
    if refresh and client.token:
        try:
            client.request("POST", "/logout", {"refresh": refresh})
        except APIError:
            pass  # already expired or revoked: forgetting it is all that is left
    credentials.save(client.url, None)
    err(f"Logged out of {client.url}.")
    return OK


def cmd_types(options: argparse.Namespace) -> int:
    types = make_client(options).types()
    if options.json:
        print_json(types)
        return OK
    width = max((len(t["name"]) for t in types), default=0)
    for t in types:
        out(f"{t['name']:<{width}}  {t.get('description', '')}")
    return OK


def cmd_submit(options: argparse.Namespace) -> int:
    args = task_args(options)
    client = make_client(options)
    extra = {
        key: getattr(options, key)
        for key in ("priority", "delay", "timeout")
        if getattr(options, key) is not None
    }
    task = client.create(options.type, args, idempotency_key=options.idempotency_key, **extra)
    if options.wait:
        return finish(task.wait(), options.json)
    if options.json:
        print_json(task.data)
    else:
        existed = task.data.get("message") == "Task already exists"
        err(f"Task {task.id} {'already exists' if existed else 'started'} ({task.type}).")
        out(str(task.id))
    return OK


def cmd_status(options: argparse.Namespace) -> int:
    task = make_client(options).task(options.id)
    if options.json:
        print_json(task.data)
    else:
        out(describe(task))
        if task.error:
            out(f"error: {task.error.get('message', '')}")
    return FAILED if task.status in ("failed", "cancelled") else OK


def cmd_wait(options: argparse.Namespace) -> int:
    task = make_client(options).task(options.id)
    return finish(task.wait(timeout=options.timeout), options.json)


def cmd_list(options: argparse.Namespace) -> int:
    client = make_client(options)
    if options.limit < 1:
        raise UsageError("--limit takes a positive number")
    limit = options.limit
    tasks: list[Task] = []
    for task in client.tasks(
        status=options.status, type=options.type, page_size=min(limit, 200) or 1
    ):
        if len(tasks) >= limit:
            break
        tasks.append(task)
    if options.json:
        print_json([t.data for t in tasks])
        return OK
    for task in tasks:
        out(f"{describe(task)}  {task.data.get('created_at', '')}")
    return OK


def cmd_cancel(options: argparse.Namespace) -> int:
    task = make_client(options).cancel(options.id)
    if options.json:
        print_json(task.data)
    elif task.status == "cancelled":
        out(f"Task {task.id} cancelled.")
    else:
        out(f"Task {task.id} asked to stop (it is {task.status}).")
    return OK


def cmd_retry(options: argparse.Namespace) -> int:
    task = make_client(options).retry(options.id)
    if options.json:
        print_json(task.data)
    else:
        out(f"Task {task.id} queued again.")
    return OK


def _log_lines(body: Any) -> list[Any]:
    if isinstance(body, dict):
        for key in ("results", "lines", "logs"):
            if isinstance(body.get(key), list):
                return body[key]
        return []
    return body if isinstance(body, list) else []


def _format_line(line: Any) -> str:
    if not isinstance(line, dict):
        return str(line)
    when = line.get("at") or line.get("created_at") or line.get("time") or ""
    level = line.get("level", "")
    return " ".join(str(part) for part in (when, level, line.get("message", "")) if part)


def cmd_logs(options: argparse.Namespace) -> int:
    client = make_client(options)
    after = 0
    try:
        page = client.logs(options.id, after)
    except NotFound as exc:
        if exc.body.get("error") == "Task not found":
            raise
        err(
            "This server has no task logs endpoint (GET /tasks/{id}/logs); "
            f"`taskrunner status {options.id}` shows the task's progress message."
        )
        return FAILED
    while True:
        for line in _log_lines(page):
            out(_format_line(line))
        paged = isinstance(page, dict) and "next_after" in page
        if paged:
            after = max(after, int(page["next_after"]))
        if paged and page.get("has_more"):
            page = client.logs(options.id, after)
            continue
        # Lines are stored before the end of the attempt is, so once the task
        # is finished and the last page read, nothing more will come.
        if not options.follow or not paged or page.get("finished"):
            break
        time.sleep(1)
        page = client.logs(options.id, after)
    return OK


COMMANDS = {
    "login": cmd_login,
    "logout": cmd_logout,
    "types": cmd_types,
    "submit": cmd_submit,
    "status": cmd_status,
    "wait": cmd_wait,
    "logs": cmd_logs,
    "list": cmd_list,
    "cancel": cmd_cancel,
    "retry": cmd_retry,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    options = parser.parse_args(argv)
    try:
        return COMMANDS[options.command](options)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        err(f"taskrunner: error: {exc}")
        return USAGE
    except (NotLoggedIn, Unreachable) as exc:
        err(str(exc))
        return UNAVAILABLE
    except AuthenticationFailed as exc:
        err(f"Not authenticated: {exc} (run `taskrunner login`, or check the API key).")
        return UNAVAILABLE
    except APIError as exc:
        err(f"Error {exc.status}: {exc}")
        if exc.status == 403:
            return UNAVAILABLE
        return USAGE if exc.status == 400 else FAILED
    except KeyboardInterrupt:
        err("Interrupted.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
