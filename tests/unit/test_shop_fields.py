"""What a string or instant from the shop may be (api/fields.py, store/types.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from pydantic import BaseModel, ValidationError

from extend_connector.api.errors import ApiProblem
from extend_connector.api.fields import path_key, shop_ref_field, text, utc_representable
from extend_connector.store.types import DatetimeOutOfRange, UTCDateTime, to_utc


class _In(BaseModel):
    ref: str = shop_ref_field(20)
    line: str | None = text(10, None)
    note: str | None = text(10, None, multiline=True)


@pytest.mark.parametrize("ref", ["WEB-1", "a.b:c_d-1", "0", "x" * 20])
def test_safe_shop_refs(ref: str) -> None:
    assert _In(ref=ref).ref == ref


@pytest.mark.parametrize(
    "ref", ["", "../../x", "a/../../x", "c\nx", "-x", ".x", "a b", "x" * 21, "å", "a\x00"]
)
def test_unsafe_shop_refs(ref: str) -> None:
    with pytest.raises(ValidationError):
        _In(ref=ref)


@pytest.mark.parametrize(
    ("line", "note", "ok"),
    [
        ("Åsa Öberg", "a\nb\tc", True),
        ("a\x00", None, False),
        (None, "a\x00", False),
        ("a\nb", None, False),
        ("a\x7f", None, False),
        ("a\x85", None, False),
        ("x" * 11, None, False),
        (None, "\ud800", False),
    ],
)
def test_text_is_bounded_and_printable(line: str | None, note: str | None, ok: bool) -> None:
    if ok:
        _In(ref="r", line=line, note=note)
    else:
        with pytest.raises(ValidationError):
            _In(ref="r", line=line, note=note)


def test_path_keys() -> None:
    assert path_key("P-1 x", "productNumber") == "P-1 x"
    for bad in ("", "a\x00b", "a\nb", "x" * 65):
        with pytest.raises(ApiProblem) as caught:
            path_key(bad, "productNumber")
        assert (
            caught.value.status == 400 and caught.value.body.details[0]["field"] == "productNumber"
        )


def test_instants_at_the_ends_of_time() -> None:
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
    late = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14)))
    for value in (early, late):
        with pytest.raises(DatetimeOutOfRange):
            to_utc(value)
        with pytest.raises(ApiProblem) as caught:
            utc_representable(value, "changedSince")
        assert (
            caught.value.status == 422 and caught.value.body.details[0]["field"] == "changedSince"
        )
        with pytest.raises(DatetimeOutOfRange):
            UTCDateTime().process_bind_param(value, sa.create_engine("sqlite://").dialect)
    ok = datetime(1, 1, 1, tzinfo=UTC)
    assert utc_representable(ok, "changedSince") == ok
