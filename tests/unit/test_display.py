"""Text for terminals and logs: escapes from outside made visible, secrets in URLs masked."""

from __future__ import annotations

import pytest

from relay._display import mask_url, mask_urls_in, terminal_safe


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain [/] [bold]x[/bold] :smile:", "plain [/] [bold]x[/bold] :smile:"),
        ("clear \x1b[2J screen", "clear \\x1b[2J screen"),
        ("red \x1b[31m", "red \\x1b[31m"),
        ("csi \x9b31m", "csi \\x9b31m"),
        ("bell \x07 del \x7f nul \x00", "bell \\x07 del \\x7f nul \\x00"),
        ("over\rwrite", "over\\x0dwrite"),
        ("two\nlines\tand tab", "two\\nlines\\tand tab"),
        ("bidi \u202egnp.exe", "bidi \\u202egnp.exe"),
        ("sep \u2028 \u2066x\u2069", "sep \\u2028 \\u2066x\\u2069"),
        ("Müller 日本 ✓", "Müller 日本 ✓"),
    ],
)
def test_terminal_safe_one_line(raw: str, shown: str) -> None:
    assert terminal_safe(raw) == shown


def test_terminal_safe_multiline_keeps_newlines_and_tabs_only() -> None:
    assert terminal_safe("<a>\n\t<b>\x1b[2J</b>\r\n</a>", multiline=True) == "<a>\n\t<b>\\x1b[2J</b>\\x0d\n</a>"


def test_terminal_safe_takes_any_value() -> None:
    assert terminal_safe(42) == "42"
    assert terminal_safe(["\x1b"]) == "['\\x1b']"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("sqlite:///var/lib/erp-relay/relay.db", "sqlite:///var/lib/erp-relay/relay.db"),
        (
            "postgresql://relay:s3cret@db.example.com:5432/relay?sslmode=require&sslpassword=secret",
            "postgresql://relay:***@db.example.com:5432/relay?sslmode=require&sslpassword=***",
        ),
        ("postgres://relay@db/relay", "postgres://***@db/relay"),
        (
            "https://x3.example.com:8124/api1?apikey=k&since=2026",
            "https://x3.example.com:8124/api1?apikey=***&since=2026",
        ),
        ("https://h/p?access_token=t;client_secret=s#frag", "https://h/p?access_token=***;client_secret=***#frag"),
        ("https://h/user@example.com", "https://h/user@example.com"),
        ("not a url", "not a url"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_urls_in_free_text_keeps_the_sentence() -> None:
    text = "GET https://u:pw@x3.example.com/api1?token=abc: HTTP 500 (see http://a:b@c/)."
    assert mask_urls_in(text) == "GET https://u:***@x3.example.com/api1?token=***: HTTP 500 (see http://a:***@c/)."
