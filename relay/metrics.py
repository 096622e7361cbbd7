"""Prometheus metrics (relay_ prefix, base units, bounded labels: never an event id)."""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import Counter, Gauge, Histogram

_Metric = TypeVar("_Metric", Counter, Gauge, Histogram)
_children: dict[tuple[Any, tuple[str, ...]], Any] = {}

_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

EVENTS_RECEIVED = Counter(
    "relay_events_received_total",
    "Events received by source, channel and result (accepted, duplicate, invalid, refused, error).",
    ["source", "channel", "result"],
)
INGEST_DURATION = Histogram(
    "relay_ingest_duration_seconds",
    "Time from request start to answer for ingest requests.",
    ["source"],
    buckets=_FAST_BUCKETS,
)
STORE_COMMIT_BATCH_SIZE = Histogram(
    "relay_store_commit_batch_size",
    "Writes gathered into one store transaction (group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
STORE_COMMIT_SECONDS = Histogram(
    "relay_store_commit_duration_seconds",
    "Duration of one group-commit transaction.",
    buckets=_FAST_BUCKETS,
)
QUARANTINED = Counter(
    "relay_quarantined_total",
    "Inputs kept in quarantine, by source.",
    ["source"],
)
QUARANTINE_DROPPED = Counter(
    "relay_quarantine_dropped_total",
    "Quarantined inputs deleted, by reason (budget: past quarantine.max_bytes; retention: older than its age).",
    ["reason"],
)
QUARANTINE_BYTES = Gauge("relay_quarantine_bytes", "Bytes held by quarantined inputs (bodies, reasons, details).")
WEBHOOK_ATTEMPTS = Counter(
    "relay_webhook_attempts_total",
    "Delivery attempts by subscriber and outcome (delivered, retry, dead, disabled).",
    ["subscriber", "outcome"],
)
WEBHOOK_ATTEMPT_DURATION = Histogram(
    "relay_webhook_attempt_duration_seconds",
    "Duration of one delivery attempt.",
    ["subscriber"],
    buckets=(*_FAST_BUCKETS, 10.0, 30.0),
)
WEBHOOK_END_TO_END = Histogram(
    "relay_webhook_end_to_end_seconds",
    "From event received to delivered, per subscriber.",
    ["subscriber"],
    buckets=(*_FAST_BUCKETS, 10.0, 30.0, 60.0, 300.0, 3600.0),
)
DELIVERIES_PENDING = Gauge(
    "relay_deliveries_pending", "Deliveries waiting or in flight, per subscriber.", ["subscriber"]
)
DEAD_LETTERS = Gauge("relay_dead_letters", "Dead deliveries, per subscriber.", ["subscriber"])
CIRCUIT_OPEN = Gauge("relay_subscriber_circuit_open", "1 while a subscriber's circuit breaker is open.", ["subscriber"])


def labelled(metric: _Metric, *values: str) -> _Metric:
    """`metric.labels(*values)`, remembered: prometheus_client takes a lock and builds its key on every
    `labels` call, and the hot paths label every event and every delivery. Labels are bounded (sources,
    channels, subscribers, results), so the cache is too."""
    key = (metric, values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    result: _Metric = child
    return result
