from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relay.config import ConfigError, config_from_mapping, load_config, parse_duration
from relay.daemon import load_all

WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _sub(**over: Any) -> dict[str, Any]:
    return {"name": "shop", "url": "https://shop.example.com/hooks", "secrets": [WHSEC], **over}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("5s", 5.0), ("30m", 1800.0), ("2h", 7200.0), ("3d", 259200.0), (10, 10.0), ("1.5s", 1.5)],
)
def test_durations_parse(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5 weeks", "-1s", -3, "", True, "s"])
def test_bad_durations_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_defaults_validate() -> None:
    config = config_from_mapping({})
    assert config.store.synchronous == "FULL"
    assert config.server.port == 8080
    assert config.sources == []


def test_unknown_keys_are_named() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"server": {"listen": "127.0.0.1:1", "lisen": "x"}, "subscribers": [_sub(urll="x")]})
    problems = info.value.problems
    assert "server.lisen: unknown key" in problems
    assert "subscribers[shop].urll: unknown key" in problems


def test_problems_inside_sources_name_the_source_and_key() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"sources": [{"name": "hub", "kind": "json-push", "auth": {"type": "bearer"}}]})
    assert any(p.startswith("sources[hub].auth") and "tokens" in p for p in info.value.problems)


def test_unknown_source_kind_is_reported() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"sources": [{"name": "x", "kind": "carrier-pigeon"}]})
    assert any("sources[x]" in p and "kind" in p.lower() for p in info.value.problems)


def test_env_interpolation_and_defaults() -> None:
    config = config_from_mapping(
        {
            "server": {"listen": "${HOST:-127.0.0.1}:${PORT}"},
            "sources": [{"name": "hub", "kind": "json-push", "auth": {"type": "bearer", "tokens": ["${TOKEN}"]}}],
        },
        env={"PORT": "9000", "TOKEN": "t0k"},
    )
    assert config.server.listen == "127.0.0.1:9000"
    auth = config.sources[0].auth  # type: ignore[union-attr]
    assert auth.all_tokens == ["t0k"]


def test_missing_env_variable_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"server": {"listen": "127.0.0.1:${NOPE_PORT}"}}, env={})
    assert info.value.problems == ["server.listen: environment variable NOPE_PORT is not set"]


def test_secret_files_and_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "admin-tokens").write_text("tok-a\n\ntok-b\n")
    (creds / "shop-secret").write_text(WHSEC + "\n")
    config = config_from_mapping(
        {
            "admin": {"tokens_file": "admin-tokens"},
            "sources": [
                {"name": "ion", "kind": "ion-ims", "auth": {"type": "basic", "username": "ion", "password_file": "pw"}}
            ],
            "subscribers": [{"name": "shop", "url": "https://shop.example.com/h", "secrets_file": "shop-secret"}],
        },
        base_dir=tmp_path,
        env={"CREDENTIALS_DIRECTORY": str(creds)},
    )
    assert config.admin.tokens == ["tok-a", "tok-b"]
    assert config.sources[0].auth.password == "s3cret"  # type: ignore[union-attr]
    assert config.subscribers[0].secrets == [WHSEC]


def test_missing_secret_file_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"admin": {"tokens_file": "nope"}}, base_dir=tmp_path, env={})
    assert info.value.problems[0].startswith("admin.tokens_file: cannot read secret file")


def test_env_overrides_nested_keys_and_list_items() -> None:
    config = config_from_mapping(
        {"subscribers": [_sub()]},
        env={
            "RELAY_SERVER__LISTEN": "0.0.0.0:9999",
            "RELAY_STORE__SYNCHRONOUS": "NORMAL",
            "RELAY_SUBSCRIBERS__0__MAX_IN_FLIGHT": "4",
            "RELAY_CONFIG": "/ignored.yaml",
        },
    )
    assert config.server.listen == "0.0.0.0:9999"
    assert config.store.synchronous == "NORMAL"
    assert config.subscribers[0].max_in_flight == 4


def test_subscriber_durations_and_private_guard() -> None:
    config = config_from_mapping(
        {"subscribers": [_sub(timeout="2s", retry={"schedule": ["1s", "5m"], "max_age": "1h"})]}
    )
    sub = config.subscribers[0]
    assert (sub.timeout_s, sub.retry.schedule_s, sub.retry.max_age_s) == (2.0, [1.0, 300.0], 3600.0)
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"subscribers": [_sub(url="http://127.0.0.1:9/h")]})
    assert "url refused" in info.value.problems[0]
    allowed = config_from_mapping({"subscribers": [_sub(url="http://127.0.0.1:9/h", allow_private_network=True)]})
    assert allowed.subscribers[0].allow_private_network


def test_bad_webhook_secret_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"subscribers": [_sub(secrets=["not-a-secret-value"])]})
    text = "\n".join(info.value.problems)
    assert "subscribers[shop].secrets" in text
    assert "not-a-secret-value" not in text


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="used twice"):
        config_from_mapping({"subscribers": [_sub(), _sub()]})


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  listen: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[0].startswith(f"{path}:")


def test_example_config_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("HUB_TOKEN", "x")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(repo / "deploy" / "example-credentials"))
    config, _ = load_all(repo / "config.example.yaml")
    assert {s.kind for s in config.sources} >= {"ion-ims", "json-push", "x3", "sxe"}


# Values a `${VAR:-}` or a stray character leaves behind: empty, ASCII blanks, and Unicode ones that
# str.split()/strip() treat as whitespace (U+00A0, U+2003, the \x1c file separator).
BLANK_SECRETS = ["", "   ", "\t", "\u00a0", "\u2003", "\x1c"]


def _auth_source(auth: dict[str, Any], kind: str = "json-push") -> dict[str, Any]:
    return {"sources": [{"name": "hub", "kind": kind, "auth": auth}]}


@pytest.mark.parametrize("blank", BLANK_SECRETS)
@pytest.mark.parametrize(
    ("data", "where"),
    [
        (lambda v: {"admin": {"tokens": ["adm-1", v]}}, "admin.tokens[1]"),
        (lambda v: _auth_source({"type": "bearer", "tokens": [v]}), "sources[hub].auth.tokens[0]"),
        (lambda v: _auth_source({"type": "bearer", "token": v}), "sources[hub].auth.token"),
        (lambda v: _auth_source({"type": "api-key", "keys": ["k-1", v]}), "sources[hub].auth.keys[1]"),
        (
            lambda v: _auth_source({"type": "basic", "username": "ion", "password": v}, "ion-ims"),
            "sources[hub].auth.password",
        ),
        (
            lambda v: _auth_source({"type": "basic", "username": v, "password": "pw"}, "ion-ims"),
            "sources[hub].auth.username",
        ),
        (lambda v: _auth_source({"type": "standard-webhooks", "secret": v}), "sources[hub].auth.secret"),
        (lambda v: _auth_source({"type": "standard-webhooks", "secrets": [v]}), "sources[hub].auth.secrets[0]"),
    ],
)
def test_blank_credentials_are_refused_naming_the_key(data: Callable[[str], Any], where: str, blank: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data(blank), env={})
    assert [p for p in info.value.problems if p.startswith(f"{where}: ")], info.value.problems


def test_an_unset_admin_token_variable_is_refused_not_accepted_as_empty() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"admin": {"tokens": ["${ADMIN_TOKEN:-}"]}}, env={})
    assert info.value.problems == ["admin.tokens[0]: must not be empty or only whitespace"]


@pytest.mark.parametrize(
    "outbound",
    [
        {"type": "bearer", "token": ""},
        {
            "type": "oauth2-client-credentials",
            "token_url": "https://x3.example.com/t",
            "client_id": "c",
            "client_secret": "",
        },
        {"type": "connected-app", "client_id": "c", "client_secret": " ", "user": "u"},
        {"type": "basic", "username": "admin", "password": "\u00a0"},
    ],
)
def test_blank_outbound_secrets_are_refused(outbound: dict[str, Any]) -> None:
    source = {
        "name": "x3",
        "kind": "x3",
        "base_url": "https://x3.example.com",
        "folder": "F",
        "auth": outbound,
        "resources": [{"class": "BPCUSTOMER", "channel": "customer/synced"}],
    }
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"sources": [source]}, env={})
    assert any(p.startswith("sources[x3].auth.") and "empty or only whitespace" in p for p in info.value.problems)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (" tok-1", "must not start or end with a space or tab"),
        ("tok-1\t", "must not start or end with a space or tab"),
        ("tok\n1", "must not contain control characters"),
        ("tok\x001", "must not contain control characters"),
    ],
)
def test_header_tokens_that_no_request_can_carry_are_refused(token: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"admin": {"tokens": [token]}}, env={})
    assert info.value.problems == [f"admin.tokens[0]: {message}"]


def test_credential_problems_never_show_the_value() -> None:
    secret_looking = " hunter2-secret"
    with pytest.raises(ConfigError) as info:
        config_from_mapping(_auth_source({"type": "bearer", "tokens": [secret_looking]}), env={})
    assert "hunter2" not in "\n".join(info.value.problems)


def test_blank_lines_of_a_tokens_file_are_not_tokens(tmp_path: Path) -> None:
    # A tokens file of blank lines gives no admin token (the admin API answers 401 to everyone), never "".
    (tmp_path / "admin-tokens").write_text("\n   \n\u00a0\n")
    config = config_from_mapping({"admin": {"tokens_file": "admin-tokens"}}, base_dir=tmp_path, env={})
    assert config.admin.tokens == []
    (tmp_path / "hub-tokens").write_text("\n\u2003\n")
    with pytest.raises(ConfigError) as info:
        config_from_mapping(_auth_source({"type": "bearer", "tokens_file": "hub-tokens"}), base_dir=tmp_path, env={})
    assert any(p.startswith("sources[hub].auth") and "tokens" in p for p in info.value.problems)
