"""The HTTP server protects itself (issue #12, defect 4), on a real connector process on loopback.

Slow heads and bodies are cut at their deadline, a `/v1` request without the token is refused
before its body is read (the process's peak memory does not grow by the body's size), bodies over
the limit get 413 by Content-Length and while streaming chunked, refusals are JSON, a client
leaving mid-body is one log line, and a connection over `server.max_connections` gets a 503.
Extend is a closed port: only the HTTP front door is exercised here.
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from support.processes import CLI, Proc, free_port, wait_for
from support.slowloris import RawExchange, RawResponse

TOKEN = "shop-token"
MAX_BODY = 65_536
WEBHOOK_MAX_BODY = 131_072
HEAD_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
MiB = 1024 * 1024


@dataclass
class Server:
    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc.popen is not None
        return self.proc.popen.pid

    def log(self) -> str:
        return self.proc.log_path.read_text(errors="replace")

    def raw(self) -> RawExchange:
        return RawExchange("127.0.0.1", self.port)

    def status_kib(self, field: str) -> int:
        text = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
        assert match, field
        return int(match.group(1))


def _lower_open_files() -> None:
    # Starts the child with a low soft limit: the server must raise it to the hard limit itself.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))


def _open_files(soft: int, hard: int | None = None) -> Callable[[], None]:
    def set_limit() -> None:
        _, current_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(
            resource.RLIMIT_NOFILE,
            (min(soft, current_hard), min(hard or current_hard, current_hard)),
        )

    return set_limit


def _start(
    tmp_path: Path,
    name: str,
    extra: dict[str, str],
    *,
    limit_files: Callable[[], None] = _lower_open_files,
) -> Server:
    port = free_port()
    env = {
        "EXTEND_CONNECTOR_EXTEND__BASE_URL": f"http://127.0.0.1:{free_port()}/api",
        "EXTEND_CONNECTOR_STORE__DATA_DIR": str(tmp_path / name),
        "EXTEND_CONNECTOR_SERVER__PORT": str(port),
        **extra,
    }
    proc = Proc(
        name,
        [*CLI, "run"],
        env=env,
        log_dir=tmp_path,
        cwd=tmp_path,
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    with proc.log_path.open("ab") as log:
        proc.popen = subprocess.Popen(
            proc.argv,
            env=proc.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            start_new_session=True,
            preexec_fn=limit_files,
        )
    try:
        proc.wait_healthy(60)
    except BaseException:
        proc.stop()
        raise
    return Server(proc=proc, port=port)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp_path = tmp_path_factory.mktemp("guard")
    srv = _start(
        tmp_path,
        "connector",
        {
            "EXTEND_CONNECTOR_SERVER__MAX_BODY_BYTES": str(MAX_BODY),
            "EXTEND_CONNECTOR_SERVER__WEBHOOK_MAX_BODY_BYTES": str(WEBHOOK_MAX_BODY),
            "EXTEND_CONNECTOR_SERVER__HEADER_TIMEOUT_SECONDS": str(HEAD_TIMEOUT),
            "EXTEND_CONNECTOR_SERVER__BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        },
    )
    try:
        yield srv
    finally:
        srv.proc.stop()


def head(
    method: str, path: str, *, token: bool = True, length: int | None = None, chunked: bool = False
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if token:
        lines.append(f"Authorization: Bearer {TOKEN}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def assert_json_error(response: RawResponse | None, status: int, error: str) -> None:
    assert response is not None, "no answer"
    assert response.status == status, response
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    assert json.loads(response.body)["error"] == error, response.body


def send_body(exchange: RawExchange, total: int, chunk: int = MiB) -> RawResponse | None:
    """Send `total` body bytes (a JSON string) until done or the server answers or closes."""
    piece = b"a" * chunk
    end = exchange.sent + total
    if not exchange.send(b'{"shopRef": "'):
        return exchange.poll(1.0)
    while exchange.sent < end:
        if exchange.poll() is not None or not exchange.send(
            piece[: min(chunk, end - exchange.sent)]
        ):
            break
    return exchange.poll(120.0)


def test_the_server_raises_its_own_open_file_limit(server: Server) -> None:
    limits = Path(f"/proc/{server.pid}/limits").read_text()
    soft, hard = re.search(r"^Max open files\s+(\S+)\s+(\S+)", limits, re.MULTILINE).groups()  # type: ignore[union-attr]
    assert soft == hard, limits


def test_a_slow_request_head_is_answered_408_and_closed(server: Server) -> None:
    exchange = server.raw()
    try:
        exchange.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        deadline = time.monotonic() + 30 * HEAD_TIMEOUT
        line = 0
        while not exchange.closed and time.monotonic() < deadline:
            line += 1
            exchange.send(f"X-Slow-{line}: 1\r\n".encode())  # never silent, never finished
            exchange.poll(wait=0.2)
        assert exchange.closed, "the server kept a slow request head open"
        assert_json_error(exchange.poll(), 408, "header_timeout")
    finally:
        exchange.close()


def test_a_silent_connection_is_closed(server: Server) -> None:
    exchange = server.raw()
    try:
        assert exchange.wait_closed(30 * HEAD_TIMEOUT), "the server kept a silent connection open"
        assert exchange.data == b""
    finally:
        exchange.close()


def test_a_slow_body_gets_408_and_the_connection_closes(server: Server) -> None:
    exchange = server.raw()
    try:
        exchange.send(head("POST", "/v1/orders", length=10_000))
        deadline = time.monotonic() + 30 * BODY_TIMEOUT
        while not exchange.closed and time.monotonic() < deadline:
            exchange.send(b" ")
            if exchange.poll(wait=0.2) is not None:
                break
        assert_json_error(exchange.poll(), 408, "body_timeout")
        assert exchange.wait_closed(10)
    finally:
        exchange.close()


def test_an_unauthenticated_huge_body_is_refused_before_it_is_read(server: Server) -> None:
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # restart the peak (VmHWM) from now
    before = server.status_kib("VmRSS")
    exchange = server.raw()
    try:
        exchange.send(head("POST", "/v1/orders", token=False, length=200 * MiB))
        head_bytes = exchange.sent
        response = send_body(exchange, 200 * MiB)
    finally:
        exchange.close()
    peak = server.status_kib("VmHWM")
    taken = exchange.sent - head_bytes
    assert peak - before < 50 * 1024, f"peak memory grew by {(peak - before) // 1024} MiB"
    assert_json_error(response, 401, "unauthorized")
    assert taken < 100 * MiB, f"the server took {taken} bytes of a refused body"


def test_a_body_over_the_limit_is_refused_by_its_content_length(server: Server) -> None:
    for path, limit in (("/v1/orders", MAX_BODY), ("/webhooks/extend", WEBHOOK_MAX_BODY)):
        exchange = server.raw()
        try:
            exchange.send(head("POST", path, length=limit + 1))
            response = exchange.poll(10.0)  # answered from the head alone
        finally:
            exchange.close()
        assert_json_error(response, 413, "too_large")
        assert exchange.sent < limit


def test_a_chunked_body_over_the_limit_is_cut_while_it_streams(server: Server) -> None:
    exchange = server.raw()
    try:
        exchange.send(head("POST", "/v1/orders", chunked=True))
        piece = b"a" * 16_384
        frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        while exchange.sent < 20 * MiB and exchange.poll() is None and exchange.send(frame):
            pass
        response = exchange.poll(10.0)
        assert exchange.wait_closed(10)
    finally:
        exchange.close()
    assert_json_error(response, 413, "too_large")
    assert exchange.sent < 20 * MiB


def test_refusals_and_errors_are_json(server: Server) -> None:
    answers = [
        httpx2.get(f"{server.url}/v1/stock", timeout=10),
        httpx2.get(f"{server.url}/v1/stock", headers={"authorization": "Bearer wrong"}, timeout=10),
        httpx2.get(f"{server.url}/nowhere", timeout=10),
    ]
    assert [a.status_code for a in answers] == [401, 401, 404]
    for answer in answers:
        assert answer.headers["content-type"].startswith("application/json")
        assert set(answer.json()) >= {"error", "message"}
    assert answers[0].headers["www-authenticate"] == "Bearer"
    exchange = server.raw()  # not HTTP at all: the parser's own answer is JSON too
    try:
        exchange.send(b"NOT HTTP\x01\r\n\r\n")
        assert_json_error(exchange.poll(10.0), 400, "invalid_http")
    finally:
        exchange.close()


def test_a_client_leaving_mid_body_is_one_log_line(server: Server) -> None:
    before = server.log().count("http_client_disconnected")
    for path in ("/webhooks/extend", "/v1/orders"):
        exchange = server.raw()
        exchange.send(head("POST", path, length=10_000) + b'{"Id": "')
        time.sleep(0.3)
        exchange.close()
    wait_for(
        lambda: server.log().count("http_client_disconnected") - before == 2,
        timeout=30,
        what="one disconnect line per client",
    )
    assert httpx2.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert "Traceback" not in server.log()
    assert "ClientDisconnect" not in server.log()


def test_a_connection_over_the_limit_gets_503_and_the_others_are_served(tmp_path: Path) -> None:
    srv = _start(
        tmp_path,
        "limited",
        {
            "EXTEND_CONNECTOR_SERVER__MAX_CONNECTIONS": "16",
            "EXTEND_CONNECTOR_SERVER__HEADER_TIMEOUT_SECONDS": "120",
        },
    )
    held: list[RawExchange] = []
    try:
        held = [srv.raw() for _ in range(16)]
        time.sleep(0.5)  # all accepted before the one over the limit
        extra = srv.raw()
        try:
            assert extra.wait_closed(30), "the connection over the limit was kept open"
            assert_json_error(extra.poll(), 503, "too_many_connections")
        finally:
            extra.close()
        for exchange in held[:4]:
            exchange.close()
        wait_for(lambda: _healthy(srv.url), timeout=30, what="served again below the limit")
        assert "Traceback" not in srv.log()
    finally:
        for exchange in held:
            exchange.close()
        srv.proc.stop()


def _healthy(url: str) -> bool:
    try:
        return httpx2.get(f"{url}/healthz", timeout=5).status_code == 200
    except httpx2.HTTPError:
        return False


def test_max_connections_is_lowered_to_fit_the_open_file_limit(tmp_path: Path) -> None:
    # A hard limit of 512 descriptors: 4096 connections (the default) cannot fit, 256 can.
    env = {"EXTEND_CONNECTOR_SERVER__HEADER_TIMEOUT_SECONDS": "120"}
    srv = _start(tmp_path, "few-files", env, limit_files=_open_files(512, 512))
    flood: list[RawExchange] = []

    def answered() -> list[RawResponse]:
        return [r for r in (exchange.poll() for exchange in flood) if r is not None]

    try:
        assert "max_connections_lowered" in srv.log()
        flood = [srv.raw() for _ in range(600)]
        wait_for(
            lambda: len(answered()) >= 600 - 256,
            timeout=30,
            what="503s for the connections over 256",
        )
        time.sleep(1)  # nothing more comes: the other 256 are held, waiting for their heads
        assert len(answered()) == 600 - 256
        for response in answered():
            assert_json_error(response, 503, "too_many_connections")
        for exchange in flood:
            exchange.close()
        wait_for(lambda: _healthy(srv.url), timeout=30, what="served again once the flood left")
        log = srv.log()
        assert "Traceback" not in log
        # accept() may still run short for an instant while a burst waits to be closed: one
        # throttled line, never a line (or a traceback) per attempt.
        # (A job calling Extend in that instant gets EMFILE too: one warning that Extend could not
        # be reached, a technical failure retried like any call without an answer.)
        server_lines = [
            line for line in log.splitlines() if '"logger": "extend_connector.http"' in line
        ]
        short = [line for line in server_lines if "Too many open files" in line]
        assert len(short) == log.count('"event": "http_accept_failed"') <= 3
    finally:
        for exchange in flood:
            exchange.close()
        srv.proc.stop()
