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

__all__ = [
    "UNKNOWN",
    "bounded",
    "forget",
    "labelled",
    "register_config",
    "register_instance",
    "register_known",
    "resource_label",
]

_Metric = TypeVar("_Metric", Counter, Gauge, Histogram)
_children: dict[tuple[Any, tuple[str, ...]], Any] = {}

UNKNOWN = "-"
# The values each label name may take. Names come from the configuration (and grow on reload: a series
# already exported keeps its name); results and outcomes are fixed by the code.
_KNOWN: dict[str, set[str]] = {
    "source": set(),
    "channel": set(),
    "subscriber": set(),
    "resource": set(),
    "result": {"accepted", "duplicate", "invalid", "refused", "error", "unauthorized"},
    # Delivery attempts: delivered, retry, dead, disabled. Poll runs: success, error (the source failed or
    # refused: a PollError), crash (anything else, e.g. the store refused the commit).
    "outcome": {"delivered", "retry", "dead", "disabled", "success", "error", "crash"},
    "reason": {"budget", "retention"},
    "state": {"queued", "sent", "retry", "failed", "dropped"},
    # Availability lookups: where an answer came from, cache hits, and why the ERP did not answer.
    "origin": {"live", "cache", "store", "none"},
    "cache": {"hit", "miss"},
    "error": {"timeout", "unreachable", "refused", "shape"},
    # Write-back commands: the command names are fixed by the code.
    "command": {"order/create", "customer/create", "customer/update"},
    # This process alone (one series per process): its owner id on leases, as `relay instances` lists it.
    "instance_id": set(),
    "version": set(),
    "store": {"sqlite", "postgres"},
}
# Commands: accepted (stored), replayed (same key and body), conflict (key reused), invalid (refused body),
# succeeded, failed (for good), retry (an attempt to be repeated).
_KNOWN["outcome"].update({"accepted", "replayed", "conflict", "invalid", "succeeded", "failed", "retry"})

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
INSTANCE_INFO = Gauge(
    "relay_instance_info",
    "1, labelled with this relay serve process's id (its owner id on leases, as `relay instances` lists it), "
    "version and store backend. Tells the instances on one database apart; the scrape's own `instance` label "
    "is the address.",
    ["instance_id", "version", "store"],
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
OLDEST_PENDING_AGE = Gauge(
    "relay_oldest_pending_age_seconds",
    "Age of the oldest delivery waiting or in flight, per subscriber (0: none); read from the store at scrape.",
    ["subscriber"],
)
STORE_UP = Gauge(
    "relay_store_up", "1 when a write would be committed and kept now (what /readyz checks); read at scrape."
)
STORE_COMMIT_FAILURES = Counter(
    "relay_store_commit_failures_total",
    "Group-commit transactions that failed; none of their writes was acknowledged.",
)
POLL_RUNS = Counter(
    "relay_poll_runs_total",
    "Poll runs by source, resource and outcome (success; error: the source failed; crash: anything else).",
    ["source", "resource", "outcome"],
)
POLL_DURATION = Histogram(
    "relay_poll_duration_seconds",
    "Duration of one poll run (every page, and the reconcile listing when due).",
    ["source", "resource"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)
POLL_LAST_SUCCESS = Gauge(
    "relay_poll_last_success_timestamp_seconds",
    "Unix time the last successful poll run of a resource ended (since this process started).",
    ["source", "resource"],
)
POLL_INTERVAL = Gauge(
    "relay_poll_interval_seconds",
    "Seconds between poll runs of a resource as configured (`every`; for `cron`, from the last run to the next).",
    ["source", "resource"],
)
SOURCE_UP = Gauge(
    "relay_source_up",
    "1 when the last poll run of every resource of a polled source succeeded, 0 when one failed.",
    ["source"],
)

COMMANDS = Counter(
    "relay_commands_total",
    "Write-back commands by outcome: accepted, replayed, conflict, invalid, then retry, succeeded or failed.",
    ["source", "command", "outcome"],
)
COMMAND_DURATION = Histogram(
    "relay_command_duration_seconds",
    "Time of one command attempt toward the ERP (lookup and create), per source and command.",
    ["source", "command"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
COMMANDS_PENDING = Gauge(
    "relay_commands_pending", "Commands accepted or running, per source and command.", ["source", "command"]
)
SOURCE_TOKEN_EXPIRY = Gauge(
    "relay_source_token_expiry_timestamp_seconds",
    "Unix time the access token of a polled source expires (OAuth2, connected-app JWT or ION API token), "
    "as of its last poll run; no series for credentials without a token.",
    ["source"],
)
SOURCE_DRIFT = Counter(
    "relay_source_drift_total",
    "Schema drift detected in the raw records of a resource (fields added, removed or retyped; one per change).",
    ["source", "resource"],
)


def register_instance(instance_id: str, version: str) -> None:
    """Allow this process's own id and version as label values (`relay_instance_info`)."""
    _KNOWN["instance_id"].add(instance_id)
    _KNOWN["version"].add(version)


def register_known(
    *,
    sources: Iterable[str] = (),
    channels: Iterable[str] = (),
    subscribers: Iterable[str] = (),
    resources: Iterable[str] = (),
) -> None:
    """Allow these names as label values (at start-up and on reload); any other value is counted as `-`.

    `resources` are polled resources' labels (see `resource_label`), registered as the poller starts them.
    """
    _KNOWN["source"].update(sources)
    _KNOWN["channel"].update(channels)
    _KNOWN["subscriber"].update(subscribers)
    _KNOWN["resource"].update(resources)


def resource_label(name: str) -> str:
    """The `resource` label of a polled resource: its name without a URL's query, fragment or user info.

    X3 classes and SX.e feeds are plain names; an http-json resource is named `index:url`, and its URL may
    carry an API key in the query or a password before the host, which /metrics must not publish.
    """
    index, sep, url = name.partition(":")
    if not sep or "://" not in url:
        return name
    scheme, _, rest = url.partition("://")
    for mark in "?#":
        rest = rest.partition(mark)[0]
    authority, slash, path = rest.partition("/")
    return f"{index}:{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


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


def forget(metric: Counter | Gauge | Histogram, *values: str) -> None:
    """Remove the series of these label values (a source or resource no longer configured after a reload).

    Without this a source removed while failing would report `relay_source_up 0`, and alert, until a restart.
    """
    key = (metric, tuple(bounded(name, value) for name, value in zip(metric._labelnames, values, strict=True)))
    child = _children.get(key)
    if child is None:
        return
    for cached in [k for k, v in _children.items() if v is child]:
        del _children[cached]
    metric.remove(*key[1])


LOOKUP_SECONDS = Histogram(
    "relay_lookup_seconds",
    "Time to answer one availability lookup request, by where the answer came from (live, cache, store, none).",
    ["source", "origin"],
    buckets=_FAST_BUCKETS,
)
LOOKUP_CACHE = Counter(
    "relay_lookup_cache_total", "Availability lookups answered from the cache (hit) or not (miss).", ["source", "cache"]
)
LOOKUP_ERP_ERRORS = Counter(
    "relay_lookup_erp_errors_total",
    "Live availability calls to the ERP that failed: timeout, unreachable, refused (HTTP or ERP error), shape.",
    ["source", "error"],
)
