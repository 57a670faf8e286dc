"""Several `web` processes answering one port (`server.processes`, role `web`, PostgreSQL).

One process answers webhooks and the read API on one core (its single inbox writer is the limit
on PostgreSQL, docs/benchmarks.md, "Tenth session"): on a machine with idle cores, more processes
answer more. On a 2-core machine that runs the workers and the database too they do not
(docs/benchmarks.md, "Eleventh session"). With `server.processes = N` the `run` command becomes
a small supervisor:

1. it brings the database to the newest revision once (the children then find nothing to do,
   instead of racing each other through the same migration);
2. it binds `server.host`:`server.port` itself (without listening), so a port in use is one
   clear error at start-up and no other program can take the port while a child restarts.
   SO_REUSEPORT would let a second supervisor of the same user share the port silently (a
   test instance answering half of production's webhooks): the supervisor also claims the
   abstract Unix socket `extend-connector-web-port-<port>` (Linux; gone with the process), and
   a second one is refused at start-up;
3. each child listens on its own socket bound to the same port with SO_REUSEPORT: the kernel
   spreads new connections over the children evenly (by address hash). One shared listening
   socket would not: the first child to wake takes every connection waiting, and measured
   with 16 keep-alive connections one child served all of them (3.89 s of CPU against 0.01 s).
   A child that dies loses the connections waiting in its own queue (their clients see a reset
   and retry; Extend redelivers); nothing acknowledged is lost;
4. the first child starts alone (it creates what the engine needs in the database), the others
   once it serves;
5. while the service starts, a child that ends before it serves (or has not served within
   `START_TIMEOUT_SECONDS`) stops the whole service with exit code 1 (a mistake in the settings
   or an unreachable database would only repeat). Once it served, a child that ends is started
   again, with a warning, while the others serve; one whose new start fails too (the database
   is down, say), or hangs past `START_TIMEOUT_SECONDS` and is killed, is tried again after 1,
   3, 7, ... s (at most 30). SIGTERM/SIGINT stop every child gracefully (uvicorn finishes the
   requests in flight) and then the supervisor.

Each child is a whole `web` process: its own inbox writer and connection pool (`store.pool_size`
each). They count in prometheus_client's multi-process mode, into files in a directory the
supervisor makes for the service (and removes when it stops): `/metrics` on the shared port shows
the sum over every child whichever child answers, a child that ended included, so a counter never
goes back when a child is restarted. `extend_connector_web_process_start_time_seconds` has one
sample per live child. The gauges read from the database are the same in every child.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import multiprocess

from extend_connector.metrics import MULTIPROCESS_DIR_ENV, WEB_PROCESS_START
from extend_connector.settings import Settings

log = structlog.get_logger("extend_connector.web_processes")

BACKLOG = 2048
# A child that has not served within this long after it was started is taken as failed.
START_TIMEOUT_SECONDS = 120.0
# Longest wait before another start of a child whose starts keep failing.
RESTART_DELAY_MAX_SECONDS = 30.0
# Seconds a child gets to finish its requests after SIGTERM before it is killed.
STOP_TIMEOUT_SECONDS = 30.0

_spawn = multiprocessing.get_context("spawn")


class StartupError(RuntimeError):
    """The service could not start (the message names the setting or the cause)."""


def bind_port(host: str, port: int, *, listen: bool) -> socket.socket:
    """A TCP socket bound to `host`:`port` with SO_REUSEPORT (listening when `listen`); a port
    in use or an address that is not this machine's is a `StartupError` naming the settings."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise StartupError(f"server.host {host!r} does not resolve: {exc.strerror}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen:
            sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"cannot listen on server.host {host!r}, server.port {port}: {exc.strerror}"
        ) from exc
    return sock


def claim_port(port: int) -> socket.socket | None:
    """Hold the machine-wide claim on `port` for one supervisor (Linux; elsewhere None)."""
    if not sys.platform.startswith("linux"):
        return None
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claim.bind(f"\0extend-connector-web-port-{port}")
    except OSError as exc:
        claim.close()
        raise StartupError(
            f"server.port {port} is served already by another extend-connector with "
            "server.processes > 1 on this machine; stop it or choose another server.port"
        ) from exc
    return claim


def _child(settings: Settings, ready: Event, index: int) -> None:
    """One `web` process on its own SO_REUSEPORT socket (runs in the spawned child)."""
    from extend_connector.api.http_server import build_server
    from extend_connector.logs import configure_logging
    from extend_connector.service import MAX_REQUEST_LINE_BYTES, Connector

    os.setpgrp()  # Ctrl-C reaches the supervisor alone, which stops the children once
    configure_logging(settings.log.level, fmt=settings.log.format)
    structlog.contextvars.bind_contextvars(web_process=index)
    WEB_PROCESS_START.labels(index=str(index)).set(time.time())
    connector = Connector(settings)
    server = build_server(
        connector.app(),
        settings,
        host=settings.server.host,
        port=settings.server.port,
        h11_max_incomplete_event_size=MAX_REQUEST_LINE_BYTES,
    )
    server.on_started = ready.set
    threading.Thread(
        target=_end_with_parent, args=(server, os.getppid()), name="web-parent-watch", daemon=True
    ).start()
    # Bound once the app is built: the kernel sends connections to a socket as soon as it listens.
    sock = bind_port(settings.server.host, settings.server.port, listen=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        connector.close()
    if not server.started:
        raise SystemExit(1)


def _end_with_parent(server: Any, parent: int) -> None:
    """Stop serving once the supervisor is gone (killed with SIGKILL, say): no orphan keeps the
    port."""
    while not server.should_exit:
        if os.getppid() != parent:
            log.warning("web_process_orphaned", why="the supervisor ended; stopping")
            server.should_exit = True
            return
        time.sleep(1.0)


@dataclass
class _Slot:
    index: int
    process: SpawnProcess | None = None
    ready: Event | None = None
    started_at: float = 0.0
    served: bool = False
    restarts: int = 0
    failed_starts: int = 0  # in a row: ended before serving since it last served
    restart_at: float = 0.0
    killed: bool = False  # the supervisor killed this start (it hung)


class Supervisor:
    """Runs `settings.server.processes` web children on one port until stopped; `sock` holds the
    port meanwhile."""

    def __init__(self, settings: Settings, sock: socket.socket, *, claimed: bool) -> None:
        self.settings = settings
        self.sock = sock
        self.slots = [_Slot(i) for i in range(settings.server.processes)]
        self.stopping = threading.Event()
        # The children's counters (multi-process mode): set before the first child is spawned,
        # which reads it when it imports prometheus_client. Once the port is `claimed`
        # (`claim_port`), a directory of an earlier supervisor of it that was killed is nobody's.
        prefix = f"extend-connector-metrics-{settings.server.port}-"
        for stale in Path(tempfile.gettempdir()).glob(f"{prefix}*") if claimed else ():
            shutil.rmtree(stale, ignore_errors=True)
        self.metrics_dir = tempfile.mkdtemp(prefix=prefix)
        os.environ[MULTIPROCESS_DIR_ENV] = self.metrics_dir

    def _target(self, slot: _Slot, ready: Event) -> tuple[Any, tuple[Any, ...]]:
        """What a child runs (a function its own interpreter can import) and its arguments."""
        return _child, (self.settings, ready, slot.index)

    def _start(self, slot: _Slot) -> None:
        slot.ready = _spawn.Event()
        slot.served = slot.killed = False
        target, args = self._target(slot, slot.ready)
        slot.process = _spawn.Process(
            target=target, args=args, name=f"extend-connector-web-{slot.index}"
        )
        slot.started_at = time.monotonic()
        slot.process.start()
        log.info("web_process_starting", index=slot.index, pid=slot.process.pid)

    def _wait_served(self, slots: list[_Slot]) -> None:
        """Until each of `slots` serves; a StartupError when one ends or times out first."""
        for slot in slots:
            assert slot.process is not None and slot.ready is not None
            while not slot.ready.wait(0.1):
                if self.stopping.is_set():
                    return
                if not slot.process.is_alive():
                    raise StartupError(
                        f"web process {slot.index} ended before it served "
                        f"(exit code {slot.process.exitcode}); its log lines above say why"
                    )
                if time.monotonic() - slot.started_at > START_TIMEOUT_SECONDS:
                    raise StartupError(
                        f"web process {slot.index} did not serve within "
                        f"{START_TIMEOUT_SECONDS:.0f} s"
                    )
            slot.served = True
            log.info("web_process_serving", index=slot.index, pid=slot.process.pid)

    def run(self) -> int:
        """Start, watch and stop the children; returns the exit code for the service."""
        try:
            first, rest = self.slots[0], self.slots[1:]
            self._start(first)
            self._wait_served([first])
            for slot in rest:
                self._start(slot)
            self._wait_served(rest)
            if not self.stopping.is_set():
                log.info(
                    "web_processes_serving",
                    processes=len(self.slots),
                    host=self.settings.server.host,
                    port=self.settings.server.port,
                )
            self._watch()
            return 0
        except StartupError as exc:
            log.error("web_processes_failed", error=str(exc))
            return 1
        finally:
            self._stop_all()

    def _watch(self) -> None:
        """Restart what ends while the others serve; never gives up once the service served."""
        while not self.stopping.is_set():
            live = {s.process.sentinel: s for s in self.slots if s.process is not None}
            ended = multiprocessing.connection.wait(list(live), timeout=0.5)
            if self.stopping.is_set():
                return
            for slot in self.slots:
                if slot.process is not None and not slot.served and slot.ready is not None:
                    if slot.ready.is_set():
                        slot.served, slot.failed_starts = True, 0
                        log.info("web_process_serving", index=slot.index, pid=slot.process.pid)
                    elif (
                        not slot.killed
                        and time.monotonic() - slot.started_at > START_TIMEOUT_SECONDS
                    ):
                        # Hung on its way up (a database that accepts and never answers, say):
                        # ended here, so it is started again like one that failed.
                        log.warning(
                            "web_process_start_timed_out",
                            index=slot.index,
                            pid=slot.process.pid,
                            seconds=START_TIMEOUT_SECONDS,
                            why="did not serve in time after a restart; killing it",
                        )
                        slot.process.kill()
                        slot.killed = True
            for sentinel in ended:
                slot = live[sentinel]  # type: ignore[index]
                assert slot.process is not None
                # Its sentinel closes as it exits, a moment before it can be reaped.
                slot.process.join()
                code = slot.process.exitcode
                # Its counters stay in the sum; its start-time sample goes.
                multiprocess.mark_process_dead(slot.process.pid, path=self.metrics_dir)  # type: ignore[no-untyped-call]
                slot.process.close()
                slot.process = None
                slot.restarts += 1
                # A start that fails (the database is down, say) is retried ever more slowly.
                slot.failed_starts = 0 if slot.served else slot.failed_starts + 1
                delay = min(RESTART_DELAY_MAX_SECONDS, 2.0**slot.failed_starts - 1)
                slot.restart_at = time.monotonic() + delay
                log.warning(
                    "web_process_ended",
                    index=slot.index,
                    exit_code=code,
                    had_served=slot.served,
                    restarts=slot.restarts,
                    restart_in_seconds=delay,
                    why="ended on its own; starting it again (the others go on serving)",
                )
            for slot in self.slots:
                if slot.process is None and time.monotonic() >= slot.restart_at:
                    self._start(slot)

    def stop(self) -> None:
        self.stopping.set()

    def _stop_all(self) -> None:
        self.stopping.set()
        running = [s.process for s in self.slots if s.process is not None and s.process.is_alive()]
        for process in running:
            if process.pid is not None:
                try:
                    os.kill(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning(
                    "web_process_killed", pid=process.pid, why="still running after SIGTERM"
                )
                process.kill()
                process.join(5)
        self.sock.close()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)


def serve_processes(settings: Settings) -> int:
    """The `run` command with `server.processes` > 1: returns the exit code."""
    from extend_connector.store.migrate import migrate

    try:
        migrate(settings.store.url)
    except Exception as exc:  # the database is unreachable or refuses: say so once, not N times
        log.error("database_not_ready", error=str(exc), setting="store.database_url")
        return 1
    try:
        claim = claim_port(settings.server.port)
        sock = bind_port(settings.server.host, settings.server.port, listen=False)
    except StartupError as exc:
        log.error("web_processes_failed", error=str(exc))
        return 1
    supervisor = Supervisor(settings, sock, claimed=claim is not None)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: supervisor.stop())
    log.info(
        "web_processes_starting",
        processes=settings.server.processes,
        host=settings.server.host,
        port=settings.server.port,
    )
    try:
        return supervisor.run()
    finally:
        if claim is not None:
            claim.close()
