"""A wall-clock deadline for one HTTP exchange, enforced on its sockets.

Why a watchdog rather than timeouts: a socket timeout bounds one wait, so a
server that sends a byte just inside it, forever, is never cut off. And the
status line, the headers and the chunk-size lines are read inside
``http.client`` and urllib3 (over TLS, inside OpenSSL), which wait as often
as they like without returning to newsbeam. Shrinking the socket timeout
before every receive would need a hook in each of those layers. A timer that
shuts the socket down at the deadline needs none: ``shutdown()`` ends any
wait in progress or to come, whichever layer is reading, plain or TLS, so
every phase of the exchange (TLS handshake, status line, headers, chunk
sizes, body) ends at the deadline. The reader then sees the connection end,
and the fetcher, seeing :attr:`SocketDeadline.expired`, reports the deadline
rather than a reset.

The watchdog shuts down a *duplicate* of each socket's descriptor, which it
owns and closes itself: the original may be closed by urllib3 at any moment,
and its descriptor number reused by an unrelated connection, which the
watchdog must never touch.

Name resolution has no socket to shut down and ``getaddrinfo`` cannot be
interrupted, so under a deadline it runs on a helper thread that the exchange
waits for only until the deadline (:func:`resolve`); a resolver that hangs
longer leaves that thread to the system resolver's own timeouts, and the
fetch ends on time.
"""
from __future__ import annotations

import socket
import threading
import time
from contextvars import ContextVar
from typing import Optional

_CURRENT: ContextVar[Optional["SocketDeadline"]] = ContextVar("newsbeam_socket_deadline", default=None)


class SocketDeadline:
    """Shut down every socket of this exchange once ``seconds`` have passed.

    Enter it on the thread that makes the request: sockets that connections
    open or reuse meanwhile on that thread join it through :func:`watch_socket`.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._duplicates: dict[int, socket.socket] = {}  # watched descriptor -> our duplicate of it
        self._expired = False
        self._finished = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._token = None
        self._ends = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._ends - time.monotonic())

    @property
    def expired(self) -> bool:
        return self._expired

    def __enter__(self) -> "SocketDeadline":
        self._ends = time.monotonic() + self.seconds
        self._token = _CURRENT.set(self)
        self._timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._timer.cancel()
        with self._lock:
            self._finished = True
            duplicates, self._duplicates = list(self._duplicates.values()), {}
        for duplicate in duplicates:
            duplicate.close()
        _CURRENT.reset(self._token)

    def watch(self, sock: socket.socket) -> None:
        try:
            descriptor = sock.fileno()
        except OSError:
            return
        if descriptor < 0:
            return
        with self._lock:
            if self._finished or descriptor in self._duplicates:
                return
            duplicate = socket.fromfd(descriptor, sock.family, sock.type, sock.proto)
            self._duplicates[descriptor] = duplicate
            if self._expired:  # opened after the deadline: end it at once
                _shut_down(duplicate)

    def _expire(self) -> None:
        # Under the lock: __exit__ cannot close a duplicate while it is being shut down.
        with self._lock:
            if self._finished:
                return
            self._expired = True
            for duplicate in self._duplicates.values():
                _shut_down(duplicate)


def _shut_down(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed by the peer or by urllib3: nothing left to stop
        pass


def watch_socket(sock: socket.socket) -> None:
    """Put ``sock`` under the current thread's exchange deadline, if there is one."""
    deadline = _CURRENT.get()
    if deadline is not None:
        deadline.watch(sock)


class ResolutionTimeout(Exception):
    """Name resolution outlasted the exchange's deadline."""


def resolve(host: str, port: int) -> list:
    """``socket.getaddrinfo`` for a stream socket, ended at the current exchange's deadline."""
    deadline = _CURRENT.get()
    if deadline is None:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    outcome: dict[str, object] = {}
    done = threading.Event()

    def look_up() -> None:
        try:
            outcome["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except BaseException as error:  # handed to the waiting exchange
            outcome["error"] = error
        finally:
            done.set()

    threading.Thread(target=look_up, name="newsbeam-resolve", daemon=True).start()
    if not done.wait(deadline.remaining()):
        raise ResolutionTimeout(f"resolving {host!r} outlasted the {deadline.seconds:.1f}s deadline")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["infos"]  # type: ignore[return-value]
