"""Caps request bodies before anything reads them.

DRF parses JSON from the raw request stream, so Django's
DATA_UPLOAD_MAX_MEMORY_SIZE (which guards `request.body` and form parsing)
never sees it. A body with a Content-Length over the limit is refused before
a byte is read; a body without one (chunked transfer) is read up to the limit
and refused past it, so no client can make the server buffer more.
"""

from __future__ import annotations

import io

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream

from .errors import json_error


def too_large(request, limit: int):
    return json_error(
        request,
        413,
        f"The request body is larger than the limit of {limit} bytes (MAX_REQUEST_BYTES).",
    )


class RequestSizeLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        length = request.META.get("CONTENT_LENGTH")
        if length:
            try:
                size = int(length)
            except ValueError:
                size = -1
            if size < 0:
                return json_error(request, 400, "The Content-Length header is not a valid size.")
            if limit is not None and size > limit:
                return too_large(request, limit)
        elif self._has_unsized_body(request) and limit is not None:
            # Django would read a body without Content-Length as empty; read it
            # here, bounded, so it is neither ignored nor unbounded.
            body = request.META["wsgi.input"].read(limit + 1)
            if len(body) > limit:
                return too_large(request, limit)
            request._stream = LimitedStream(io.BytesIO(body), len(body))
            request.META["CONTENT_LENGTH"] = str(len(body))
        return self.get_response(request)

    @staticmethod
    def _has_unsized_body(request) -> bool:
        return "wsgi.input" in request.META and (
            "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
            or bool(request.META.get("wsgi.input_terminated"))
        )
