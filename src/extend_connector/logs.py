"""One log stream for the whole process: the connector's structlog lines and every library's
standard-library records (alembic, DBOS, httpx2, uvicorn, SQLAlchemy) through one formatter.

`configure_logging(level, fmt)` installs structlog's `ProcessorFormatter` on one handler of the
root logger: structlog events and foreign records get the same keys (`timestamp`, `level`,
`logger`, `event`, bound context such as an order's `shop_ref`) and the same redaction
(`extend_connector.redact`), rendered as JSON lines or aligned console lines. Libraries that
install handlers of their own (DBOS at launch, uvicorn) are made to propagate to the root instead.
Per-request lines of the HTTP client (`HTTP Request: ...`, INFO in httpx2) are demoted to DEBUG.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, Literal, TextIO

import structlog

from extend_connector.redact import install_stdlib_redaction, structlog_processor

Format = Literal["json", "console"]

HANDLER_NAME = "extend_connector"
# Libraries whose own handlers would print a second, differently formatted stream.
LIBRARY_LOGGERS = (
    "alembic",
    "dbos",
    "httpx",
    "httpx2",
    "sqlalchemy",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
)
# Loggers whose INFO lines are one per HTTP request: DEBUG material.
_PER_REQUEST_LOGGERS = ("httpx", "httpx2")


class DemotePerRequestLines(logging.Filter):
    """An HTTP client's per-request INFO line becomes a DEBUG line (dropped unless DEBUG is on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).getEffectiveLevel() <= logging.DEBUG


_DEMOTE = DemotePerRequestLines()


def _renderer(fmt: Format, stream: TextIO) -> Any:
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    isatty = getattr(stream, "isatty", None)
    return structlog.dev.ConsoleRenderer(colors=bool(isatty and isatty()))


def configure_logging(
    level: str = "INFO", *, fmt: Format = "json", stream: TextIO | None = None
) -> None:
    """Send structlog and every standard-library logger to `stream` (stdout) at `level`.

    Idempotent: a second call replaces the handler of the first. Secrets and personal data are
    masked on the way out: values under secret or personal keys, URL passwords in any text,
    tracebacks included.
    """
    if fmt not in ("json", "console"):
        raise ValueError(f"log format must be 'json' or 'console', not {fmt!r}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    out = stream or sys.stdout
    install_stdlib_redaction()
    # Both kinds of line get these; structlog's own lines get them before the formatter.
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text here, so the redaction below sees them too.
            structlog.processors.format_exc_info,
            structlog_processor,
            _renderer(fmt, out),
        ],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        for own in list(library.handlers):
            library.removeHandler(own)
        library.propagate = True
    # DBOS adds its console handler at launch unless the logger has one: give it one that
    # prints nothing, so its records reach the root handler only.
    logging.getLogger("dbos").addHandler(logging.NullHandler())
    for name in _PER_REQUEST_LOGGERS:
        lg = logging.getLogger(name)
        if _DEMOTE not in lg.filters:
            lg.addFilter(_DEMOTE)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    if threading.excepthook is not _log_thread_death:
        _previous_hooks["thread"] = threading.excepthook
        threading.excepthook = _log_thread_death
    if sys.unraisablehook is not _log_unraisable:
        _previous_hooks["unraisable"] = sys.unraisablehook
        sys.unraisablehook = _log_unraisable


# The hooks configure_logging replaced, put back by reset_logging.
_previous_hooks: dict[str, Any] = {}


def _log_unraisable(args: Any) -> None:
    """An exception Python cannot raise (in a finaliser, a generator closed by the garbage
    collector) is logged in the stream with the object it came from, not printed bare."""
    logging.getLogger("extend_connector.unraisable").error(
        "exception_ignored: %s in %r",
        args.err_msg or "Exception ignored",
        args.object,
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
    )


def _log_thread_death(args: threading.ExceptHookArgs) -> None:
    """A thread that dies of an exception is logged in the stream, naming the thread (Python
    would print a bare traceback to stderr, outside the log and without its time)."""
    if args.exc_type is SystemExit:
        return
    logging.getLogger("extend_connector.threads").error(
        "thread_died: %s",
        args.thread.name if args.thread is not None else "?",
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
    )


def reset_logging() -> None:
    """Undo `configure_logging` (tests): structlog's defaults, no connector handler."""
    structlog.reset_defaults()
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    for name in _PER_REQUEST_LOGGERS:
        logging.getLogger(name).removeFilter(_DEMOTE)
    if threading.excepthook is _log_thread_death:
        threading.excepthook = _previous_hooks.pop("thread", threading.__excepthook__)
    if sys.unraisablehook is _log_unraisable:
        sys.unraisablehook = _previous_hooks.pop("unraisable", sys.__unraisablehook__)


__all__ = ["Format", "configure_logging", "reset_logging"]
