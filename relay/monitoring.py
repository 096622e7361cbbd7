"""Gauges read from the store when Prometheus scrapes `/metrics`: store availability, oldest pending age.

They are read at scrape time rather than on a timer so that they cost nothing when nobody scrapes and are
as fresh as the scrape itself; each read is one index seek per subscriber.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import structlog

from relay import metrics
from relay.store import Store, StoreUnavailable

log = structlog.get_logger(__name__)

__all__ = ["STORE_PROBE_TIMEOUT_S", "pending_age_s", "refresh_store_gauges"]

# Below Prometheus' default scrape timeout (10 s), so a wedged store shows as `relay_store_up 0` rather
# than as a failed scrape; above `store.busy_timeout`'s default (5 s), so a briefly held lock is not "down".
STORE_PROBE_TIMEOUT_S = 8.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


def pending_age_s(oldest_created_at: datetime | None, now: datetime) -> float:
    """Seconds the oldest pending delivery has waited: 0 when nothing is pending or the clock stepped back."""
    if oldest_created_at is None:
        return 0.0
    return max(0.0, (now - oldest_created_at).total_seconds())


async def refresh_store_gauges(
    store: Store,
    subscribers: Sequence[str],
    *,
    timeout_s: float = STORE_PROBE_TIMEOUT_S,
    clock: Callable[[], datetime] = _utcnow,
) -> None:
    """Set `relay_store_up` (the `/readyz` store check) and `relay_oldest_pending_age_seconds` per subscriber.

    Never raises for an unavailable store: that is what `relay_store_up 0` reports, and the oldest-pending
    gauges keep their last values.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await store.ping()
            oldest = await store.oldest_pending_at(subscribers)
    except (StoreUnavailable, TimeoutError) as exc:
        log.debug("store probe for /metrics failed", error=str(exc) or type(exc).__name__)
        metrics.STORE_UP.set(0)
        return
    metrics.STORE_UP.set(1)
    now = clock()
    for name in subscribers:
        metrics.labelled(metrics.OLDEST_PENDING_AGE, name).set(pending_age_s(oldest.get(name), now))
