"""Metric labels take their values from bounded sets: configured names, fixed results; anything else is `-`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import WHSEC
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from relay import metrics
from relay.config import Config, config_from_mapping
from relay.spec import SpecRegistry

RELAY = Path(__file__).resolve().parents[2] / "relay"


def _sources(*names: str) -> Config:
    return config_from_mapping(
        {
            "sources": [{"name": n, "kind": "json-push", "auth": {"type": "bearer", "tokens": ["t0k"]}} for n in names],
            "subscribers": [{"name": "shop-labels", "url": "https://shop.example.com/hooks", "secrets": [WHSEC]}],
        }
    )


def test_unknown_label_values_are_counted_under_a_dash() -> None:
    registry = CollectorRegistry()
    counter = Counter("relay_test_bounded_total", "test", ["source", "channel", "result"], registry=registry)
    metrics.register_config(_sources("known-src"), SpecRegistry({}))
    for n in range(500):
        metrics.labelled(counter, f"probe-{n}", f"chan/{n}" + "x" * 4000, f"result-{n}").inc()
    metrics.labelled(counter, "known-src", "nope/nope", "accepted").inc()
    samples = [s for m in registry.collect() for s in m.samples if s.name == "relay_test_bounded_total"]
    assert {tuple(sorted(s.labels.items())) for s in samples} == {
        (("channel", "-"), ("result", "-"), ("source", "-")),
        (("channel", "-"), ("result", "accepted"), ("source", "known-src")),
    }
    assert registry.get_sample_value("relay_test_bounded_total", {"source": "-", "channel": "-", "result": "-"}) == 500


def test_configured_subscribers_are_known_and_others_are_not() -> None:
    metrics.register_config(_sources(), SpecRegistry({}))
    assert metrics.bounded("subscriber", "shop-labels") == "shop-labels"
    assert metrics.bounded("subscriber", "someone-else") == "-"
    assert metrics.bounded("outcome", "delivered") == "delivered"


def test_every_metric_label_has_a_bounded_set_of_values() -> None:
    for metric in vars(metrics).values():
        if isinstance(metric, Counter | Gauge | Histogram):
            for label in metric._labelnames:
                metrics.bounded(label, "anything")  # KeyError: a label name without its set of values


def test_no_code_labels_a_metric_past_the_bounding_helper() -> None:
    offenders = [
        f"{path.relative_to(RELAY.parent)}:{n}"
        for path in RELAY.rglob("*.py")
        if path.name != "metrics.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\.labels\(", line)
    ]
    assert offenders == [], "label metrics with relay.metrics.labelled, which bounds the values"


@pytest.mark.parametrize("label", ["event_id", "path"])
def test_a_label_name_without_a_set_is_a_programming_error(label: str) -> None:
    with pytest.raises(KeyError):
        metrics.bounded(label, "x")
