"""Database errors never carry the shop's personal data into logs (issue #12, defect 6).

SQLAlchemy renders a failed statement's bound parameters into the exception text, so a
traceback of a failed order insert printed the whole `shop_payload` (names, e-mail,
addresses). The engine hides them; the statement itself is still shown.
"""

from __future__ import annotations

import io
import json
import logging
import traceback
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
import structlog

from extend_connector.logs import reset_logging
from extend_connector.service import configure_logging
from extend_connector.store import Database
from extend_connector.store.models import OrderRow

EMAIL = "anna@ex.se"
STREET = "Storgatan 12"
# The e-mail first: psycopg's parameter repr is cut after a few dozen characters.
PAYLOAD = {
    "email": EMAIL,
    "shopRef": "R-1",
    "customer": {"firstName": "Anna", "lastName": "Svensson"},
    "deliveryAddress": {"street": STREET, "city": "Uppsala"},
    "lines": [{"sku": "P1", "quantity": 1}],
}


def _order(ref: str) -> OrderRow:
    now = datetime.now(UTC)
    return OrderRow(
        shop_ref=ref,
        status="Received",
        shop_payload=PAYLOAD,
        created_at=now,
        updated_at=now,
        submit_attempts=0,
    )


def _failed_insert(db: Database) -> BaseException:
    with db.write() as session:
        session.add(_order("R-1"))
    with pytest.raises(sa.exc.IntegrityError) as info, db.write() as session:
        session.add(_order("R-1"))  # the same shop reference twice, as two racing intakes do
    return info.value


def test_a_failed_order_insert_does_not_show_the_payload(migrated_url: str) -> None:
    db = Database(migrated_url)
    try:
        error = _failed_insert(db)
    finally:
        db.dispose()
    text = "".join(traceback.format_exception(error))
    assert "INSERT INTO orders" in text  # still says what failed
    assert EMAIL not in text
    assert STREET not in text and "Svensson" not in text


def test_the_logged_traceback_of_a_failed_insert_does_not_show_the_payload(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    factory = logging.getLogRecordFactory()
    db = Database(migrated_url)
    try:
        error = _failed_insert(db)
        configure_logging()
        try:
            raise error
        except sa.exc.IntegrityError:
            structlog.get_logger("test").exception("order_not_stored", shop_ref="R-1")
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    finally:
        db.dispose()
        reset_logging()
        logging.setLogRecordFactory(factory)
    line = json.loads(out.getvalue().strip().splitlines()[-1])
    assert "IntegrityError" in line["exception"]
    assert "IntegrityError" in caplog.text  # uvicorn's record, through the standard library
    for text in (out.getvalue(), err.getvalue(), caplog.text):
        assert EMAIL not in text and STREET not in text
