"""One log stream (issue #15): every library's lines through the connector's formatter, JSON or
console by setting, per-request HTTP lines at DEBUG, one WARNING per Extend outage start and end,
and an order's reference on every line logged while its job runs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import structlog

from extend_connector.extend import errors as extend_errors
from extend_connector.flows.freshness import Reachability
from extend_connector.logs import configure_logging, reset_logging


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    factory = logging.getLogRecordFactory()
    levels = {n: logging.getLogger(n).level for n in ("", "dbos", "uvicorn.error")}
    try:
        yield stream
    finally:
        reset_logging()
        logging.setLogRecordFactory(factory)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


LIBRARIES = ("alembic.runtime.migration", "dbos", "uvicorn.error", "sqlalchemy.engine.Engine")


def test_every_library_line_is_a_json_line_with_time_level_and_logger(out: io.StringIO) -> None:
    configure_logging("INFO", fmt="json", stream=out)
    for name in LIBRARIES:
        logging.getLogger(name).warning("something from %s", name)
    structlog.get_logger("extend_connector.t").warning("ours", n=1)
    lines = _lines(out)
    assert [line["logger"] for line in lines] == [*LIBRARIES, "extend_connector.t"]
    for line in lines:
        assert line["level"] == "warning"
        datetime.fromisoformat(str(line["timestamp"]))
    assert lines[0]["event"] == "something from alembic.runtime.migration"
    assert lines[-1]["n"] == 1


def test_console_format_prints_readable_lines_not_json(out: io.StringIO) -> None:
    configure_logging("INFO", fmt="console", stream=out)
    logging.getLogger("dbos").warning("workflow recovered")
    structlog.get_logger("extend_connector.t").info("order_received", shop_ref="R-1")
    text = out.getvalue()
    assert "workflow recovered" in text and "order_received" in text and "shop_ref=R-1" in text
    for line in text.splitlines():
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)


def test_level_setting_filters_both_kinds_of_line(out: io.StringIO) -> None:
    configure_logging("WARNING", stream=out)
    logging.getLogger("uvicorn.error").info("Started server process")
    structlog.get_logger("extend_connector.t").info("quiet")
    structlog.get_logger("extend_connector.t").error("loud")
    assert [line["event"] for line in _lines(out)] == ["loud"]


def test_dbos_does_not_install_a_second_stream(out: io.StringIO) -> None:
    from dbos._logger import dbos_logger, init_logger

    configure_logging("INFO", stream=out)
    init_logger()  # what DBOS does at launch
    assert not any(isinstance(h, logging.StreamHandler) for h in dbos_logger.handlers)
    dbos_logger.warning("hello from dbos")
    assert [line["event"] for line in _lines(out)] == ["hello from dbos"]


def _http_request_line() -> None:
    logging.getLogger("httpx2").info(
        'HTTP Request: %s %s "%s %d %s"', "GET", "http://x/Products", "HTTP/1.1", 200, "OK"
    )


def test_per_request_http_lines_are_debug(out: io.StringIO) -> None:
    configure_logging("INFO", stream=out)
    _http_request_line()
    logging.getLogger("httpx2").warning("a real problem")
    assert [line["event"] for line in _lines(out)] == ["a real problem"]

    configure_logging("DEBUG", stream=out)
    _http_request_line()
    (line,) = [x for x in _lines(out) if str(x["event"]).startswith("HTTP Request")]
    assert line["level"] == "debug"


def test_lines_logged_inside_an_order_job_carry_its_references(out: io.StringIO) -> None:
    configure_logging("INFO", stream=out)
    with structlog.contextvars.bound_contextvars(shop_ref="R-7", order_number="100042"):
        structlog.get_logger("extend_connector.orders").info("order_created_in_extend")
        logging.getLogger("dbos").warning("step retried")
    logging.getLogger("dbos").warning("unrelated")
    first, second, third = _lines(out)
    for line in (first, second):
        assert (line["shop_ref"], line["order_number"]) == ("R-7", "100042")
    assert "shop_ref" not in third


def _error(kind: type[extend_errors.ExtendError], message: str) -> extend_errors.ExtendError:
    return kind(message, operation="get_order", method="GET", url="http://x/o/1")


def test_one_warning_when_extend_goes_down_and_one_when_it_answers_again(
    out: io.StringIO,
) -> None:
    configure_logging("INFO", stream=out)
    now = [datetime(2026, 1, 1, 12, 0, tzinfo=UTC)]
    r = Reachability(lambda: now[0])
    r.succeeded()
    for _ in range(3):
        r.failed(_error(extend_errors.TechnicalFailure, "503 from Extend"))
        now[0] += timedelta(seconds=10)
    now[0] += timedelta(seconds=30)
    r.succeeded()
    r.succeeded()
    r.failed(_error(extend_errors.NotFound, "no such order"))  # Extend answered: no outage
    lines = _lines(out)
    assert [(x["event"], x["level"]) for x in lines] == [
        ("extend_unreachable", "warning"),
        ("extend_reachable_again", "warning"),
    ]
    assert "503 from Extend" in str(lines[0]["error"])
    assert lines[1]["failed_calls"] == 3
    assert lines[1]["outage_seconds"] == 60.0


def test_structlog_event_with_a_url_password_is_still_masked(out: io.StringIO) -> None:
    # The stdlib redaction must leave structlog's event dicts to the structlog processor.
    configure_logging("INFO", stream=out)
    structlog.get_logger("t").warning("db_down", url="postgresql://app:pw-9@db/shop")
    (line,) = _lines(out)
    assert line["url"] == "postgresql://app:***@db/shop"


def test_a_thread_that_dies_is_logged_in_the_stream_with_its_name(out: io.StringIO) -> None:
    import threading

    before = threading.excepthook
    configure_logging("INFO", fmt="json", stream=out)

    def die() -> None:
        raise RuntimeError("terminating connection due to administrator command")

    thread = threading.Thread(target=die, name="queue-orders-submit")
    thread.start()
    thread.join()
    lines = _lines(out)
    assert len(lines) == 1
    assert lines[0]["level"] == "error"
    assert lines[0]["event"] == "thread_died: queue-orders-submit"
    assert "RuntimeError: terminating connection" in str(lines[0]["exception"])
    reset_logging()
    assert threading.excepthook is before


def test_an_exception_python_cannot_raise_is_logged_in_the_stream(out: io.StringIO) -> None:
    import gc
    import sys

    before = sys.unraisablehook
    configure_logging("INFO", fmt="json", stream=out)

    class Finaliser:
        def __del__(self) -> None:
            raise RuntimeError("commit failed while closing")

    Finaliser()
    gc.collect()
    lines = _lines(out)
    assert len(lines) == 1
    assert lines[0]["level"] == "error"
    assert str(lines[0]["event"]).startswith("exception_ignored: Exception ignored")
    assert "RuntimeError: commit failed while closing" in str(lines[0]["exception"])
    reset_logging()
    assert sys.unraisablehook is before
