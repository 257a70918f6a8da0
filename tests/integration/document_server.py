"""A loopback web host publishing client ID metadata documents (for CIMD_ALLOW_LOOPBACK=true
tests): documents by path, each request counted; over http on 127.0.0.1 by default, or over
https under a name that resolves to loopback (``localhost``) with a test CA's certificate."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any, Iterator

import pytest

from .servers import LoopbackHttpServer


class DocumentHost:
    def __init__(self, *, tls: ssl.SSLContext | None = None, host_name: str = "127.0.0.1") -> None:
        self.documents: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        self.requests: list[str] = []
        self.lock = threading.Lock()
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server interface
                with host.lock:
                    host.requests.append(self.path)
                    status, body, headers = host.documents.get(self.path, (404, b"not found", {}))
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = LoopbackHttpServer(Handler, name="document-host", tls=tls)
        self.origin = f"{'https' if tls else 'http'}://{host_name}:{self.server.port}"

    def url(self, path: str) -> str:
        return self.origin + path

    def publish(self, path: str, document: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> str:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        with self.lock:
            self.documents[path] = (status, body, headers or {})
        return self.url(path)

    def client_document(self, path: str, redirect_uris: list[str], **extra: Any) -> str:
        """Publish a valid document at ``path``; return its URL (the client id)."""
        url = self.url(path)
        return self.publish(path, {"client_id": url, "client_name": "Doc Client", "redirect_uris": redirect_uris, **extra})

    def count(self, path: str) -> int:
        with self.lock:
            return self.requests.count(path)


@pytest.fixture
def document_host() -> Iterator[DocumentHost]:
    host = DocumentHost()
    yield host
    host.server.stop()
