"""Text on its way to a terminal or a log: control characters made visible, secrets in URLs masked.

Event ids, reasons, bodies and error messages come from senders and ERP servers; printed raw, an escape
sequence in them would drive the operator's terminal. URLs in the configuration may carry passwords.
"""

from __future__ import annotations

import re

__all__ = ["mask_url", "mask_urls_in", "terminal_safe"]

# C0 and C1 controls, DEL, bidirectional overrides/isolates (they reorder what is shown) and the Unicode line
# and paragraph separators; newline and tab are kept only in multi-line text.
_UNSAFE = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE_ONE_LINE = re.compile(f"[{_UNSAFE}\t\n]")
_UNSAFE_MULTI_LINE = re.compile(f"[{_UNSAFE}]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code in (0x09, 0x0A):
        return "\\t" if code == 0x09 else "\\n"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(value: object, *, multiline: bool = False) -> str:
    """`str(value)` with every character that could drive a terminal shown as a visible escape (`\\x1b`).

    Args:
        value: anything; usually text that came from outside (a sender, an ERP server).
        multiline: keep newlines and tabs (bodies, tracebacks); otherwise they are escaped too, so one
            value stays on one line.

    Returns:
        Text that is safe to write to a terminal; printable characters (any script) are unchanged.
    """
    text = value if isinstance(value, str) else str(value)
    pattern = _UNSAFE_MULTI_LINE if multiline else _UNSAFE_ONE_LINE
    return pattern.sub(_visible, text)


# Query parameters whose value is a secret: `sslpassword`, `password`, `api_key`, `access_token`, `sig`, ….
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|key|sig|auth|cred|session", re.IGNORECASE)
_QUERY_PARAM = re.compile(r"([?&;])([^=&;#]*)=([^&;#]*)")
# A URL inside free text: scheme://, then anything up to whitespace or a quote/bracket that ends it.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+")


def mask_url(url: str) -> str:
    """`url` with its password (`user:***@`), a bare userinfo (`***@`) and secret query values masked.

    Query parameters are masked when their name looks like a secret (`password`, `sslpassword`, `token`,
    `api_key`, `secret`, `sig`, …); the scheme, host, port, path and other parameters stay readable.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = len(rest)
    for stop in "/?#":
        found = rest.find(stop)
        if found != -1:
            end = min(end, found)
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        authority = f"{user}:***@{host}" if colon else f"***@{host}"
    tail = _QUERY_PARAM.sub(
        lambda m: f"{m.group(1)}{m.group(2)}=***" if _SECRET_PARAM.search(m.group(2)) else m.group(),
        tail,
    )
    return scheme + sep + authority + tail


def mask_urls_in(text: str) -> str:
    """Every URL in free text (an error message, a traceback) passed through `mask_url`."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(_mask_match, text)


def _mask_match(match: re.Match[str]) -> str:
    # Punctuation that ends a sentence ("…/api1?token=x: HTTP 500") is not part of the URL.
    url = match.group().rstrip(".,:;!?")
    return mask_url(url) + match.group()[len(url) :]
