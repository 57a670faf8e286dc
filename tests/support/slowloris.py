"""Hostile HTTP clients on raw sockets: slow request heads held open, and a one-shot raw exchange.

`SlowClients` keeps `n` connections open, each sending its request head one header line at a
time and never finishing it; a connection the server ends is counted and (optionally) opened
again, so `n` stay held. Used by the acceptance test and `benchmarks/slow_clients.py`.
"""

from __future__ import annotations

import contextlib
import resource
import select
import selectors
import socket
import threading
import time
from dataclasses import dataclass


def raise_open_files(wanted: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE to at least `wanted` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class SlowClients:
    """`n` connections that each send a header line every `interval` seconds and never end the
    head."""

    def __init__(
        self,
        host: str,
        port: int,
        n: int,
        *,
        interval: float = 1.0,
        reopen: bool = True,
        path: str = "/v1/stock",
    ) -> None:
        self.host, self.port, self.n = host, port, n
        self.interval, self.reopen, self.path = interval, reopen, path
        self.opened = 0
        self.closed_by_server = 0
        self.refused = 0
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lines = 0

    @property
    def held(self) -> int:
        return len(self._selector.get_map())

    def _open_one(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(5)
            sock.connect((self.host, self.port))
            sock.sendall(f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\n".encode())
            sock.setblocking(False)
        except OSError:
            sock.close()
            self.refused += 1
            return
        self._selector.register(sock, selectors.EVENT_READ)
        self.opened += 1

    def _drop(self, sock: socket.socket) -> None:
        self._selector.unregister(sock)
        sock.close()
        self.closed_by_server += 1

    def _fill(self) -> None:
        while self.held < self.n and not self._stop.is_set():
            self._open_one()

    def _trickle(self) -> None:
        self._lines += 1
        line = f"X-Slow-{self._lines}: 1\r\n".encode()
        for key in list(self._selector.get_map().values()):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                sock.send(line)
            except OSError:
                self._drop(sock)

    def _run(self) -> None:
        self._fill()
        next_line = time.monotonic() + self.interval
        while not self._stop.is_set():
            for key, _ in self._selector.select(
                timeout=max(0.0, min(0.2, next_line - time.monotonic()))
            ):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data or data.startswith(b"HTTP/"):  # an answer ends the head for good
                    self._drop(sock)
            if time.monotonic() >= next_line:
                self._trickle()
                next_line = time.monotonic() + self.interval
            if self.reopen:
                self._fill()

    def start(self) -> SlowClients:
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)
        self._thread.start()
        return self

    def wait_held(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.held < self.n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.held} of {self.n} slow connections open")
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for key in list(self._selector.get_map().values()):
            self._selector.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def parse_response(data: bytes) -> RawResponse | None:
    """The first complete HTTP/1.1 response in `data` (Content-Length framed), or None."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/"):
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
    }
    length = int(headers.get("content-length", "0"))
    if len(rest) < length:
        return None
    return RawResponse(status=int(lines[0].split()[1]), headers=headers, body=rest[:length])


class RawExchange:
    """One request on a raw socket: send the head, then the body in pieces, watching for an early
    answer."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.data = b""
        self.closed = False
        self.sent = 0

    def send(self, payload: bytes) -> bool:
        """Send `payload`; False once the server has closed the connection (broken pipe, reset)."""
        try:
            self.sock.sendall(payload)
        except OSError:
            return False
        self.sent += len(payload)
        return True

    def poll(self, wait: float = 0.0) -> RawResponse | None:
        """Read what has arrived within `wait` seconds; the response once it is complete."""
        deadline = time.monotonic() + wait
        while not self.closed:
            ready, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                break
            self.data += chunk
            if parse_response(self.data) is not None:
                break
        return parse_response(self.data)

    def wait_closed(self, timeout: float) -> bool:
        """True once the server has closed the connection (read end of file or reset) within
        `timeout`."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.poll(wait=min(0.5, max(0.0, deadline - time.monotonic())))
        return self.closed

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
