"""The log pipeline masks secrets and personal data whatever a caller passes (issue #12, defect
6)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from extend_connector.logs import reset_logging
from extend_connector.redact import redact_text, redact_url, redact_value
from extend_connector.service import configure_logging


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    factory = logging.getLogRecordFactory()
    configure_logging()
    try:
        yield out
    finally:
        reset_logging()
        logging.setLogRecordFactory(factory)


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_secret_and_personal_keys_are_masked_in_structured_logs(logged: io.StringIO) -> None:
    structlog.get_logger("t").warning(
        "order_failed",
        shop_ref="R-1",
        shop_payload={"email": "a@b.se", "lines": []},
        customer={"firstName": "Anna", "phone": "+46701234567", "customerNumber": "C1"},
        api_token="tok-123",
        url="postgres://app:pw-123@db.internal/shop",
        attempts=[{"password": "pw-456"}],
    )
    (line,) = _lines(logged)
    text = json.dumps(line)
    for value in ("a@b.se", "Anna", "+46701234567", "tok-123", "pw-123", "pw-456"):
        assert value not in text
    assert line["shop_ref"] == "R-1"
    assert line["customer"] == {"firstName": "***", "phone": "***", "customerNumber": "C1"}
    assert line["url"] == "postgres://app:***@db.internal/shop"
    assert line["shop_payload"] == "***"


def test_a_logged_exception_keeps_its_traceback_without_the_password(logged: io.StringIO) -> None:
    try:
        raise ConnectionError("could not reach postgresql://app:pw-123@db.internal:5432/shop")
    except ConnectionError:
        structlog.get_logger("t").exception("worker_crashed")
    (line,) = _lines(logged)
    assert "ConnectionError" in str(line["exception"])
    assert "pw-123" not in json.dumps(line) and "app:***@db.internal" in str(line["exception"])


def test_stdlib_records_are_masked_too(
    logged: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    # uvicorn, DBOS and SQLAlchemy log through the standard library, not structlog.
    with caplog.at_level(logging.ERROR):
        try:
            raise RuntimeError("connect to postgresql://app:pw-123@db.internal/shop failed")
        except RuntimeError:
            logging.getLogger("dbos").exception(
                "Workflow failed for %s", "postgres://u:pw-456@h/db"
            )
    (record,) = [r for r in caplog.records if r.name == "dbos"]
    assert "pw-456" not in record.getMessage()
    assert "pw-123" not in caplog.text and "pw-456" not in caplog.text
    assert "RuntimeError" in caplog.text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:secret@db.internal/shop", "postgresql://app:***@db.internal/shop"),
        (
            "postgresql+psycopg://app:p@ss@db/shop?sslmode=require",
            "postgresql+psycopg://app:***@db/shop?sslmode=require",
        ),
        ("https://user:pw@erp.example.com/api", "https://user:***@erp.example.com/api"),
        ("postgresql://app@db.internal/shop", "postgresql://app@db.internal/shop"),
        ("sqlite:///var/extend-connector.db", "sqlite:///var/extend-connector.db"),
        ("http://127.0.0.1:8765/api", "http://127.0.0.1:8765/api"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_and_values() -> None:
    assert (
        redact_text("host=db user=app password=s3cret dbname=shop")
        == "host=db user=app password=*** dbname=shop"
    )
    assert redact_value({"Authorization": "Bearer x", "items": ({"e_mail": "a@b"},), "n": 3}) == {
        "Authorization": "***",
        "items": ({"e_mail": "***"},),
        "n": 3,
    }
