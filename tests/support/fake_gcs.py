"""A GCS JSON API on 127.0.0.1 that keeps object generations and honours
``ifGenerationMatch``: just the calls the state lock and the dataset copy make
(get metadata, list, download, multipart upload, delete), spoken to by the real google-cloud-storage
client through ``STORAGE_EMULATOR_HOST``.

Why not a packaged emulator: the pure-Python one on PyPI ignores generation
preconditions, and they are exactly what the lock relies on (a Go or Java
emulator is not something CI installs).
"""
from __future__ import annotations

import contextlib
import itertools
import json
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import parse_qs, unquote, urlsplit


class FakeGcs:
    """Objects as {(bucket, name): (generation, bytes)}; every write gets a new generation."""

    def __init__(self):
        self.objects: dict[tuple[str, str], tuple[int, bytes]] = {}
        self.lock = threading.Lock()
        self.generations = itertools.count(1_700_000_000_000_000)

    def generation_of(self, bucket: str, name: str) -> int:
        return self.objects.get((bucket, name), (0, b""))[0]


def _resource(bucket: str, name: str, generation: int, data: bytes) -> dict:
    return {"kind": "storage#object", "bucket": bucket, "name": name, "id": f"{bucket}/{name}/{generation}",
            "generation": str(generation), "metageneration": "1", "size": str(len(data)),
            "contentType": "text/plain"}


class _Handler(BaseHTTPRequestHandler):
    store: FakeGcs

    def log_message(self, *args):  # keep test output quiet
        pass

    def _reply(self, status: int, body: bytes = b"", content_type: str = "application/json",
               headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._reply(status, json.dumps({"error": {"code": status, "message": message,
                                                  "errors": [{"message": message}]}}).encode())

    def _parse(self) -> tuple[list[str], dict[str, str]]:
        parts = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        return [unquote(piece) for piece in parts.path.strip("/").split("/")], query

    def _precondition_holds(self, bucket: str, name: str, query: dict[str, str]) -> bool:
        wanted = query.get("ifGenerationMatch")
        return wanted is None or int(wanted) == self.store.generation_of(bucket, name)

    def _existing_object(self, path: list[str], query: dict[str, str]) -> tuple[str, str] | None:
        """(bucket, name) of ``storage/v1/b/BUCKET/o/NAME`` when it exists and the
        request's precondition holds; otherwise the error is sent and None returned.
        Call with ``store.lock`` held."""
        if path[:3] != ["storage", "v1", "b"] or len(path) < 6 or path[4] != "o":
            self._error(400, f"unsupported {self.command} {self.path}")
            return None
        bucket, name = path[3], "/".join(path[5:])
        if (bucket, name) not in self.store.objects:
            self._error(404, "No such object")
            return None
        if not self._precondition_holds(bucket, name, query):
            self._error(412, "Precondition Failed")
            return None
        return bucket, name

    def _list(self, bucket: str, query: dict[str, str]) -> None:
        """``objects.list`` by prefix, a page at a time (``maxResults``, ``pageToken``)."""
        prefix, size = query.get("prefix", ""), int(query.get("maxResults", 1000))
        with self.store.lock:
            names = sorted(name for (held, name) in self.store.objects if held == bucket and name.startswith(prefix))
            start = int(query.get("pageToken", 0))
            items = [_resource(bucket, name, *self.store.objects[(bucket, name)]) for name in names[start:start + size]]
        page = {"kind": "storage#objects", "items": items}
        if start + size < len(names):
            page["nextPageToken"] = str(start + size)
        self._reply(200, json.dumps(page).encode())

    def do_GET(self):
        path, query = self._parse()
        if path[:3] == ["storage", "v1", "b"] and len(path) == 5 and path[4] == "o":
            return self._list(path[3], query)
        download = path[0] == "download"
        with self.store.lock:
            found = self._existing_object(path[1:] if download else path, query)
            if found is None:
                return
            bucket, name = found
            generation, data = self.store.objects[found]
        if download or query.get("alt") == "media":
            return self._reply(200, data, "application/octet-stream", {"x-goog-generation": str(generation)})
        return self._reply(200, json.dumps(_resource(bucket, name, generation, data)).encode())

    def do_POST(self):
        path, query = self._parse()
        if path[:4] != ["upload", "storage", "v1", "b"] or query.get("uploadType") != "multipart":
            return self._error(400, f"unsupported POST {self.path}")
        bucket = path[4]
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body)
        metadata_part, data_part = list(message.iter_parts())[:2]
        name = json.loads(metadata_part.get_content())["name"]
        data = data_part.get_payload(decode=True)
        with self.store.lock:
            if not self._precondition_holds(bucket, name, query):
                return self._error(412, "Precondition Failed")
            generation = next(self.store.generations)
            self.store.objects[(bucket, name)] = (generation, data)
        return self._reply(200, json.dumps(_resource(bucket, name, generation, data)).encode())

    def do_DELETE(self):
        path, query = self._parse()
        with self.store.lock:
            found = self._existing_object(path, query)
            if found is None:
                return
            del self.store.objects[found]
        return self._reply(204)


@contextlib.contextmanager
def fake_gcs(monkeypatch) -> Iterator[FakeGcs]:
    """Serve a FakeGcs on 127.0.0.1 and point the google-cloud-storage client at it."""
    store = FakeGcs()
    handler = type("Handler", (_Handler,), {"store": store})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield store
    finally:
        server.shutdown()
        server.server_close()
