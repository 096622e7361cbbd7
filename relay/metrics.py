"""Prometheus metrics (relay_ prefix, base units, bounded labels: never an event id).

Every label value goes through `labelled`, which keeps only values from a known set (configured sources,
subscribers, the loaded specs' channels, fixed results and outcomes) and counts anything else under `-`:
no request can create a time series.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from relay.config import Config
    from relay.spec import SpecRegistry

__all__ = ["UNKNOWN", "bounded", "labelled", "register_config", "register_known"]

_Metric = TypeVar("_Metric", Counter, Gauge, Histogram)
_children: dict[tuple[Any, tuple[str, ...]], Any] = {}

UNKNOWN = "-"
# The values each label name may take. Names come from the configuration (and grow on reload: a series
# already exported keeps its name); results and outcomes are fixed by the code.
_KNOWN: dict[str, set[str]] = {
    "source": set(),
    "channel": set(),
    "subscriber": set(),
    "result": {"accepted", "duplicate", "invalid", "refused", "error", "unauthorized"},
    "outcome": {"delivered", "retry", "dead", "disabled"},
    "reason": {"budget", "retention"},
    "state": {"queued", "sent", "retry", "failed", "dropped"},
}

_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

EVENTS_RECEIVED = Counter(
    "relay_events_received_total",
    "Events received by source, channel and result (accepted, duplicate, invalid, refused, error, unauthorized).",
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
ION_CONFIRMS = Counter(
    "relay_ion_confirms_total",
    "ConfirmBODs to ION by source and state (queued, sent, retry, failed: given up, dropped: not queued).",
    ["source", "state"],
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


def register_known(
    *, sources: Iterable[str] = (), channels: Iterable[str] = (), subscribers: Iterable[str] = ()
) -> None:
    """Allow these names as label values (at start-up and on reload); any other value is counted as `-`."""
    _KNOWN["source"].update(sources)
    _KNOWN["channel"].update(channels)
    _KNOWN["subscriber"].update(subscribers)


def register_config(config: Config, specs: SpecRegistry) -> None:
    """Allow the configured sources and subscribers and the specs' channels as label values."""
    register_known(
        sources=[s.name for s in config.sources],
        channels=specs.channels,
        subscribers=[s.name for s in config.subscribers],
    )


def bounded(label: str, value: str) -> str:
    """`value` when it is a known value of `label`, else `-`.

    Raises:
        KeyError: `label` is not a label name this module knows (a metric defined with a new label name
            needs its set of values here first).
    """
    return value if value in _KNOWN[label] else UNKNOWN


def labelled(metric: _Metric, *values: str) -> _Metric:
    """`metric.labels(*values)` with every value bounded (unknown ones become `-`), remembered.

    prometheus_client takes a lock and builds its key on every `labels` call, and the hot paths label every
    event and every delivery. The cache holds bounded label sets only, so it is bounded too.
    """
    child = _children.get((metric, values))
    if child is None:
        names = metric._labelnames
        key = (metric, tuple(bounded(name, value) for name, value in zip(names, values, strict=True)))
        child = _children.get(key)
        if child is None:
            child = _children[key] = metric.labels(*key[1])
    result: _Metric = child
    return result
