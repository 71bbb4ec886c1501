"""A real threaded HTTP server on 127.0.0.1 for tests.

Routes map a path to a :class:`Response` or to a handler that takes the
:class:`RecordedRequest` and returns one. Every request is recorded (time,
method, path, headers) so tests can assert what a client actually sent, e.g.
"exactly one request" for a 404 that must not be retried.

A response body may be ``bytes`` or an iterable of byte chunks (sent with
chunked transfer encoding unless ``headers`` fixes a Content-Length), with an
optional pause between chunks to simulate a slow server. ``content_length``
may lie, to simulate a truncated response.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable, Optional, Union


@dataclass
class Response:
    status: int = 200
    body: Union[bytes, Iterable[bytes]] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_before: float = 0.0  # seconds before the status line
    chunk_delay: float = 0.0  # seconds between body chunks
    content_length: Optional[int] = None  # sent as-is; may differ from the body


@dataclass(frozen=True)
class RecordedRequest:
    time: float  # time.monotonic() on arrival
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # lower-case names


Handler = Callable[[RecordedRequest], Response]


def sequence(*responses: Response) -> Handler:
    """A handler that serves ``responses`` in order, then repeats the last."""
    remaining = list(responses)
    lock = threading.Lock()

    def handle(_request: RecordedRequest) -> Response:
        with lock:
            return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return handle


class _QuietThreadingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # Clients that hang up mid-exchange are what many tests provoke on purpose.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class FixtureServer:
    """``ThreadingHTTPServer`` on an ephemeral loopback port."""

    def __init__(self) -> None:
        self.routes: dict[str, Union[Response, Handler]] = {}
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._httpd = _QuietThreadingHTTPServer(("127.0.0.1", 0), _make_handler_class(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, response: Union[Response, Handler]) -> str:
        """Serve ``response`` at ``path``; returns the full URL."""
        self.routes[path] = response
        return self.url(path)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [request for request in self.requests if request.path.split("?")[0] == path]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _make_handler_class(server: FixtureServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args) -> None:  # noqa: A002 - keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            request = RecordedRequest(
                time=time.monotonic(), method=self.command, path=self.path,
                headers={name.lower(): value for name, value in self.headers.items()},
            )
            server._record(request)
            route = server.routes.get(self.path.split("?")[0])
            if route is None:
                response = Response(404, b"no such route")
            elif isinstance(route, Response):
                response = route
            else:
                response = route(request)
            try:
                self._send(response)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, which is often what the test wanted

        do_HEAD = do_GET

        def _send(self, response: Response) -> None:
            if response.delay_before:
                time.sleep(response.delay_before)
            self.send_response(response.status)
            header_names = {name.lower() for name in response.headers}
            for name, value in response.headers.items():
                self.send_header(name, value)
            chunked = False
            if response.content_length is not None:
                self.send_header("Content-Length", str(response.content_length))
            elif isinstance(response.body, (bytes, bytearray)):
                if "content-length" not in header_names:
                    self.send_header("Content-Length", str(len(response.body)))
            elif "content-length" not in header_names:
                chunked = True
                self.send_header("Transfer-Encoding", "chunked")
            if response.content_length is not None:
                # A lying Content-Length cannot be followed by more requests.
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command == "HEAD":
                return
            chunks = [response.body] if isinstance(response.body, (bytes, bytearray)) \
                else response.body
            for chunk in chunks:
                if not chunk:
                    continue
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                else:
                    self.wfile.write(chunk)
                self.wfile.flush()
                if response.chunk_delay:
                    time.sleep(response.chunk_delay)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

    return _Handler
