from __future__ import annotations

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
