"""A threaded HTTP server on 127.0.0.1 that answers cryosparc-tools as CryoSPARC 5.0 would.

Standard library only (``http.server``). Request bodies arrive either with a Content-Length
or, for streamed datasets and assets, with ``Transfer-Encoding: chunked`` (httpx streams
``Dataset.stream()``), so the handler decodes chunked bodies itself.
"""

from __future__ import annotations

import json
import threading
import traceback
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryosparc.dataset import Dataset
from pydantic import BaseModel

from .routes import API_PREFIX, DATASET_MIME, ROUTES, STREAM_MIME, Request, openapi_bytes
from .state import FakeCryosparc, FakeError


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _FakeServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        pass

    # ------------------------------------------------------------------ plumbing
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    # ------------------------------------------------------------------ dispatch
    def _dispatch(self, method: str) -> None:
        raw = self._read_body()
        url = urllib.parse.urlsplit(self.path)
        state = self.server.state
        if not url.path.startswith(API_PREFIX):
            self._send_json(404, {"detail": "Not Found"})
            return
        path = url.path[len(API_PREFIX) :] or "/"
        if method == "get" and path == "/openapi.json":
            self._send(200, openapi_bytes(), "application/json")
            return
        for route in ROUTES:
            match = route.pattern.match(path)
            if route.method != method or not match:
                continue
            try:
                with state.lock:
                    state.calls.append(route.summary)
                    if not route.public:
                        state.check_token(self.headers.get("Authorization"))
                    request = Request(
                        path={k: urllib.parse.unquote(v) for k, v in match.groupdict().items()},
                        query=urllib.parse.parse_qs(url.query, keep_blank_values=True),
                        body=self._decode_body(route.body, raw),
                    )
                    result = route.handler(state, request)
            except FakeError as err:
                self._send_json(err.status, {"detail": err.message})
                return
            except Exception:  # a bug in the fake or an unexpected request: make it visible to tests
                self.server.errors.append(traceback.format_exc())
                self._send_json(500, {"detail": "fake server error"})
                return
            self._respond(route.response, result)
            return
        self._send_json(404, {"detail": f"No route {method.upper()} {path}"})

    @staticmethod
    def _decode_body(kind: str | None, raw: bytes) -> Any:
        if kind == "json":
            return json.loads(raw) if raw else None
        if kind == "form":
            return {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode()).items()}
        return raw if kind in ("dataset", "stream") else None

    def _respond(self, kind: str, result: Any) -> None:
        if kind == "dataset":
            assert isinstance(result, Dataset)
            self._send(200, b"".join(result.stream()), DATASET_MIME)
        elif kind == "stream":
            self._send(200, bytes(result), STREAM_MIME)
        elif isinstance(result, BaseModel):
            self._send_json(200, result.model_dump(mode="json", by_alias=True))
        else:
            self._send_json(200, result)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("get")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("post")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("put")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("patch")


class _FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: FakeCryosparc) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
        self.errors: list[str] = []


class RunningFake:
    """Handle on a running fake: ``base_url`` to give the client, ``state`` to inspect."""

    def __init__(self, server: _FakeServer) -> None:
        self._server = server
        self.state = server.state
        host, port = server.server_address[:2]
        self.base_url = f"http://{host}:{port}"

    @property
    def errors(self) -> list[str]:
        """Tracebacks of requests the fake could not handle (should stay empty)."""
        return self._server.errors


@contextmanager
def serve(state: FakeCryosparc) -> Iterator[RunningFake]:
    """Serve ``state`` on 127.0.0.1 (a free port) until the block ends."""
    server = _FakeServer(state)
    thread = threading.Thread(target=server.serve_forever, name="fake-cryosparc", daemon=True)
    thread.start()
    try:
        yield RunningFake(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
