"""Derived-event rules: the edge policy, deterministic ids, and expressions refused at config load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import base_config

from relay.config import ConfigError, config_from_mapping
from relay.rules import decide, derived_event_id, rule_problems
from relay.rules.cel import CelError, compile_condition
from relay.spec import builtin_spec_paths, load_specs


@pytest.mark.parametrize(
    ("active", "fires", "clears", "expected"),
    [
        (False, False, False, "stay"),
        (False, True, False, "fire"),
        (False, True, None, "fire"),
        (False, None, None, "stay"),  # not evaluable: the rule does not move
        (True, True, False, "stay"),  # still low: no second alert
        (True, False, False, "stay"),  # hysteresis band: neither low nor restored
        (True, False, True, "clear"),
        (True, None, None, "stay"),
        (False, False, True, "stay"),  # restored while never fired: nothing to clear
    ],
)
def test_decide(active: bool, fires: bool | None, clears: bool | None, expected: str) -> None:
    assert decide(active, fires, clears) == expected


def test_derived_ids_are_the_rule_and_trigger_and_stay_within_the_id_limit() -> None:
    assert derived_event_id("low-stock", "inv-9") == "low-stock.inv-9"
    long_id = derived_event_id("low-stock", "x" * 256)
    assert long_id == derived_event_id("low-stock", "x" * 256)
    assert len(long_id) <= 256
    assert long_id.startswith("low-stock.sha256-")


@pytest.mark.parametrize(
    ("expression", "available", "expected"),
    [
        ("data.available <= 10", 9, True),
        ("data.available <= 10", 10.0, True),
        ("data.available <= 10", 11, False),
        ("data.available <= data.reorderPoint", 4, True),
        ("has(data.available) && data.available > 20", 25, True),
    ],
)
def test_conditions_evaluate_over_the_event(expression: str, available: float, expected: bool) -> None:
    variables = {"data": {"available": available, "reorderPoint": 5}, "event": {}, "channel": "c", "key": "k"}
    assert compile_condition(expression).holds(variables) is expected


def test_a_condition_over_a_missing_field_is_not_evaluable() -> None:
    assert compile_condition("data.available <= 10").holds({"data": {}, "event": {}, "channel": "", "key": ""}) is None


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("data.available <=", "Syntax error"),
        ("stock.available <= 10", "undeclared reference to 'stock"),
        ("channel + 1", "no matching overload"),
        ("key", "not a condition"),
        ("  ", "empty"),
    ],
)
def test_bad_expressions_are_refused(expression: str, problem: str) -> None:
    with pytest.raises(CelError, match=problem):
        compile_condition(expression)


def _rule(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "low-stock",
        "on": "inventory/synced",
        "when": "data.available <= 10",
        "clear_when": "data.available > 20",
        "emit": "inventory/low-stock",
        "emit_clear": "inventory/stock-restored",
        **overrides,
    }


def test_a_bad_expression_is_a_config_error_naming_the_rule(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(base_config(tmp_path, rules=[_rule(clear_when="data.available >")]), base_dir=tmp_path)
    assert "rule 'low-stock': clear_when:" in str(caught.value)


def test_rules_may_emit_only_channels_of_the_loaded_specs(tmp_path: Path) -> None:
    specs = load_specs(builtin_spec_paths())
    good = config_from_mapping(base_config(tmp_path, rules=[_rule()]), base_dir=tmp_path)
    assert rule_problems(good, specs) == []
    bad = config_from_mapping(base_config(tmp_path, rules=[_rule(emit="inventory/empty")]), base_dir=tmp_path)
    assert rule_problems(bad, specs) == ["rules[low-stock].emit: channel 'inventory/empty' is not in the loaded specs"]


def test_yaml_on_key_is_read_as_the_channel(tmp_path: Path) -> None:
    import yaml

    raw = yaml.safe_load("name: r\non: inventory/synced\nwhen: data.available < 1\nemit: inventory/low-stock\n")
    config = config_from_mapping(base_config(tmp_path, rules=[raw]), base_dir=tmp_path)
    assert config.rules[0].on == "inventory/synced"
