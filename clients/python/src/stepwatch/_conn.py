"""The sender thread's HTTP: one keep-alive HTTP/1.1 connection to the relay.

A request is one ``sendall`` and its answer a few ``recv`` calls, parsed here (status,
``Content-Length`` or chunked body, ``Connection: close``) rather than by
``http.client``'s header parser, so each batch holds the GIL (which the training
thread shares) as briefly as possible. A connection the relay closed while idle is
opened again once, at once: a repeated request is harmless (events carry ``src``/``seq``,
image bytes their hash). When a proxy applies to the relay's URL (``http_proxy`` and
friends, ``no_proxy``), requests go through ``urllib`` as before.
"""

from __future__ import annotations

import socket
import ssl
import struct
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import NamedTuple


def kernel_timeout(sock: socket.socket, seconds: float) -> bool:
    """Makes ``sock`` blocking, its sends and receives bounded by the kernel
    (``SO_SNDTIMEO`` / ``SO_RCVTIMEO``, Linux): one system call each, where Python's own
    timeout polls first, and every call lets the GIL go and waits to take it back (up to
    the 5 ms switch interval while the training thread computes). False where that is
    not to be had: the socket keeps Python's timeout."""
    if not sys.platform.startswith("linux") or isinstance(sock, ssl.SSLSocket):
        sock.settimeout(seconds)
        return False
    whole = int(seconds)
    tv = struct.pack("ll", whole, int((seconds - whole) * 1e6))
    sock.settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    return True


class Answer(NamedTuple):
    """The relay's answer: status code, body, reason phrase."""

    status: int
    body: bytes
    reason: str


class Closed(ConnectionError):
    """The relay closed the connection before answering."""


class Connection:
    """A keep-alive connection to the relay at ``base`` (``http[s]://host[:port][/prefix]``).
    Not thread-safe: one per sender thread. :meth:`request` raises ``OSError`` when the
    relay cannot be reached (refused, reset, timed out); any HTTP status is an answer."""

    def __init__(self, base: str, token: str | None, timeout: float) -> None:
        self.base = base.rstrip("/")
        parts = urllib.parse.urlsplit(self.base)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        netloc = parts.netloc.rsplit("@", 1)[-1]
        self.timeout = timeout
        extra = f"Host: {netloc}\r\nConnection: keep-alive\r\n"
        if token:
            extra += f"Authorization: Bearer {token}\r\n"
        self._extra = extra
        self.token = token
        self._sock: socket.socket | None = None
        self._sock_timeout = 0.0
        try:
            proxies = urllib.request.getproxies()
            proxy = parts.scheme in proxies and not urllib.request.proxy_bypass(self.host)
        except Exception:
            proxy = False
        self.proxied = bool(proxy)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> Answer:
        """``method path`` (below the base URL) with ``body``; the answer, whatever its
        status. Raises ``OSError`` when the relay is unreachable."""
        if self.proxied:
            return self._via_urllib(method, path, body, content_type, timeout)
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\n{self._extra}"
        if body is not None:
            head += f"Content-Length: {len(body)}\r\n"
            if content_type:
                head += f"Content-Type: {content_type}\r\n"
        data = (head + "\r\n").encode("latin-1") + (body or b"")
        for attempt in (0, 1):
            reused = self._sock is not None
            sock = self._sock if self._sock is not None else self._connect()
            if (timeout or self.timeout) != self._sock_timeout:
                self._sock_timeout = timeout or self.timeout
                kernel_timeout(sock, self._sock_timeout)
            try:
                sock.sendall(data)
                return self._answer(sock)
            except (Closed, ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
                self.close()
                if not reused or attempt:
                    raise
            except BlockingIOError:  # a kernel timeout ran out
                self.close()
                raise TimeoutError("timed out") from None
            except BaseException:
                self.close()
                raise
        raise Closed("unreachable")  # pragma: no cover (the loop returns or raises)

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.https:
                ctx = ssl.create_default_context()
                sock = ctx.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._sock_timeout = 0.0
        return sock

    def _answer(self, sock: socket.socket) -> Answer:
        buf = b""
        while True:
            end = buf.find(b"\r\n\r\n")
            while end < 0:
                chunk = sock.recv(65536)
                if not chunk:
                    raise Closed("the relay closed the connection")
                buf += chunk
                end = buf.find(b"\r\n\r\n")
            head, buf = buf[:end], buf[end + 4 :]
            lines = head.split(b"\r\n")
            status_line = lines[0].split(None, 2)
            try:
                status = int(status_line[1])
            except (IndexError, ValueError):
                raise Closed(f"not an HTTP answer: {lines[0][:80]!r}") from None
            if status >= 200:
                break
            # 1xx (100 Continue): another head follows
        reason = status_line[2].decode("latin-1") if len(status_line) > 2 else ""
        length = -1
        chunked = False
        close = lines[0].startswith(b"HTTP/1.0")
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                v = value.strip().lower()
                close = v == b"close" or (close and v != b"keep-alive")
        if status in (204, 304):
            body = b""
        elif chunked:
            body = self._chunked(sock, buf)
        elif length >= 0:
            while len(buf) < length:
                chunk = sock.recv(max(65536, length - len(buf)))
                if not chunk:
                    raise Closed("the relay closed the connection mid-answer")
                buf += chunk
            body = buf[:length]
        else:  # no length: the body runs to the end of the connection
            parts = [buf]
            while chunk := sock.recv(65536):
                parts.append(chunk)
            body = b"".join(parts)
            close = True
        if close:
            self.close()
        return Answer(status, body, reason)

    @staticmethod
    def _chunked(sock: socket.socket, buf: bytes) -> bytes:
        out: list[bytes] = []
        while True:
            while b"\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise Closed("the relay closed the connection mid-answer")
                buf += chunk
            size_line, buf = buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            while len(buf) < size + 2:
                chunk = sock.recv(65536)
                if not chunk:
                    raise Closed("the relay closed the connection mid-answer")
                buf += chunk
            if size == 0:
                return b"".join(out)  # (trailers, if any, are not read: none are sent)
            out.append(buf[:size])
            buf = buf[size + 2 :]

    def _via_urllib(
        self,
        method: str,
        path: str,
        body: bytes | None,
        content_type: str | None,
        timeout: float | None,
    ) -> Answer:
        req = urllib.request.Request(self.base + path, data=body, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return Answer(resp.status, resp.read(), str(resp.reason))
        except urllib.error.HTTPError as e:
            return Answer(e.code, e.read(), str(e.reason))
