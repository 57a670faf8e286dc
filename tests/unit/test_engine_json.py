"""`engine.to_json_value` gives exactly what DBOS's portable serializer would give back: the
outbox and step results depend on one representation of Decimal and datetime values."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from dbos import DBOSPortableJSONSerializer
from hypothesis import given
from hypothesis import strategies as st

from extend_connector.engine import to_json_value

PORTABLE = DBOSPortableJSONSerializer()

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5, minutes=-30))])),
    st.datetimes(),  # naive: DBOS reads it as UTC
    st.dates(),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
    ),
    max_leaves=20,
)


@given(values)
def test_same_as_dbos_portable_serialisation(value: Any) -> None:
    assert to_json_value(value) == json.loads(PORTABLE.serialize(value))


def test_the_representations_the_shop_sees() -> None:
    stamp = datetime(2025, 3, 1, 13, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=1)))
    assert to_json_value(
        {"amount": Decimal("1E+2"), "at": stamp, "day": date(2025, 3, 1), "n": [1, "ä"]}
    ) == {"amount": "100", "at": "2025-03-01T12:00:00.250Z", "day": "2025-03-01", "n": [1, "ä"]}
