"""Request header values as text.

aiohttp decodes header bytes as UTF-8 with `surrogateescape`, so a value with bytes that are not UTF-8 comes
as a str holding lone surrogates, which SQLite, orjson and the log renderer all refuse. A header whose value
ends up stored, logged or answered goes through one of these first.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["MalformedHeader", "header_for_record", "header_text"]


class MalformedHeader(ValueError):
    """A header value that is not UTF-8 text; the message names the header, never the value."""


def header_text(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header `name`, or None when the request has none.

    Raises:
        MalformedHeader: the value is not UTF-8 text (answer 400).
    """
    value = headers.get(name)
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedHeader(f"the {name} header is not UTF-8 text") from None
    return value


def header_for_record(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header `name` for a record or a log line: bytes that are not UTF-8 become `?`."""
    value = headers.get(name)
    if value is None:
        return None
    return value.encode("utf-8", "replace").decode("utf-8")
