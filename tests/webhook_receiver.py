"""A webhook receiver on loopback for tests: answers from a script of
(status, body, delay) and records every request it gets."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The ports this suite's receivers may take.
PORTS = range(18100, 18200)
GATE_SECONDS = 30


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    # What the receiver answered.
    status: int = 0


@dataclass
class Receiver:
    # Answers in order; the last one repeats.
    script: list[tuple[int, bytes, float]] = field(default_factory=lambda: [(200, b"ok", 0.0)])
    requests: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    # While cleared, requests wait (at most GATE_SECONDS) before an answer.
    gate: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.gate.set()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook?source=tests"

    def take(self, received: Received) -> tuple[int, bytes, float]:
        """Record a request and choose its answer, in arrival order."""
        with self.lock:
            self.requests.append(received)
            status, body, delay = self.script[min(len(self.requests), len(self.script)) - 1]
            received.status = status
        return status, body, delay

    def by_id(self) -> dict[str, list[Received]]:
        """The requests of each webhook-id, in arrival order."""
        with self.lock:
            grouped: dict[str, list[Received]] = {}
            for request in self.requests:
                grouped.setdefault(request.headers.get("webhook-id", ""), []).append(request)
            return grouped

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, answer, delay = receiver.take(Received(self.path, headers, body))
                receiver.gate.wait(GATE_SECONDS)
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                try:
                    self.wfile.write(answer)
                except OSError:
                    pass  # the sender gave up waiting (a timeout test)

            def log_message(self, *args):
                pass

        for port in PORTS:
            try:
                self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
                break
            except OSError:
                continue
        else:
            raise RuntimeError(f"no free port in {PORTS}")
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
