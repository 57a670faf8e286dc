"""Several `web` processes on one port (`server.processes = 2`, PostgreSQL), real processes on
loopback: the simulator as Extend, the supervisor with its two web processes, and one worker.

- Both web processes answer: fresh connections reach both (SO_REUSEPORT spreads them), told
  apart by which process holds the server's end of each connection (/proc).
- `/metrics` on the shared port shows the counters of both, whichever answers, a process killed
  and started again included, and one start-time sample per live process.
- One web process is killed with SIGKILL while the shop posts orders: the supervisor starts it
  again, the shop's re-posts (idempotent on shopRef) land on the other, and every order is in
  Extend exactly once with nothing parked.
- SIGTERM to the supervisor stops every web process; SIGKILL to the supervisor alone leaves no
  web process serving the port.
- A second such service on the same port is refused at start-up (SO_REUSEPORT alone would let
  it share the port).
- A port in use is one error at start-up naming `server.port`, exit code 1.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from extend_connector.simulator import render_body, sign
from support.fleet import SECRET, Stack, connector_env, simulator, web_and_workers
from support.postgres import throwaway_database
from support.processes import CLI, Proc, free_port, running, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(600)]

ORDERS = 200


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with throwaway_database("ec_webprocs", fleet=True) as url:
        yield url


def web_processes(supervisor: Proc) -> list[int]:
    """The supervisor's web processes (multiprocessing's resource tracker left out)."""
    assert supervisor.popen is not None
    pid = supervisor.popen.pid
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []
    web = []
    for child in found:
        try:
            if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes():
                web.append(int(child))
        except FileNotFoundError:
            continue
    return web


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def _established_inodes(port: int) -> set[str]:
    """Socket inodes of the established TCP connections whose local port is `port` (the
    server's side of each connection to it)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                found.add(target[8:-1])
    except FileNotFoundError:
        pass
    return found


def answering_processes(url: str, supervisor: Proc, tries: int = 24) -> set[int]:
    """The web processes that hold the server's end of `tries` fresh connections (kept open
    while /proc is read)."""
    port = int(url.rsplit(":", 1)[1])
    clients = [httpx2.Client(timeout=10) for _ in range(tries)]
    try:
        for client in clients:
            assert client.get(f"{url}/healthz").status_code == 200
        served = _established_inodes(port)
        return {pid for pid in web_processes(supervisor) if _socket_inodes(pid) & served}
    finally:
        for client in clients:
            client.close()


def two_serving(supervisor: Proc) -> list[int]:
    """The supervisor's two web processes, once both are there."""
    found: list[int] = wait_for(
        lambda: len(web_processes(supervisor)) == 2 and web_processes(supervisor),
        60,
        what="two web processes",
    )
    return found


def killed_and_replaced(supervisor: Proc, victim: int) -> list[int]:
    """SIGKILL one web process; the two web processes once the supervisor started it again."""
    os.kill(victim, signal.SIGKILL)
    found: list[int] = wait_for(
        lambda: len(now := web_processes(supervisor)) == 2 and victim not in now and now,
        90,
        what="the killed web process started again",
    )
    return found


def test_two_web_processes_share_the_port_and_one_killed_loses_no_order(
    tmp_path: Path, postgres_url: str
) -> None:
    port, sim_port = free_port(), free_port()
    sim = simulator(tmp_path, port, sim_port, products=40, extra=("--no-rate-limits",))
    env = {**connector_env(tmp_path, sim_port, port), "EXTEND_CONNECTOR_SERVER__PROCESSES": "2"}
    web, workers = web_and_workers(tmp_path, env, port, postgres_url, workers=1)
    with running(sim, web, *workers):  # the supervisor migrates the database before the worker
        stack = Stack(
            f"http://127.0.0.1:{sim_port}",
            f"http://127.0.0.1:{port}",
            postgres_url.replace("postgresql://", "postgresql+psycopg://", 1),
        )
        first = two_serving(web)
        wait_for(lambda: len(answering_processes(stack.url, web)) == 2, 60, what="both answering")

        refs = [f"WP-{uuid.uuid4().hex[:8]}-{i}" for i in range(ORDERS)]
        errors: list[str] = []

        def post() -> None:
            try:
                stack.post_orders(refs)
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(repr(exc))

        shop = threading.Thread(target=post, name="shop", daemon=True)
        shop.start()
        wait_for(lambda: stack.mapped(refs) >= ORDERS // 4, 120, what="a quarter of the orders")
        replaced = killed_and_replaced(web, first[0])
        shop.join(300)
        assert not shop.is_alive() and not errors, errors
        wait_for(lambda: stack.mapped(refs) == ORDERS, 300, what="every order in Extend")
        counts = stack.in_extend()
        assert {ref: counts[ref] for ref in refs} == dict.fromkeys(refs, 1)
        assert stack.failures() == []
        assert len(answering_processes(stack.url, web)) == 2
        log = web.log_path.read_text()
        assert "web_process_ended" in log and f'"exit_code": -{int(signal.SIGKILL)}' in log

        web.stop(timeout=60)
        assert web.popen is not None and web.popen.returncode == 0
        assert not [pid for pid in replaced if alive(pid)]


def two_web_processes(tmp_path: Path, postgres_url: str, port: int) -> dict[str, str]:
    """Settings of a `web` service of two processes on `port`, Extend a closed port (these
    tests exercise the supervisor only)."""
    return {
        **connector_env(tmp_path, free_port(), port),
        "EXTEND_CONNECTOR_STORE__DATABASE_URL": postgres_url,
        "EXTEND_CONNECTOR_ENGINE__ROLE": "web",
        "EXTEND_CONNECTOR_SERVER__PROCESSES": "2",
    }


def test_no_web_process_outlives_a_killed_supervisor(tmp_path: Path, postgres_url: str) -> None:
    port = free_port()
    env = two_web_processes(tmp_path, postgres_url, port)
    web, _ = web_and_workers(tmp_path, env, port, postgres_url, workers=0)
    with running(web):
        children = two_serving(web)
        # A second service on the same port is refused (SO_REUSEPORT alone would let it share).
        second = subprocess.run(
            [*CLI, "run"],
            env={**os.environ, **env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1
        assert f"server.port {port} is served already" in second.stdout + second.stderr
        assert len(answering_processes(f"http://127.0.0.1:{port}", web)) == 2
        assert web.popen is not None
        os.kill(web.popen.pid, signal.SIGKILL)  # the supervisor alone, not its children
        web.popen.wait(10)
        wait_for(
            lambda: not [pid for pid in children if alive(pid)], 30, what="the web processes ended"
        )
    with socket.socket() as probe:  # the port is free again: nothing listens on it
        probe.bind(("127.0.0.1", port))


def test_a_port_in_use_is_one_error_naming_server_port(tmp_path: Path, postgres_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, **two_web_processes(tmp_path, postgres_url, port)}
        done = subprocess.run(
            [*CLI, "run"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 1
    assert f"server.port {port}" in done.stdout + done.stderr
    assert "web_process_starting" not in done.stdout + done.stderr


DELIVERIES = 40


def _sample(text: str, family: str, labels: str = "") -> float | None:
    match = re.search(rf"^{re.escape(family + labels)} (\S+)$", text, re.MULTILINE)
    return None if match is None else float(match.group(1))


def _every_scrape_counts(url: str, accepted: int, live: list[int], tries: int = 12) -> None:
    """`/metrics` over `tries` fresh connections (SO_REUSEPORT spreads them over the processes):
    each shows `accepted` deliveries and a start-time sample for each of the `live` pids."""
    for _ in range(tries):
        with httpx2.Client(timeout=10) as fresh:
            text = fresh.get(f"{url}/metrics").text
        counted = _sample(text, "extend_connector_webhook_deliveries_total", '{outcome="accepted"}')
        assert counted == accepted, text[:3000]
        started = re.findall(
            r'^extend_connector_web_process_start_time_seconds\{[^}]*pid="(\d+)"', text, re.M
        )
        assert sorted(map(int, started)) == sorted(live)


def test_metrics_on_the_shared_port_count_every_web_process(
    tmp_path: Path, postgres_url: str
) -> None:
    """Each scrape, whichever process answers it, shows the counters of all of them, a process
    killed and started again included (its counts stay: counters never go back), and one
    start-time sample per live process."""
    port = free_port()
    env = two_web_processes(tmp_path, postgres_url, port)
    web, _ = web_and_workers(tmp_path, env, port, postgres_url, workers=0)
    url = f"http://127.0.0.1:{port}"
    with running(web):
        first = two_serving(web)
        wait_for(lambda: len(answering_processes(url, web)) == 2, 60, what="both answering")
        for i in range(DELIVERIES):  # each on a fresh connection: both processes take some
            raw = render_body(
                delivery_id=uuid.uuid4().hex,
                attempt=1,
                notification_id=str(i),
                notifications=[{"Action": "NotKnownHere", "Details": {}}],
            )
            with httpx2.Client(timeout=10) as fresh:
                answer = fresh.post(
                    f"{url}/webhooks/extend",
                    content=raw,
                    headers={"content-type": "application/json", "ms-signature": sign(SECRET, raw)},
                )
            assert answer.status_code == 200, answer.text
        _every_scrape_counts(url, DELIVERIES, first)
        now = killed_and_replaced(web, first[0])
        wait_for(lambda: len(answering_processes(url, web)) == 2, 60, what="both answering again")
        _every_scrape_counts(url, DELIVERIES, now)
    # Stopped: the service's counter files are gone with it.
    assert not list(Path(tempfile.gettempdir()).glob(f"extend-connector-metrics-{port}-*"))
