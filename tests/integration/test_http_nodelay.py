"""Answers leave at once on every socket the servers are given (Nagle's algorithm off).

A server handed a listening socket made by `socket.socket()` (protocol number 0) accepts
connections that asyncio leaves with Nagle's algorithm on: it sets TCP_NODELAY only when the
socket's protocol number says TCP. uvicorn writes an answer's head and body separately, so the body
then waited for the client's delayed ACK: about 40 ms per answer on loopback (measured: 44 ms
against 0.22 ms per keep-alive request). The connector's server sets TCP_NODELAY on every
connection it accepts; the simulator makes its sockets as TCP sockets.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from extend_connector.api.http_server import build_server
from extend_connector.settings import Settings
from extend_connector.simulator.app import TRANSPORTS
from extend_connector.simulator.server import run_in_thread


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _nodelay(transport: Any) -> int:
    sock = transport.get_extra_info("socket")
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


@contextmanager
def _request_open(port: int) -> Iterator[tuple[str, int]]:
    """One answered request on a connection kept open; yields the client's address."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
        assert conn.sock is not None
        yield conn.sock.getsockname()
    finally:
        conn.close()


def test_the_connector_server_answers_without_nagle_on_a_socket_it_was_given() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # protocol number 0
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = build_server(_ok, Settings(), host="127.0.0.1", port=port)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    try:
        with _request_open(port):
            (connection,) = server.server_state.connections
            assert _nodelay(connection.transport) == 1
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_the_simulator_answers_without_nagle() -> None:
    with run_in_thread() as sim, _request_open(sim.port) as client:
        assert _nodelay(TRANSPORTS[client]) == 1
