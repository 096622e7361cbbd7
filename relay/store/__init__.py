"""Durable storage. `open_store(url)` picks the backend from the URL (saq's `Queue.from_url`)."""

from __future__ import annotations

from typing import Literal

from relay.store.base import (
    DEFAULT_QUARANTINE_MAX_BYTES,
    Checkpoint,
    ClaimedDelivery,
    ClaimRequest,
    CommandFilter,
    CommandRow,
    Completion,
    ConfirmEntry,
    ConfirmRow,
    DeliveryFilter,
    DeliveryPlan,
    EventFilter,
    IngestOutcome,
    InstanceRecord,
    NewCommand,
    NewEvent,
    PollCommit,
    QuarantineEntry,
    QuarantineRow,
    Store,
    StoreUnavailable,
)

__all__ = [
    "Checkpoint",
    "ClaimRequest",
    "ClaimedDelivery",
    "CommandFilter",
    "CommandRow",
    "Completion",
    "ConfirmEntry",
    "ConfirmRow",
    "DeliveryFilter",
    "DeliveryPlan",
    "EventFilter",
    "IngestOutcome",
    "InstanceRecord",
    "NewCommand",
    "NewEvent",
    "PollCommit",
    "QuarantineEntry",
    "QuarantineRow",
    "Store",
    "StoreUnavailable",
    "create_store",
]


def create_store(
    url: str,
    *,
    synchronous: Literal["FULL", "NORMAL"] = "FULL",
    batch_max: int = 512,
    busy_timeout_s: float = 5.0,
    quarantine_max_bytes: int = DEFAULT_QUARANTINE_MAX_BYTES,
) -> Store:
    """Return an unopened store for `sqlite:///path` or `postgresql://…` (call `await store.open()`).

    `synchronous` and `busy_timeout_s` apply to SQLite only; PostgreSQL commits at the server's own
    `synchronous_commit` (on by default).

    Raises:
        ValueError: an unsupported URL.
    """
    if url.startswith("sqlite://"):
        from relay.store.sqlite import SqliteStore, sqlite_path_from_url

        return SqliteStore(
            sqlite_path_from_url(url),
            synchronous=synchronous,
            batch_max=batch_max,
            busy_timeout_s=busy_timeout_s,
            quarantine_max_bytes=quarantine_max_bytes,
        )
    if url.startswith(("postgresql://", "postgres://")):
        from relay.store.postgres import PostgresStore

        return PostgresStore(url, batch_max=batch_max, quarantine_max_bytes=quarantine_max_bytes)
    raise ValueError(f"unsupported store URL scheme: {url.split(':', 1)[0]!r}")
