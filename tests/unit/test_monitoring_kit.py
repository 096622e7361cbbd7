"""The shipped monitoring kit: the Grafana dashboard and the Prometheus rules query metrics the relay exports,
with labels those metrics have; promtool validates the rules and runs their unit tests; every alert is tested
both ways and points at a section of docs/operations.md that exists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from relay import metrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "erp-relay.json"
RULES = REPO / "deploy" / "prometheus" / "erp-relay-rules.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "erp-relay-rules.test.yml"
OPERATIONS = REPO / "docs" / "operations.md"

# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def exported() -> dict[str, set[str]]:
    """Every sample name the relay exports, with the label names it may carry."""
    names: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if isinstance(metric, Counter | Gauge | Histogram):
            (family,) = metric.describe()
            for suffix in SUFFIXES[family.type]:
                labels = set(metric._labelnames) | TARGET_LABELS
                names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def dashboard_queries(node: Any) -> Iterator[str]:
    """Every PromQL expression of the dashboard: panel targets and template variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            is_query = key == "expr" or (key == "query" and str(value).startswith("label_values("))
            if is_query and isinstance(value, str):
                yield value
            else:
                yield from dashboard_queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_queries(item)


def problems_in(expr: str, known: dict[str, set[str]], recorded: set[str]) -> list[str]:
    """Metric names the relay does not export and label names those metrics do not have, in one expression."""
    found = []
    for name in re.findall(r"\b(relay_[a-z0-9_]+)", expr):
        if name not in known:
            found.append(f"unknown metric {name}")
    for name in re.findall(r"\b(relay:[a-z0-9_:]+)", expr):
        if name not in recorded:
            found.append(f"unknown recording rule {name}")
    for name, matchers in re.findall(r"\b(relay_[a-z0-9_]+)\{([^}]*)\}", expr):
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
            if name in known and label not in known[name]:
                found.append(f"{name} has no label {label}")
    return found


def test_the_relay_exports_the_poller_and_store_metrics_the_kit_relies_on() -> None:
    known = exported()
    assert known["relay_poll_runs_total"] >= {"source", "resource", "outcome"}
    assert known["relay_poll_last_success_timestamp_seconds"] >= {"source", "resource"}
    assert known["relay_source_up"] >= {"source"}
    for name in ("relay_oldest_pending_age_seconds", "relay_store_up", "relay_store_commit_failures_total"):
        assert name in known


def test_dashboard_queries_only_metrics_and_labels_the_relay_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    queries = list(dashboard_queries(dashboard))
    assert len(queries) >= 25
    known = exported()
    assert [(q, p) for q in queries for p in problems_in(q, known, recorded)] == []


def test_dashboard_draws_what_an_operator_looks_at() -> None:
    text = DASHBOARD.read_text()
    for name in (
        "relay_events_received_total",
        "relay_webhook_attempts_total",
        "relay_deliveries_pending",
        "relay_dead_letters",
        "relay_oldest_pending_age_seconds",
        "relay_subscriber_circuit_open",
        "relay_webhook_end_to_end_seconds_bucket",
        "relay_poll_runs_total",
        "relay_poll_last_success_timestamp_seconds",
        "relay_quarantined_total",
        "relay_store_up",
    ):
        assert name in text, name


def test_dashboard_panels_are_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "instance", "subscriber", "source"}


def test_rules_query_only_metrics_and_labels_the_relay_exports() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    known = exported()
    assert [(r["expr"], p) for r in rules() for p in problems_in(r["expr"], known, recorded)] == []


def test_the_alerts_cover_what_the_issue_asks_for() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in alerts()}
    assert "relay_dead_letters" in exprs["RelayDeadLettersGrowing"]
    assert "relay_oldest_pending_age_seconds" in exprs["RelayOldestPendingTooOld"]
    assert "relay_subscriber_circuit_open" in exprs["RelayCircuitOpen"]
    assert "relay_source_up" in exprs["RelaySourceDown"]
    assert "relay_poll_last_success_timestamp_seconds" in exprs["RelayPollStale"]
    assert "relay_store_up" in exprs["RelayStoreUnavailable"]


def _slugs(markdown: str) -> set[str]:
    """GitHub's anchors of the headings of a markdown document."""
    slugs = set()
    for line in markdown.splitlines():
        heading = re.match(r"#+\s+(.*)", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            slugs.add(text.replace(" ", "-"))
    return slugs


def test_every_alert_says_what_happened_and_links_its_runbook_section() -> None:
    sections = _slugs(OPERATIONS.read_text())
    for alert in alerts():
        annotations = alert["annotations"]
        assert annotations["summary"], alert["alert"]
        assert annotations["description"], alert["alert"]
        page, _, anchor = annotations["runbook"].partition("#")
        assert page == "docs/operations.md", alert["alert"]
        assert anchor in sections, f"{alert['alert']}: no section #{anchor} in docs/operations.md"
        assert annotations["runbook"] in annotations["description"], alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning"), alert["alert"]


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases = [
        case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test.get("alert_rule_test", [])
    ]
    for alert in alerts():
        name = alert["alert"]
        outcomes = [bool(case["exp_alerts"]) for case in cases if case["alertname"] == name]
        assert True in outcomes, f"{name}: no test where it fires"
        assert False in outcomes, f"{name}: no test where it stays quiet"


def test_every_exported_metric_is_documented() -> None:
    text = OPERATIONS.read_text()
    for metric in vars(metrics).values():
        if isinstance(metric, Counter | Gauge | Histogram):
            (family,) = metric.describe()
            name = family.name + ("_total" if family.type == "counter" else "")
            assert f"`{name}`" in text, f"{name} is missing from docs/operations.md"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is not installed: it comes with Debian's `prometheus` package "
            "(`apt-get install prometheus`; `make test` installs it when missing)"
        )
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False, cwd=RULES.parent)


def test_promtool_checks_the_rules() -> None:
    result = _promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_runs_the_rule_unit_tests() -> None:
    result = _promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
