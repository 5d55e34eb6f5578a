"""Waits that hold no thread: a view answers `LoopWait`, and the ASGI handler
of `make serve` (config.asgi) awaits it on the event loop, then makes the
real response in a request thread.

Under `make serve` views run in a bounded pool of request threads (as many
as WEB_THREADS per process, each with its persistent database connection),
so a view that slept in one of them (`?wait=`) would take it from every
other request for up to its wait. Elsewhere (`make run`, the test client,
WEB_SERVER=gthread) `waits_on_loop(request)` is false and the view waits
in its thread as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from django.http import HttpResponse, HttpResponseBase

# Headers of the final response that are its own, not the middleware's.
OWN_HEADERS = {"content-type", "content-length"}


def waits_on_loop(request) -> bool:
    """Whether this request is served by config.asgi's handler (DRF's
    Request passes the attribute through to Django's)."""
    return bool(getattr(request, "waits_on_loop", False))


class LoopWait(HttpResponse):
    """Not sent as is: `wait()` is awaited on the event loop, then
    `finish(its result)` runs in a request thread and returns the response
    to send, which gets the headers the middleware set on this one
    (X-Request-ID, CORS, security headers)."""

    def __init__(
        self, wait: Callable[[], Awaitable[Any]], finish: Callable[[Any], HttpResponseBase]
    ) -> None:
        super().__init__()
        self.wait = wait
        self.finish = finish

    def complete(self, final: HttpResponseBase) -> HttpResponseBase:
        for header, value in self.headers.items():
            if header.lower() not in OWN_HEADERS and header not in final.headers:
                final[header] = value
        # request.close, which Django's handler added to this one: it must
        # run when the response sent is closed (not in django-stubs).
        final._resource_closers.extend(self._resource_closers)  # type: ignore[attr-defined]
        self._resource_closers.clear()  # type: ignore[attr-defined]
        return final


def drf_finish(view, request, make: Callable[[], HttpResponseBase]) -> HttpResponseBase:
    """Run `make` the way DRF's dispatch runs a handler: its exceptions become
    the project's JSON errors, the response is negotiated and rendered."""
    try:
        response = make()
    except Exception as exc:
        response = view.handle_exception(exc)
    response = view.finalize_response(request, response)
    render = getattr(response, "render", None)
    if callable(render):
        response = render()
    return response
