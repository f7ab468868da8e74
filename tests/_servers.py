"""Real HTTP servers on 127.0.0.1 for tests: a scriptable fake API and a push receiver."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import uvicorn

from carbonscaler.power import PowerMeter, PowerReading


@dataclass
class Request:
    """One request the fake API received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    """What the fake API replies: JSON (dict/list), raw bytes, or a delay first."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


Route = Callable[[Request], Answer]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeAPI:
    """A threaded HTTP server answering each path with a scripted :class:`Answer`.

    ``routes`` maps a path (exact, or a prefix ending in ``*``) to a function of the request
    or to a list of answers consumed in order (the last one repeats).
    """

    def __init__(self) -> None:
        self.routes: dict[str, Route | list[Answer]] = {}
        self.requests: list[Request] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query={k: v[0] for k, v in parse_qs(parts.query).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                )
                api.requests.append(request)
                answer = api._answer(request)
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                if isinstance(answer.body, bytes):
                    payload, ctype = answer.body, "text/plain"
                else:
                    payload, ctype = json.dumps(answer.body).encode(), "application/json"
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in answer.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = _handle

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def _answer(self, request: Request) -> Answer:
        route = self.routes.get(request.path)
        if route is None:
            for key, value in self.routes.items():
                if key.endswith("*") and request.path.startswith(key[:-1]):
                    route = value
                    break
        if route is None:
            return Answer(404, {"error": f"no route {request.path}"})
        if isinstance(route, list):
            return route.pop(0) if len(route) > 1 else route[0]
        return route(request)

    def calls(self, path: str) -> list[Request]:
        """Requests received for ``path`` (exact, or prefix ending in ``*``)."""
        if path.endswith("*"):
            return [r for r in self.requests if r.path.startswith(path[:-1])]
        return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Receiver:
    """Subscribers: records every POST; ``/slow/...`` answers late, ``/fail/...`` with 500."""

    def __init__(self, slow_s: float = 2.0) -> None:
        self.api = FakeAPI()
        self.url = self.api.url
        ok = Answer(200, {"ok": True})
        self.api.routes["/slow*"] = lambda r: Answer(200, {"ok": True}, delay_s=slow_s)
        self.api.routes["/fail*"] = lambda r: Answer(500, {"error": "down"})
        self.api.routes["/*"] = lambda r: ok

    def bodies(self, path: str) -> list[dict[str, Any]]:
        """JSON bodies POSTed to ``path``, in arrival order."""
        return [json.loads(r.body) for r in self.api.requests if r.path == path]

    def wait_for(self, path: str, n: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Wait until ``path`` received ``n`` pushes; return them."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.bodies(path)
            if len(got) >= n:
                return got
            time.sleep(0.02)
        raise AssertionError(f"{path} received {len(self.bodies(path))} pushes, wanted {n}")

    def close(self) -> None:
        self.api.close()


class ServiceThread:
    """An ASGI app served by uvicorn for real on a free 127.0.0.1 port, in a thread."""

    def __init__(self, app: Any) -> None:
        # IPPROTO_TCP explicitly, or asyncio leaves Nagle on and responses stall on ACKs.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the service did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> ServiceThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Measured(PowerMeter):
    """A node whose hardware meter reads a constant power."""

    source = "measured:rapl"

    def __init__(self, watts: float) -> None:
        self.watts = watts
        self.last = time.monotonic()

    def read(self) -> PowerReading:
        now = time.monotonic()
        interval, self.last = now - self.last, now
        return PowerReading(self.watts, interval, self.source)
