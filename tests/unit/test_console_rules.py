"""Pure rules of the console: cookie flags, CSRF comparison, session expiry, rates, token matching."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.auth.inbound import matching_token
from relay.config import ConfigError, config_from_mapping
from relay.console.sessions import SessionStore, cookie_is_secure, same_token
from relay.ops import RateWindow

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("mode", "tls", "forwarded", "secure"),
    [
        ("auto", False, None, False),
        ("auto", True, None, True),
        ("auto", False, "https", True),
        ("auto", False, "HTTPS, http", True),
        ("auto", False, "http", False),
        ("true", False, None, True),
        ("false", True, "https", False),
    ],
)
def test_secure_cookie_flag(mode: str, tls: bool, forwarded: str | None, secure: bool) -> None:
    assert cookie_is_secure(mode, tls=tls, forwarded_proto=forwarded) is secure


@pytest.mark.parametrize(
    ("given", "expected", "same"),
    [("abc", "abc", True), ("abd", "abc", False), (None, "abc", False), ("", "", False), ("abc\udcff", "abc", False)],
)
def test_csrf_tokens_compare_exactly(given: str | None, expected: str, same: bool) -> None:
    assert same_token(given, expected) is same


def test_sessions_expire_at_their_fixed_end_and_sign_out_ends_them() -> None:
    store = SessionStore(ttl_s=3600)
    s = store.create("ops", "admin", T0)
    assert store.get(s.id, T0 + timedelta(minutes=59)) is s
    assert store.get(s.id, T0 + timedelta(hours=1)) is None
    v = store.create("viewer#1", "viewer", T0)
    assert not v.can_write
    assert s.can_write
    store.end(v.id)
    assert store.get(v.id, T0) is None
    assert store.get("made-up", T0) is None
    assert s.csrf != v.csrf


@pytest.mark.parametrize(
    ("samples", "rates"),
    [
        ([(0.0, 0, 0)], (None, None)),
        ([(0.0, 0, 0), (60.0, 120, 30)], (120.0, 30.0)),
        ([(0.0, 0, 0), (0.5, 10, 10)], (None, None)),  # under a second: no rate yet
        ([(0.0, 0, 0), (300.0, 300, 0), (600.0, 600, 0)], (60.0, 0.0)),  # the window slides
        ([(0.0, 500, 500), (60.0, 10, 10), (120.0, 70, 10)], (60.0, 0.0)),  # counters reset: start again
    ],
)
def test_rates_per_minute_over_a_sliding_window(
    samples: list[tuple[float, float, float]], rates: tuple[float | None, float | None]
) -> None:
    window = RateWindow(window_s=300)
    result: tuple[float | None, float | None] = (None, None)
    for now, first, second in samples:
        result = window.observe(now, first, second)
    assert result == rates


@pytest.mark.parametrize(
    ("given", "index"),
    [("tok-a", 0), ("tok-b", 1), (" tok-b\t", 1), ("tok-c", None), ("", None), ("tok-a ", 0), ("TOK-A", None)],
)
def test_a_typed_token_is_matched_like_a_bearer_token(given: str, index: int | None) -> None:
    assert matching_token(given, ["tok-a", "tok-b", ""]) == index


def test_viewer_tokens_come_from_a_file_and_tokens_may_be_named(tmp_path: Path) -> None:
    (tmp_path / "viewers").write_text("view-1\n\nview-2\n")
    config = config_from_mapping(
        {"admin": {"tokens": ["adm-1", {"name": "alice", "token": "adm-2"}], "viewer_tokens_file": "viewers"}},
        base_dir=tmp_path,
        env={},
    )
    assert config.admin.token_values == ["adm-1", "adm-2"]
    assert config.admin.identities() == [
        ("admin#1", "adm-1", "admin"),
        ("alice", "adm-2", "admin"),
        ("viewer#1", "view-1", "viewer"),
        ("viewer#2", "view-2", "viewer"),
    ]


@pytest.mark.parametrize(
    ("admin", "problem"),
    [
        ({"tokens": [{"name": "alice"}]}, "admin.tokens[alice]: token: Field required"),
        ({"tokens": [{"name": "a", "token": "t", "role": "x"}]}, "admin.tokens[a]: role: unknown key"),
        ({"tokens": [7]}, "admin.tokens[0]: expected a token, or {name, token}"),
        (
            {"tokens": ["t1"], "viewer_tokens": [{"name": "admin#1", "token": "t2"}]},
            "admin: token name 'admin#1' is used twice",
        ),
    ],
)
def test_bad_token_entries_are_named(admin: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"admin": admin}, env={})
    assert info.value.problems == [problem]
