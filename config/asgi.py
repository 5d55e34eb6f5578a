"""The ASGI application `make serve` runs (config/gunicorn.conf.py, WEB_SERVER=asgi).

The event loop holds every connection: reading headers and bodies, the
naps of event streams and of `?wait=` (config.waits), sending. The
middleware and the views are synchronous (DRF); `PooledHandler` runs them in
a pool of WEB_THREADS threads per process, which keep their database
connections (CONN_MAX_AGE) as gunicorn's gthread workers do. Django's own
handler would start a new thread for every request instead, and with it a
new database connection: measured in bench/README.md (bench.submit).

Django's ASGI handler reads a request's whole body (spooling it to disk past
FILE_UPLOAD_MAX_MEMORY_SIZE) before any middleware runs, so the body cap of
config/middleware.py would come too late: `BodyLimit` refuses a body over
MAX_REQUEST_BYTES here, as it arrives, before Django buffers it.
"""

import json
import os
from concurrent.futures import ThreadPoolExecutor

import django
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import response_for_exception
from django.db import close_old_connections

from config.waits import LoopWait

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


class PooledHandler(ASGIHandler):
    """Django's ASGI handler, with the (synchronous) middleware and views run
    in a bounded pool of request threads, and `LoopWait` answers awaited on
    the event loop."""

    def __init__(self, threads: int) -> None:
        super().__init__()
        # The synchronous chain, called in a pool thread as a whole (the
        # asynchronous one would hop to a new thread per request).
        self.load_middleware(is_async=False)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="request")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django serves HTTP connections only, not {scope['type']}.")
        # Without Django's per-request ThreadSensitiveContext, which starts a
        # thread for every request only to send request_started and close
        # the response in it: those short calls share one thread instead,
        # and the request's own work runs in the pool.
        await self.handle(scope, receive, send)

    async def get_response_async(self, request):
        request.waits_on_loop = True
        response = await self._in_pool(self._respond, request)
        if isinstance(response, LoopWait):
            try:
                result = await response.wait()
                response = response.complete(await self._in_pool(response.finish, result))
            except Exception as exc:
                # As Django does for an exception in a view: logged, and the
                # project's JSON 500 (handler500), not the server's text page.
                response = await self._in_pool(response_for_exception, request, exc)
        return response

    def _in_pool(self, func, *args):
        return sync_to_async(func, thread_sensitive=False, executor=self.pool)(*args)

    def _respond(self, request):
        # What the request_started signal does under WSGI, in the thread
        # whose connection the request will use: drop an obsolete or broken one.
        close_old_connections()
        return self.get_response(request)


AMBIGUOUS_FRAMING = (
    "Send either Content-Length or Transfer-Encoding, not both: the request's length is ambiguous."
)


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Answers 413 (the project's JSON error) to a body over the limit: at
    once when its Content-Length says so, else as soon as the bytes
    received pass it (chunked bodies). And 400 to a request with both a
    Content-Length and a Transfer-Encoding."""

    def __init__(self, app, limit: int | None) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        names = {name.lower() for name, _ in scope["headers"]}
        if b"content-length" in names and b"transfer-encoding" in names:
            # Two framings: uvicorn would follow Transfer-Encoding, a proxy in
            # front may have followed the length. Refused, as gunicorn does,
            # so no request can be smuggled between the two readings.
            return await self._refuse(send, 400, AMBIGUOUS_FRAMING)
        if self.limit is None:
            return await self.app(scope, receive, send)
        limit = self.limit
        lengths = [value for name, value in scope["headers"] if name.lower() == b"content-length"]
        if lengths and lengths[0].isdigit() and int(lengths[0]) > limit:
            return await self._refuse(send, 413, too_large_message(limit))
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def watched_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send, 413, too_large_message(limit))

    @staticmethod
    async def _refuse(send, status: int, message: str) -> None:
        body = json.dumps(error_body(message, code_for_status(status))).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # The body is left unread: the connection cannot be reused.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


django.setup(set_prefix=False)

from config.errors import code_for_status, error_body  # noqa: E402
from config.middleware import too_large_message  # noqa: E402

application = BodyLimit(PooledHandler(settings.WEB_THREADS), settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
