"""The client's TLS: made only when an https URL is used, and then verified as httpx does by default."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from weightvault import Client, ConnectionFailed


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"items": [], "next_cursor": null}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def self_signed_https(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_an_https_server_with_an_untrusted_certificate_is_refused(
    self_signed_https: tuple[str, Path],
) -> None:
    url, _ = self_signed_https
    with (
        Client(url, progress=False) as client,
        pytest.raises(ConnectionFailed, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.list_models()


def test_an_https_server_whose_certificate_is_trusted_answers(
    self_signed_https: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = self_signed_https
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # how httpx users trust a private CA
    with Client(url, progress=False) as client:
        assert client.list_models() == []
