"""The Task Runner API from Python, on the standard library alone.

from taskrunner_client import Client

client = Client("http://127.0.0.1:8081", api_key="...")
print(client.submit("primes", limit=100).wait().output)
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8081"
FINISHED = frozenset({"completed", "failed", "cancelled"})
# The longest long-poll the server allows (GET /tasks/{id}?wait=N).
MAX_WAIT = 30


class TaskRunnerError(Exception):
    """Anything this client reports."""


class Unreachable(TaskRunnerError):
    """The server could not be reached (refused, timed out, not HTTP)."""


class APIError(TaskRunnerError):
    """The server answered with an error: `status` and its JSON `body`."""

    def __init__(self, status: int, body: Any, path: str = "") -> None:
        self.status = status
        self.body = body if isinstance(body, dict) else {"error": str(body)}
        self.path = path
        message = self.body.get("error") or f"HTTP {status}"
        fields = self.body.get("fields")
        if fields:
            message = f"{message} {json.dumps(fields, ensure_ascii=False)}"
        super().__init__(message)

    @property
    def code(self) -> str | None:
        """The machine-readable error code, on servers that send one."""
        code = self.body.get("code")
        return code if isinstance(code, str) else None


class AuthenticationFailed(APIError):
    """401: no credentials, or ones the server refuses (expired, revoked, wrong)."""


class NotFound(APIError):
    """404: no such task (or another user's), or no such endpoint."""


class Task:
    """One task as the server last described it; `refresh`, `wait`, `cancel`
    and `retry` ask again."""

    def __init__(self, client: Client, data: Mapping[str, Any]) -> None:
        self.client = client
        self.data = dict(data)

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.type} {self.status}>"

    @property
    def id(self) -> int:
        return int(self.data.get("id", self.data.get("task_id")))  # type: ignore[arg-type]

    @property
    def type(self) -> str | None:
        return self.data.get("type")

    @property
    def status(self) -> str | None:
        return self.data.get("status")

    @property
    def output(self) -> Any:
        return self.data.get("output")

    @property
    def error(self) -> dict[str, Any] | None:
        return self.data.get("error")

    @property
    def progress(self) -> dict[str, Any]:
        return self.data.get("progress") or {}

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.status == "completed"

    def refresh(self) -> Task:
        self.data = self.client.get_task_data(self.id)
        return self

    def wait(self, timeout: float | None = None) -> Task:
        """Wait until the task is finished (long-polling the server); after
        `timeout` seconds, return it as it is then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = MAX_WAIT if deadline is None else deadline - time.monotonic()
            # Whole seconds, at least one: a shorter wait would be a busy loop.
            wait = max(1, min(MAX_WAIT, math.ceil(left)))
            self.data = self.client.get_task_data(self.id, wait=wait)
            if self.finished or (deadline is not None and time.monotonic() >= deadline):
                return self

    def cancel(self) -> Task:
        self.data = self.client.request("POST", f"/tasks/{self.id}/cancel")
        return self

    def retry(self) -> Task:
        self.data = self.client.request("POST", f"/tasks/{self.id}/retry")
        return self


class Client:
    """A session with one server. Credentials: an API key (`Authorization:
    Api-Key <key>`), or an access token, optionally with a refresh token used
    to get new ones when the server answers 401. `on_tokens(tokens)` is
    called with every new pair (rotating refresh tokens must be kept)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        token: str | None = None,
        refresh_token: str | None = None,
        on_tokens: Callable[[dict[str, Any]], None] | None = None,
        timeout: float = 30,
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"Not an http(s) URL: {url!r}")
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.token = token
        self.refresh_token = refresh_token
        self.on_tokens = on_tokens
        self.timeout = timeout

    # --- HTTP ---------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Api-Key {self.api_key}"
        elif self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _send(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, Any]:
        data = None
        all_headers = {**self._headers(), **(headers or {})}
        if body is not None:
            # NaN and Infinity are no JSON: refused here rather than by the server.
            data = json.dumps(body, allow_nan=False).encode()
            all_headers["Content-Type"] = "application/json"
        # The URL's scheme was checked in __init__: http or https, never file:.
        request = urllib.request.Request(  # noqa: S310
            self.url + path, data=data, method=method, headers=all_headers
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:  # noqa: S310
                return response.status, _json(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read())
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"Cannot reach {self.url}: {reason}") from exc

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one request; return the JSON body of a 2xx answer, or raise
        APIError (AuthenticationFailed, NotFound) / Unreachable. A 401 with a
        refresh token at hand refreshes the tokens and tries once more."""
        status, data = self._send(method, path, body, headers=headers, timeout=timeout)
        if status == 401 and not self.api_key and self.refresh_token:
            self.refresh()
            status, data = self._send(method, path, body, headers=headers, timeout=timeout)
        if status >= 400:
            raise _error(status, data, path)
        return data

    # --- Accounts -----------------------------------------------------------

    def login(self, username: str, password: str) -> dict[str, Any]:
        """Trade a username and password for tokens (kept, and passed to on_tokens)."""
        status, data = self._send("POST", "/login", {"username": username, "password": password})
        if status >= 400:
            raise _error(status, data, "/login")
        self._keep(data)
        return data

    def refresh(self) -> dict[str, Any]:
        """New access and refresh tokens from the refresh token (which rotates)."""
        status, data = self._send("POST", "/token/refresh", {"refresh": self.refresh_token})
        if status >= 400:
            raise _error(status, data, "/token/refresh")
        self._keep(data)
        return data

    def _keep(self, tokens: dict[str, Any]) -> None:
        self.token = tokens.get("access") or tokens.get("Token")
        self.refresh_token = tokens.get("refresh", self.refresh_token)
        if self.on_tokens:
            self.on_tokens({"access": self.token, "refresh": self.refresh_token})

    def me(self) -> dict[str, Any]:
        return self.request("GET", "/me")

    # --- Tasks --------------------------------------------------------------

    def types(self) -> list[dict[str, Any]]:
        return self.request("GET", "/tasks/types")["types"]

    def submit(self, type_name: str, /, **args: Any) -> Task:
        """Start a task of `type_name` with `args` as its arguments."""
        return self.create(type_name, args)

    def create(
        self,
        type_name: str,
        args: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> Task:
        """Start a task with request options too (timeout, max_retries,
        priority, run_at or delay, concurrency_key, unique_key)."""
        body = {"type": type_name, "args": dict(args or {}), **options}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        started = self.request("POST", "/tasks", body, headers=headers)
        return Task(self, {**started, "id": started["task_id"]})

    def get_task_data(self, task_id: int, *, wait: int = 0) -> dict[str, Any]:
        query = f"?wait={wait}" if wait else ""
        return self.request("GET", f"/tasks/{int(task_id)}{query}", timeout=self.timeout + wait)

    def task(self, task_id: int) -> Task:
        return Task(self, self.get_task_data(task_id))

    def cancel(self, task_id: int) -> Task:
        return Task(self, self.request("POST", f"/tasks/{int(task_id)}/cancel"))

    def retry(self, task_id: int) -> Task:
        return Task(self, self.request("POST", f"/tasks/{int(task_id)}/retry"))

    def tasks(
        self, *, status: str | None = None, type: str | None = None, page_size: int = 50
    ) -> Iterator[Task]:
        """Your tasks, newest first, following the cursor pages."""
        query = {"page_size": page_size, "status": status, "type": type}
        path: str | None = "/tasks?" + urllib.parse.urlencode(
            {k: v for k, v in query.items() if v is not None}
        )
        while path:
            page = self.request("GET", path)
            for item in page["results"]:
                yield Task(self, item)
            path = _path_of(page.get("next"))

    def logs(self, task_id: int, after: int = 0) -> Any:
        """One page of the task's log lines after seq `after` (GET /tasks/{id}/logs):
        `results`, `next_after`, `has_more`, `finished`."""
        return self.request("GET", f"/tasks/{int(task_id)}/logs?after={int(after)}")


def _json(raw: bytes) -> Any:
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return {"error": raw[:200].decode("utf-8", "replace")}


def _error(status: int, data: Any, path: str) -> APIError:
    kind = {401: AuthenticationFailed, 404: NotFound}.get(status, APIError)
    return kind(status, data, path)


def _path_of(url: str | None) -> str | None:
    """The path and query of a `next` link (its host may be the server's own name)."""
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")
