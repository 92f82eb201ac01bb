"""HTTP plumbing: the server, the request handler that hands requests to the cloud, bodies."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from scaler.local.api.base import JSON, ApiError

if TYPE_CHECKING:
    from scaler.local.api.cloud import LocalCloud


class Server(ThreadingHTTPServer):
    """The HTTP server of one LocalCloud (a thread per connection)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], cloud: LocalCloud) -> None:
        self.cloud = cloud
        super().__init__(address, HTTPHandler)


class HTTPHandler(BaseHTTPRequestHandler):
    """Hands every request to the cloud."""

    server: Server
    protocol_version = "HTTP/1.1"
    server_version = "scaler-local-cloud"
    # Headers and body go out in two writes: with Nagle on, a kept-alive client (requests,
    # python-digitalocean) waits for a delayed ACK, about 40 ms per call.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self.server.cloud._handle(self)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass  # the request log (and verbose mode) report traffic


def bearer(header: str) -> str:
    """The token of an Authorization: Bearer header ("" when there is none)."""
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def read_body(h: BaseHTTPRequestHandler) -> bytes:
    """A request's body, chunked or with Content-Length."""
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                h.rfile.readline()
                return b"".join(chunks)
            chunks.append(h.rfile.read(size))
            h.rfile.readline()
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length > 0 else b""


def parse_body(raw: bytes) -> Any:
    """A body as JSON ({} when empty; 400 when not JSON)."""
    text = raw.decode("utf-8", errors="replace").strip()
    if not text or text == "null":
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ApiError(400, f"The request body is not valid JSON ({err.msg}).") from None


def respond(
    h: BaseHTTPRequestHandler, status: int, payload: JSON | None, headers: dict[str, str]
) -> None:
    """Send a JSON answer (no body for 204 or None)."""
    data = b"" if payload is None or status == 204 else json.dumps(payload).encode()
    try:
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            h.send_header(key, value)
        h.end_headers()
        if data:
            h.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client went away; nothing to tell it
