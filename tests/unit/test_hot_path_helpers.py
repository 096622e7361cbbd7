"""The small helpers the ingest and delivery hot paths lean on: stored timestamps, version order, cached
metric children and the source lookup that follows a config reload."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from relay import metrics
from relay.config import config_from_mapping
from relay.events import utc_text, version_order
from relay.ingest.pipeline import Ingestor
from relay.routing import Router
from relay.runtime import Runtime
from relay.spec import SpecRegistry
from relay.store import create_store


def test_utc_text_is_fixed_width_utc_and_sorts_like_the_instants() -> None:
    instants = [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2026, 11, 23, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 11, 23, 3, 5, 6, 8, tzinfo=UTC),
        datetime(2026, 11, 23, 4, 5, 6, tzinfo=UTC),
    ]
    texts = [utc_text(i) for i in instants]
    assert texts[2] == "2026-11-23T02:05:06.000007Z"  # the offset is folded into UTC
    assert texts[4] == "2026-11-23T04:05:06.000000Z"  # microseconds always present
    assert {len(t) for t in texts} == {27}
    assert sorted(texts) == [utc_text(i) for i in sorted(instants)]


def test_version_order_sorts_integers_by_value_and_timestamps_by_instant() -> None:
    assert version_order("5") < version_order("10")
    assert version_order("2026-11-23T10:00:00+02:00") < version_order("2026-11-23T09:00:00Z")
    assert version_order("2026-11-23T08:00:00Z") == "t2026-11-23T08:00:00.000000Z"
    assert version_order("not a version") == "snot a version"
    assert version_order(None) == ""


def test_labelled_returns_one_child_per_label_set_that_counts() -> None:
    registry = CollectorRegistry()
    counter = Counter("relay_test_labelled_total", "test", ["source", "result"], registry=registry)
    metrics.register_known(sources=["hub"])
    first = metrics.labelled(counter, "hub", "accepted")
    assert metrics.labelled(counter, "hub", "accepted") is first
    assert metrics.labelled(counter, "hub", "duplicate") is not first
    first.inc()
    metrics.labelled(counter, "hub", "accepted").inc()
    # What a scrape of /metrics reports for each label set.
    assert registry.get_sample_value("relay_test_labelled_total", {"source": "hub", "result": "accepted"}) == 2
    assert registry.get_sample_value("relay_test_labelled_total", {"source": "hub", "result": "duplicate"}) == 0


def _config(*sources: str) -> Any:
    return config_from_mapping(
        {"sources": [{"name": n, "kind": "json-push", "auth": {"type": "bearer", "tokens": ["t0k"]}} for n in sources]}
    )


def test_runtime_source_lookup_follows_a_config_swap() -> None:
    specs = SpecRegistry({})
    old = _config("hub")
    # An unopened store: the runtime hands it the configured rules on every swap, and nothing else here touches it.
    store = create_store("sqlite:///never-opened.db")
    runtime = Runtime(config=old, store=store, specs=specs, ingestor=Ingestor(store, Router([])))
    assert runtime.source("hub") is old.sources[0]
    assert runtime.source("erp") is None
    runtime.apply_config(_config("erp"), specs)
    assert runtime.source("hub") is None
    assert runtime.source("erp") is runtime.config.sources[0]
