"""structlog set-up: JSON lines when stdout is not a terminal (journald), readable output on one."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, Literal, TextIO

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError

from relay._display import mask_urls_in, terminal_safe

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def _scrub(value: Any, clean: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, list | tuple):
        return [_scrub(v, clean) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v, clean) for k, v in value.items()}
    return value


def mask_secrets(logger: Any, name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Processor: mask passwords and secret query values of every URL in the event (tracebacks included)."""
    return {key: _scrub(value, mask_urls_in) for key, value in event_dict.items()}


_MULTI_LINE_KEYS = frozenset({"exception", "stack"})


def _multi_line_safe(text: str) -> str:
    return terminal_safe(text, multiline=True)


def visible_controls(logger: Any, name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Processor for console output: escape sequences from senders are shown, not executed by the terminal."""
    return {
        key: _scrub(value, _multi_line_safe if key in _MULTI_LINE_KEYS else terminal_safe)
        for key, value in event_dict.items()
    }


class _ClientErrorsAtInfo(logging.Filter):
    """aiohttp logs a request it cannot parse (a control byte in a header, a broken request line) at error level
    with a traceback, then answers 400 itself: the fault is the client's, so it becomes one info line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 400) < 500:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = f"{record.msg} (answered %s: %s)"
            # The class only: aiohttp's message quotes the offending header line, which may carry a credential.
            record.args = (*(record.args if isinstance(record.args, tuple) else ()), exc.code, type(exc).__name__)
            record.exc_info, record.exc_text = None, None
        return True


_CLIENT_ERRORS_FILTER = _ClientErrorsAtInfo()


def quiet_client_errors() -> None:
    """Log requests that aiohttp refuses before routing (4xx) at info, without a traceback (idempotent)."""
    server_log = logging.getLogger("aiohttp.server")
    if _CLIENT_ERRORS_FILTER not in server_log.filters:
        server_log.addFilter(_CLIENT_ERRORS_FILTER)


def configure_logging(
    level: Literal["debug", "info", "warning", "error"] = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog (and the stdlib loggers of aiohttp and friends) once per process.

    The daemon logs to stdout (journald); CLI commands log to stderr so that `--json` output stays clean.
    """
    stream = stream or sys.stdout
    json_output = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if json_output
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    # Tracebacks become text first so that secrets in them are masked like in any other value; JSON escapes
    # control characters itself, the console renderer writes strings as they are.
    scrubbers: list[Any] = [
        structlog.processors.format_exc_info,
        mask_secrets,
        *([] if json_output else [visible_controls]),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            *scrubbers,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # Library loggers (aiohttp, asyncio) go through the same renderer.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *scrubbers,
                renderer,
            ],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(_LEVELS[level], logging.INFO))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
