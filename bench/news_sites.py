"""Loopback web servers for the ``--full_text`` measurement: one per language,
so each language is its own host (politeness limits are per host)."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Sequence

from corpus import LANGUAGES, GeneratedArticle, page_html, summary_feed

ROBOTS = b"User-agent: *\nAllow: /\n"


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[bytes, str]] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        found = self.routes.get(self.path.split("?")[0])
        if found is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body, content_type = found
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


class NewsSites:
    """Serve each language's summary-only feed and article pages on 127.0.0.1."""

    def __init__(self, articles: Sequence[GeneratedArticle]):
        self.servers, self.threads, self.feed_urls = [], [], []
        for language in LANGUAGES:
            mine = [a for a in articles if a.language == language]
            if not mine:
                continue
            handler = type(f"Handler_{language}", (_Handler,), {"routes": {}})
            server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            base = f"http://127.0.0.1:{server.server_address[1]}"

            def link_of(article, base=base):
                return f"{base}/{article.topic}/{article.index:06d}.html"

            handler.routes["/robots.txt"] = (ROBOTS, "text/plain")
            handler.routes["/feed.rss"] = (summary_feed(mine, language, link_of), "application/rss+xml; charset=utf-8")
            for article in mine:
                handler.routes[link_of(article)[len(base):]] = (page_html(article), "text/html; charset=utf-8")
            self.servers.append(server)
            self.feed_urls.append(f"{base}/feed.rss")

    def __enter__(self) -> "NewsSites":
        for server in self.servers:
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def __exit__(self, *exc_info) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
