"""What a string from the shop may be, for every `/v1` route: bounded, printable, safe references.

Every string field of a request body has a maximum length (the column or Extend field it ends
in) and a pattern that forbids control characters (C0, DEL, C1; free text may keep tab and line
breaks): PostgreSQL refuses NUL, and a newline in a name or a reference is never meant. The
pattern also refuses lone surrogates (not Unicode text). Shop references (`shopRef`,
`shopCustomerRef`) are restricted further to `SHOP_REF_PATTERN`: letters, digits and `._:-`,
starting with a letter or digit, so they are safe in a URL path, a log line and a job id.
Path parameters get the same checks by hand (`path_key`) and a 400 naming the parameter.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from extend_connector.api.errors import ApiProblem
from extend_connector.store.types import DatetimeOutOfRange, to_utc

PRINTABLE_PATTERN = r"^[^\x00-\x1F\x7F-\x9F]*$"
MULTILINE_PATTERN = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*$"
SHOP_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
MAX_KEY = 64  # product, customer and warehouse keys (the columns are VARCHAR(64))


def text(
    max_length: int,
    default: Any = ...,
    *,
    min_length: int | None = None,
    multiline: bool = False,
    **kwargs: Any,
) -> Any:
    """A bounded string without control characters (`multiline`: tab and line breaks allowed)."""
    return Field(
        default,
        min_length=min_length,
        max_length=max_length,
        pattern=MULTILINE_PATTERN if multiline else PRINTABLE_PATTERN,
        **kwargs,
    )


def shop_ref_field(max_length: int, default: Any = ..., **kwargs: Any) -> Any:
    """A shop reference: 1-`max_length` of letters, digits and `._:-`, starting with a letter or
    digit."""
    return Field(default, min_length=1, max_length=max_length, pattern=SHOP_REF_PATTERN, **kwargs)


def utc_representable(value: datetime | None, field: str) -> datetime | None:
    """Refuse (422, naming `field`) an instant that has no UTC form, e.g.
    0001-01-01T00:00:00+14:00."""
    if value is None or value.tzinfo is None:
        return value
    try:
        to_utc(value)
    except DatetimeOutOfRange as exc:
        raise ApiProblem(
            422,
            "invalid_parameter",
            f"`{field}`: {exc}",
            [{"field": field, "message": "an instant between the years 1 and 9999 in UTC"}],
        ) from exc
    return value


def path_key(value: str, name: str, max_length: int = MAX_KEY) -> str:
    """A key from the URL path: 1-`max_length` printable characters, else a 400 naming it."""
    if not value or len(value) > max_length or not value.isprintable():
        raise ApiProblem(
            400,
            "invalid_parameter",
            f"`{name}` must be 1-{max_length} printable characters",
            [{"field": name, "message": f"1-{max_length} printable characters"}],
        )
    return value


class AddressIn(BaseModel):
    """A postal address as the shop sends it (orders and customers alike)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    name: str = text(200, min_length=1)
    address_line1: str = text(200, min_length=1, alias="addressLine1")
    address_line2: str | None = text(200, None, alias="addressLine2")
    zip_code: str = text(20, min_length=1)
    city: str = text(100, min_length=1)
    country_code: str = Field("SE", min_length=2, max_length=2, pattern=r"^[A-Za-z]{2}$")
    care_of: str | None = text(200, None)
    phone: str | None = text(64, None)
    email: str | None = text(320, None)
