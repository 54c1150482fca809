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


@dataclass
class FakeWandb:
    """What a training asked of a stand-in ``wandb`` module: ``inits`` (each ``wandb.init``'s keyword arguments),
    ``logs`` (``(data, step)`` of each ``run.log``), ``finishes`` (``run.finish`` calls); ``init_error``, when set,
    is raised by ``wandb.init`` (as wandb does when not logged in)."""

    inits: list[dict] = field(default_factory=list)
    logs: list[tuple[dict, int]] = field(default_factory=list)
    finishes: int = 0
    init_error: Exception | None = None


@pytest.fixture
def fake_wandb(monkeypatch: pytest.MonkeyPatch) -> FakeWandb:
    """A fake ``wandb`` in ``sys.modules`` for the test (the real one is an optional extra, not installed here)."""
    import sys
    import types

    fake = FakeWandb()

    class Run:
        def log(self, data: dict, step: int) -> None:
            fake.logs.append((dict(data), step))

        def finish(self) -> None:
            fake.finishes += 1

    def init(**kwargs: object) -> Run:
        if fake.init_error is not None:
            raise fake.init_error
        fake.inits.append(kwargs)
        return Run()

    module = types.ModuleType("wandb")
    module.init = init  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", module)
    return fake
