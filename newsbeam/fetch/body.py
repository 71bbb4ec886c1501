"""Reading one response body under the fetch's caps (the fetcher is :mod:`newsbeam.fetch.http`).

The body is read a receive at a time and never trusted: a declared
Content-Length over the cap ends the fetch before reading, the bytes on the
wire and the bytes after gzip/deflate are both capped (a gzip bomb costs at
most the cap in memory), and a body shorter than declared, or a compressed
stream that stops early, is ``truncated`` rather than used.
"""
from __future__ import annotations

import socket
import zlib
from typing import Callable, Mapping, Optional

from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ProtocolError, ReadTimeoutError
from urllib3.response import HTTPResponse

READ_CHUNK_BYTES = 64 * 1024


class BodyFailure(Exception):
    """Why a body could not be used; the fetcher turns it into a ``FetchError``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


def read_body(raw: HTTPResponse, headers: Mapping[str, str], *, cap: int,
              time_left: Callable[[], float], total_timeout: float) -> bytes:
    """The decoded body of ``raw`` (headers with lower-case names), at most ``cap`` bytes."""
    declared = headers.get("content-length")
    expected: Optional[int] = None
    if declared is not None and declared.strip().isdigit():
        expected = int(declared)
        if expected > cap:
            raise BodyFailure("too_large", f"Content-Length {expected} > cap {cap}")
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)
    elif encoding == "deflate":
        decompressor = _DeflateDecompressor()
    elif encoding in ("identity", ""):
        decompressor = None
    else:
        raise BodyFailure("bad_encoding", f"unsupported Content-Encoding {encoding!r}")

    raw_seen = 0
    out = bytearray()
    while True:
        # Each wait is bounded by read_timeout of silence; the fetcher's
        # watchdog ends a wait that outlasts the deadline.
        if time_left() <= 0:
            raise BodyFailure("timeout", f"total_timeout {total_timeout}s exceeded after {raw_seen} bytes")
        try:
            # read1: return what one receive brings, so a server dribbling
            # bytes cannot keep a single call (and the deadline check) waiting.
            chunk = raw.read1(READ_CHUNK_BYTES, decode_content=False)
        except (ReadTimeoutError, socket.timeout) as exc:
            raise BodyFailure("timeout", f"read timed out after {raw_seen} bytes") from exc
        except ProtocolError as exc:  # urllib3's wrapper for a connection that ended early
            raise BodyFailure("truncated", f"connection ended early: {exc}") from exc
        except (Urllib3Error, OSError) as exc:
            raise BodyFailure("connection_reset", f"{type(exc).__name__}: {exc}") from exc
        if not chunk:
            break
        raw_seen += len(chunk)
        if raw_seen > cap:
            raise BodyFailure("too_large", f"body exceeds cap {cap} bytes")
        if decompressor is None:
            out += chunk
        else:
            _inflate_into(out, decompressor, chunk, cap)
        if len(out) > cap:
            raise BodyFailure("too_large", f"body exceeds cap {cap} bytes")
    if expected is not None and raw_seen < expected:
        raise BodyFailure("truncated", f"got {raw_seen} of {expected} bytes")
    if decompressor is not None and not decompressor.eof:
        raise BodyFailure("truncated", f"{encoding} stream ended early")
    return bytes(out)


def _inflate_into(out: bytearray, decompressor, chunk: bytes, cap: int) -> None:
    """Inflate ``chunk`` a bounded slice at a time, stopping past the cap.

    ``max_length`` keeps each step's output small, so a gzip bomb costs at
    most ``cap`` bytes of memory, never its decompressed size.
    """
    data = chunk
    while data and not decompressor.eof:
        room = cap + 1 - len(out)
        try:
            out += decompressor.decompress(data, max(1, min(room, READ_CHUNK_BYTES)))
        except zlib.error as exc:
            raise BodyFailure("bad_encoding", f"corrupt compressed body: {exc}") from exc
        if len(out) > cap:
            raise BodyFailure("too_large", f"decompressed body exceeds cap {cap} bytes")
        data = decompressor.unconsumed_tail


class _DeflateDecompressor:
    """HTTP "deflate" is zlib-wrapped by the RFC and raw deflate in practice."""

    def __init__(self) -> None:
        self._inner = None
        self._pending = b""

    @property
    def eof(self) -> bool:
        return self._inner is not None and self._inner.eof

    @property
    def unconsumed_tail(self) -> bytes:
        return self._inner.unconsumed_tail if self._inner is not None else b""

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._inner is None:
            self._pending += data
            if len(self._pending) < 2:
                return b""
            first, second = self._pending[0], self._pending[1]
            is_zlib = (first & 0x0F) == 8 and ((first << 8) | second) % 31 == 0
            self._inner = zlib.decompressobj(zlib.MAX_WBITS if is_zlib else -zlib.MAX_WBITS)
            data, self._pending = self._pending, b""
        return self._inner.decompress(data, max_length)
