"""Checks a request's framing and caps its body before anything reads it.

Framing. A body is taken only when the server framed it: a Content-Length
that the bytes received match, or a chunked body the server itself decoded
(gunicorn's gthread workers say so with `wsgi.input_terminated`; an ASGI
server always does). Everything else is
refused with a JSON error before a view runs, so no task is ever created
from part of a body:

- fewer bytes than the Content-Length before the client half-closes: 400
  (a JSON document cut short can still parse, e.g. one that ends early on
  purpose, so the length is what decides);
- Transfer-Encoding on a server that passes the raw chunks on (Django's
  development server under `make run`): 411. That server reads no body
  without a Content-Length, so the chunks would be left on the connection
  and read as the next request; the answer carries no Content-Length, on
  which that server closes the connection instead.

Size. DRF parses JSON from the raw request stream, so Django's
DATA_UPLOAD_MAX_MEMORY_SIZE (which guards `request.body` and form parsing)
never sees it. A body with a Content-Length over the limit is refused before
a byte is read; a body without one (chunked transfer) is read up to the limit
and refused past it, so no client can make the server buffer more.
"""

from __future__ import annotations

import io

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.core.handlers.wsgi import LimitedStream

from .errors import json_error

SHORT_BODY = (
    "The request body is shorter than its Content-Length: the request was cut short. "
    "Send the whole body."
)
UNFRAMED = (
    "Send the request body with a Content-Length header: this server does not accept "
    "Transfer-Encoding (chunked) bodies."
)


def too_large_message(limit: int) -> str:
    return f"The request body is larger than the limit of {limit} bytes (MAX_REQUEST_BYTES)."


def too_large(request, limit: int):
    return json_error(request, 413, too_large_message(limit))


class RequestSizeLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if "HTTP_TRANSFER_ENCODING" in request.META and not self._server_decodes_chunks(request):
            return json_error(request, 411, UNFRAMED)
        length = request.META.get("CONTENT_LENGTH")
        if isinstance(request, ASGIRequest) and "HTTP_TRANSFER_ENCODING" in request.META:
            # The ASGI server decoded the chunks and Django holds the whole
            # body (capped by config.asgi.BodyLimit), but without a
            # Content-Length DRF would read it as empty: give it the size.
            body = request.body
            if limit is not None and len(body) > limit:
                return too_large(request, limit)
            request.META["CONTENT_LENGTH"] = str(len(body))
            return self.get_response(request)
        if length:
            try:
                size = int(length)
            except ValueError:
                size = -1
            if size < 0:
                return json_error(request, 400, "The Content-Length header is not a valid size.")
            if limit is not None and size > limit:
                return too_large(request, limit)
            if size and self._read_body(request) < size:
                return json_error(request, 400, SHORT_BODY)
        elif self._has_unsized_body(request) and limit is not None:
            # Django would read a body without Content-Length as empty; read it
            # here, bounded, so it is neither ignored nor unbounded.
            try:
                body = request.META["wsgi.input"].read(limit + 1)
            except OSError:  # the chunks stopped before the last one
                return json_error(request, 400, "The chunked request body is incomplete.")
            if len(body) > limit:
                return too_large(request, limit)
            request._stream = LimitedStream(io.BytesIO(body), len(body))
            request.META["CONTENT_LENGTH"] = str(len(body))
        return self.get_response(request)

    @staticmethod
    def _read_body(request) -> int:
        """Read the whole body now (it is within the limit) and keep it for
        the view; how many bytes arrived."""
        try:
            return len(request.body)
        except OSError:  # the connection broke while reading
            return -1

    @staticmethod
    def _server_decodes_chunks(request) -> bool:
        # An ASGI server (uvicorn under `make serve`) always hands over the decoded body.
        return isinstance(request, ASGIRequest) or bool(request.META.get("wsgi.input_terminated"))

    @staticmethod
    def _has_unsized_body(request) -> bool:
        return "wsgi.input" in request.META and (
            "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
            or bool(request.META.get("wsgi.input_terminated"))
        )
