"""A raw-socket server on 127.0.0.1 that answers one byte at a time, for deadline tests.

``http.server`` writes the status line and headers itself, in one go, so it
cannot trickle them; this server writes bytes straight to the socket. Each
path is mapped to a phase of the response (:data:`PHASES`): everything before
that phase is sent at once, then the phase itself never ends: one byte every
``interval`` seconds, each well inside any read timeout, until the client
hangs up, the server closes, or ``max_seconds`` have passed (so a fetch that
ignores its deadline fails a test instead of hanging it). Unmapped paths get
an immediate, empty 404.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Optional

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
# phase -> (sent at once, the byte repeated forever after it)
PHASES: dict[str, tuple[bytes, bytes]] = {
    "status_line": (b"HTTP/1.1 200 ", b"O"),  # the reason phrase never ends
    "headers": (_OK + b"X-Slow: ", b"a"),  # one header value that never ends
    "chunk_size": (_OK + b"Transfer-Encoding: chunked\r\n\r\n", b"0"),  # a chunk-size line that never ends
    "body": (_OK + b"Content-Length: 1000000\r\n\r\n", b"<"),  # a body that never completes
}
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
MAX_REQUEST_BYTES = 64 * 1024


class TrickleServer:
    """Serves ``routes`` (path -> phase name) on an ephemeral loopback port."""

    def __init__(self, routes: Optional[dict[str, str]] = None, *, interval: float = 0.3,
                 max_seconds: float = 10.0) -> None:
        self.routes = dict(routes or {})
        self.interval = interval
        self.max_seconds = max_seconds
        self.requested: list[str] = []  # paths, in arrival order
        self.trickled: dict[str, int] = {}  # path -> bytes sent one at a time
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept_loop, daemon=True)
        self._accepting.start()

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._stop.set()
        self._accepting.join(timeout=5)
        for thread in list(self._threads):
            thread.join(timeout=5)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _address = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            path = self._read_request_path(connection)
            if path is None:
                return
            with self._lock:
                self.requested.append(path)
            phase = self.routes.get(path)
            try:
                if phase is None:
                    connection.sendall(NOT_FOUND)
                    return
                prefix, byte = PHASES[phase]
                connection.sendall(prefix)
                ends_at = time.monotonic() + self.max_seconds
                while time.monotonic() < ends_at and not self._stop.wait(self.interval):
                    connection.sendall(byte)
                    with self._lock:
                        self.trickled[path] = self.trickled.get(path, 0) + 1
            except OSError:  # the client hung up: what a deadline is meant to do
                return

    @staticmethod
    def _read_request_path(connection: socket.socket) -> Optional[str]:
        connection.settimeout(5)
        received = b""
        try:
            while b"\r\n\r\n" not in received and len(received) < MAX_REQUEST_BYTES:
                data = connection.recv(4096)
                if not data:
                    return None
                received += data
        except OSError:
            return None
        request_line = received.split(b"\r\n", 1)[0].decode("latin-1").split()
        return request_line[1] if len(request_line) >= 2 else None
