"""Fixtures shared by every test folder.

``file_server``: an HTTP server on 127.0.0.1 in a thread for the download tests (loopback only, stopped after the
test): serves ``file_server.root``, honours ``Range: bytes=N-`` (206), counts requests per path, and can cut a
response short once (``cut_after``)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


@dataclass
class Server:
    root: Path
    url: str = ""
    requests: Counter = field(default_factory=Counter)
    ranges: list[str] = field(default_factory=list)
    cut_after: int | None = None  # send only this many bytes of the next response, then close


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    with serve(root) as server:
        yield server


@contextmanager
def serve(root: Path) -> Iterator[Server]:
    state = Server(root)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            state.requests[self.path] += 1
            path = state.root / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404, "not found")
                return
            data = path.read_bytes()
            start = 0
            header = self.headers.get("Range")
            if header:
                state.ranges.append(header)
                start = int(header.removeprefix("bytes=").rstrip("-"))
                if start >= len(data):
                    self.send_error(416, "range not satisfiable")
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.cut_after is not None:
                body, state.cut_after = body[: state.cut_after], None
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.timeout = 5
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
