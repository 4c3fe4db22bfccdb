"""A minimal HTTP/1.1 client on a plain socket, so the client costs next to nothing.

Uploads go out with ``socket.sendfile`` (zero copy from the page cache); downloads are read into one
reused buffer and thrown away. Every server under test gets exactly the same client, and one request
per connection (``Connection: close``). Timing runs from connect to the last byte of the response.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

RECV_BYTES = 4 * 1024 * 1024
DEFAULT_TIMEOUT = 3600.0


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes  # empty when the body was discarded
    body_bytes: int
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


class ProtocolError(RuntimeError):
    pass


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.scratch = bytearray(RECV_BYTES)

    def _fill(self) -> bool:
        count = self.sock.recv_into(self.scratch)
        if count == 0:
            return False
        self.buffer += memoryview(self.scratch)[:count]
        return True

    def line(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                return line
            if not self._fill():
                raise ProtocolError("connection closed inside the response head")

    def exactly(self, count: int, keep: bool) -> tuple[bytes, int]:
        """Read ``count`` bytes; returns them (when ``keep``) and how many were read."""
        kept = bytearray()
        done = min(count, len(self.buffer))
        if keep:
            kept += self.buffer[:done]
        del self.buffer[:done]
        view = memoryview(self.scratch)
        while done < count:
            got = self.sock.recv_into(view, min(len(view), count - done))
            if got == 0:
                raise ProtocolError(f"connection closed after {done} of {count} body bytes")
            if keep:
                kept += view[:got]
            done += got
        return bytes(kept), done

    def until_close(self, keep: bool) -> tuple[bytes, int]:
        kept = bytearray(self.buffer) if keep else bytearray()
        done = len(self.buffer)
        self.buffer.clear()
        view = memoryview(self.scratch)
        while got := self.sock.recv_into(view):
            if keep:
                kept += view[:got]
            done += got
        return bytes(kept), done


def _read_reply(reader: _Reader, keep: bool, head_only: bool) -> tuple[int, dict[str, str], bytes, int]:
    status_line = reader.line()
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise ProtocolError(f"not an HTTP response: {status_line[:80]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    while line := reader.line():
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if head_only or status in (204, 304) or 100 <= status < 200:
        return status, headers, b"", 0
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body, total = bytearray(), 0
        while True:
            size = int(reader.line().split(b";")[0], 16)
            if size == 0:
                while reader.line():
                    pass
                break
            chunk, got = reader.exactly(size, keep)
            body += chunk
            total += got
            reader.line()
        return status, headers, bytes(body), total
    if "content-length" in headers:
        body_bytes, total = reader.exactly(int(headers["content-length"]), keep)
        return status, headers, body_bytes, total
    body_bytes, total = reader.until_close(keep)
    return status, headers, body_bytes, total


def request(
    url: str,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    body_file: Path | None = None,
    prefix: bytes = b"",
    suffix: bytes = b"",
    keep_body: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> Reply:
    """One request on a new connection. A file body is sent as ``prefix + file + suffix``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    length = len(body or b"")
    if body_file is not None:
        length = len(prefix) + body_file.stat().st_size + len(suffix)
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close", "Accept: */*"]
    if body is not None or body_file is not None or method in ("POST", "PUT"):
        head.append(f"Content-Length: {length}")
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    started = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if body:
            sock.sendall(body)
        if body_file is not None:
            if prefix:
                sock.sendall(prefix)
            with body_file.open("rb") as handle:
                sock.sendfile(handle)
            if suffix:
                sock.sendall(suffix)
        status, reply_headers, reply_body, total = _read_reply(_Reader(sock), keep_body, method == "HEAD")
    return Reply(status, reply_headers, reply_body, total, time.perf_counter() - started)


def json_request(url: str, method: str, path: str, payload: Any = None, timeout: float = 60.0) -> Reply:
    body = None if payload is None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    return request(url, method, path, headers=headers, body=body, timeout=timeout)


def upload_raw(
    url: str, path: str, file: Path, method: str = "POST", timeout: float = DEFAULT_TIMEOUT
) -> Reply:
    return request(
        url,
        method,
        path,
        headers={"Content-Type": "application/octet-stream", "X-Filename": file.name},
        body_file=file,
        timeout=timeout,
    )


def upload_multipart(url: str, path: str, file: Path, timeout: float = DEFAULT_TIMEOUT) -> Reply:
    """The file as multipart field ``file``, as curl -F or requests' files= would send it."""
    boundary = uuid.uuid4().hex
    prefix = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{file.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    suffix = f"\r\n--{boundary}--\r\n".encode()
    return request(
        url,
        "POST",
        path,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        body_file=file,
        prefix=prefix,
        suffix=suffix,
        timeout=timeout,
    )


def download(url: str, path: str, timeout: float = DEFAULT_TIMEOUT) -> Reply:
    """GET with the body read and discarded; checks the byte count against Content-Length."""
    reply = request(url, "GET", path, keep_body=False, timeout=timeout)
    declared = reply.headers.get("content-length")
    if reply.status == 200 and declared is not None and int(declared) != reply.body_bytes:
        raise ProtocolError(f"got {reply.body_bytes} bytes, Content-Length said {declared}")
    return reply
