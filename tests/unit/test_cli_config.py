"""Where the CLI finds its configuration, and loading one without its secrets for read-only commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.cli import find_config
from relay.config import UNRESOLVED_SECRET, ConfigError, config_from_mapping
from relay.signing import parse_secret


@pytest.mark.parametrize(
    ("given", "env", "etc_exists", "expected"),
    [
        ("a.yaml", {"RELAY_CONFIG": "b.yaml"}, True, "a.yaml"),  # -c wins
        (None, {"RELAY_CONFIG": "b.yaml"}, True, "b.yaml"),  # then $RELAY_CONFIG
        (None, {"RELAY_CONFIG": ""}, True, "ETC"),  # set but empty: as if unset
        (None, {}, True, "ETC"),  # then /etc/erp-relay/relay.yaml
        (None, {}, False, None),  # none: an error naming both
    ],
)
def test_find_config(
    tmp_path: Path, given: str | None, env: dict[str, str], etc_exists: bool, expected: str | None
) -> None:
    etc = tmp_path / "relay.yaml"
    if etc_exists:
        etc.write_text("{}")
    if expected is None:
        with pytest.raises(ConfigError) as err:
            find_config(None, env, default=etc)
        assert err.value.problems == [
            f"no configuration: $RELAY_CONFIG is not set and {etc} does not exist (give -c FILE)"
        ]
        return
    found = find_config(Path(given) if given else None, env, default=etc)
    assert found == (etc if expected == "ETC" else Path(expected))


RAW = {
    "store": {"url": "sqlite:///${RELAY_TEST_DIR:-/tmp}/relay.db"},
    "admin": {"tokens": ["${ADMIN_TOKEN}"]},
    "sources": [{"name": "hub", "kind": "json-push", "auth": {"type": "bearer", "tokens_file": "gone.txt"}}],
    "subscribers": [{"name": "s", "url": "https://hooks.example.com/x", "secrets_file": "gone-whsec"}],
}


def test_without_secrets_unreadable_files_and_unset_variables_are_placeholders(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_mapping(RAW, base_dir=tmp_path, env={})
    assert any("ADMIN_TOKEN is not set" in p for p in err.value.problems)
    assert any("cannot read secret file" in p for p in err.value.problems)

    config = config_from_mapping(RAW, base_dir=tmp_path, env={}, secrets=False)
    assert config.admin.tokens == [UNRESOLVED_SECRET]
    assert config.subscribers[0].secrets == [UNRESOLVED_SECRET]
    assert parse_secret(UNRESOLVED_SECRET) == bytes(24)  # never a key anyone chose
    assert config.store.url == "sqlite:////tmp/relay.db"


def test_without_secrets_the_store_location_is_still_required(tmp_path: Path) -> None:
    raw = {**RAW, "store": {"url": "sqlite:///${STATE_DIR}/relay.db"}}
    with pytest.raises(ConfigError) as err:
        config_from_mapping(raw, base_dir=tmp_path, env={}, secrets=False)
    assert err.value.problems == ["store.url: environment variable STATE_DIR is not set"]
