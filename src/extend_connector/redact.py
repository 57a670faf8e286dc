"""Keep secrets and personal data out of what the connector prints and logs.

`redact_url` and `redact_text` mask the password of every URL (`postgres://app:***@db/shop`);
`redact_value` also masks whole values under keys that name a secret or personal data
(tokens, passwords, e-mails, addresses, whole shop payloads). Used by `check`, configuration
errors and the log processors; failures shown to operators are not redacted on purpose.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, MutableMapping
from typing import Any

MASK = "***"

# The password of a URL's userinfo. Greedy up to the last `@` before the path, so a password
# holding a raw `@` is masked whole; over-masking an odd URL is the safe side.
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]*:)(?P<password>[^\s/]*)@"
)
# libpq key/value connection strings and query strings: `password=...`.
_KEY_PASSWORD = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd)\s*=\s*)(?P<password>[^\s&;,'\"]+)", re.IGNORECASE
)

# Key fragments (lower case, `_`/`-` removed) whose values are secrets or personal data.
_SECRET_KEYS = (
    "secret",
    "token",
    "password",
    "passwd",
    "authorization",
    "cookie",
    "apikey",
    "signature",
)
_PERSONAL_KEYS = (
    "email",
    "phone",
    "mobile",
    "address",
    "street",
    "zip",
    "postal",
    "firstname",
    "lastname",
    "fullname",
    "contactname",
    "payload",
    "body",
    "ssn",
    "orgnumber",
    "personalnumber",
)


def redact_url(url: str) -> str:
    """`scheme://user:password@host/...` -> `scheme://user:***@host/...`; anything else
    unchanged."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", url)


def redact_text(text: str) -> str:
    """Mask URL passwords and `password=` pairs anywhere in free text (messages, tracebacks)."""
    if "@" in text:
        text = redact_url(text)
    if "=" in text:
        text = _KEY_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)
    return text


def sensitive_key(key: object) -> bool:
    """Whether a value stored under `key` is a secret or personal data."""
    if not isinstance(key, str):
        return False
    norm = key.lower().replace("_", "").replace("-", "")
    return any(part in norm for part in _SECRET_KEYS) or any(
        part in norm for part in _PERSONAL_KEYS
    )


def redact_value(value: Any, *, depth: int = 0) -> Any:
    """`value` with sensitive keys masked and URL passwords removed, recursively (bounded)."""
    if isinstance(value, str):
        return redact_text(value)
    if depth > 8:
        return value
    if isinstance(value, Mapping):
        return {
            k: MASK if sensitive_key(k) else redact_value(v, depth=depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v, depth=depth + 1) for v in value)
    return value


# --- log pipeline -------------------------------------------------------------------------------


def structlog_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> dict[str, Any]:
    """A structlog processor: mask sensitive keys and URL passwords (after `format_exc_info`)."""
    return {k: MASK if sensitive_key(k) else redact_value(v) for k, v in event_dict.items()}


def install_stdlib_redaction() -> None:
    """Mask URL passwords in every standard-library log record (uvicorn, DBOS, SQLAlchemy, ...).

    A record factory rather than a handler filter: libraries install their own handlers after
    start-up (DBOS at launch, uvicorn when it starts), and a factory sees every record anyway.
    Installed once; records whose text needs no change keep their `args` (uvicorn's access
    formatter reads them).
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_extend_connector_redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if isinstance(record.msg, dict):
            return record  # a structlog event: `structlog_processor` masks it, key by key
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: leave it to the handler to report
            return record
        masked = redact_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact_text(_FORMATTER.formatException(record.exc_info))
        return record

    factory._extend_connector_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


_FORMATTER = logging.Formatter()
