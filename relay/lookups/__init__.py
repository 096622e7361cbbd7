"""Live availability lookups: ask the ERP now, share identical calls, cache briefly, fall back to the store.

`LookupService` is the policy around one source's ERP client: a cache of `cache_ttl`, single flight for
identical concurrent lookups, a cap on ERP calls in flight and a rate limit, and, when the ERP fails or
exceeds `timeout`, the latest `inventory/synced` state of the matching keys with `stale: true`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import orjson
import structlog

from relay import metrics
from relay.config import LookupConfig
from relay.events import format_ts
from relay.store.base import Store

__all__ = [
    "Availability",
    "ErpClient",
    "LookupError_",
    "LookupService",
    "LookupUnavailable",
    "UnknownPart",
    "WarehouseStock",
    "availability_json",
    "from_state",
]

log = structlog.get_logger(__name__)

Origin = Literal["live", "store"]
ErrorKind = Literal["timeout", "unreachable", "refused", "shape"]


@dataclass(frozen=True, slots=True)
class WarehouseStock:
    """Stock of one part in one warehouse; None where the ERP does not say."""

    warehouse: str
    on_hand: float | None
    allocated: float | None
    available: float | None
    unit_of_measure: str | None = None
    bin_location: str | None = None


@dataclass(frozen=True, slots=True)
class Availability:
    """The answer to one lookup: a part's stock per warehouse, when it was true, and where it came from."""

    part: str
    warehouses: tuple[WarehouseStock, ...]
    as_of: datetime
    origin: Origin = "live"
    stale: bool = False


class LookupError_(Exception):  # noqa: N801 - `LookupError` is a builtin this must not shadow
    """The ERP did not answer a lookup; `kind` is the bounded metric label."""

    def __init__(self, message: str, kind: ErrorKind) -> None:
        super().__init__(message)
        self.kind = kind


class UnknownPart(Exception):
    """The ERP says the part does not exist (answered 404)."""


class LookupUnavailable(Exception):
    """Neither the ERP nor the store can answer (answered 504)."""


class ErpClient(Protocol):
    """One ERP's availability call."""

    async def availability(self, parts: Sequence[str], warehouse: str | None) -> dict[str, list[WarehouseStock] | None]:
        """Stock per warehouse of each part (None: the ERP does not know the part).

        Raises:
            LookupError_: the ERP failed, refused, or answered an unexpected shape.
        """
        ...


def availability_json(a: Availability, now: datetime) -> dict[str, Any]:
    """The wire shape of one answer; `ageSeconds` says how old a stale answer is."""
    out: dict[str, Any] = {
        "part": a.part,
        "warehouses": [
            {
                "warehouse": w.warehouse,
                "onHand": w.on_hand,
                "allocated": w.allocated,
                "available": w.available,
                "unitOfMeasure": w.unit_of_measure,
                **({"binLocation": w.bin_location} if w.bin_location else {}),
            }
            for w in a.warehouses
        ],
        "asOf": format_ts(a.as_of),
        "stale": a.stale,
        "origin": a.origin,
    }
    if a.stale:
        out["ageSeconds"] = round(max(0.0, (now - a.as_of).total_seconds()), 3)
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def from_state(part: str, rows: Sequence[tuple[bytes, datetime]], warehouse: str | None) -> Availability | None:
    """The stale answer from stored `inventory/synced` payloads of `part` (pure); `asOf` is the oldest used."""
    stocks: list[WarehouseStock] = []
    oldest: datetime | None = None
    for payload, received_at in rows:
        try:
            data = orjson.loads(payload).get("data")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if not isinstance(data, Mapping) or data.get("partNumber") != part:
            continue
        if warehouse is not None and data.get("warehouse") != warehouse:
            continue
        uom = data.get("unitOfMeasure")
        stocks.append(
            WarehouseStock(
                warehouse=str(data.get("warehouse")),
                on_hand=_number(data.get("onHand")),
                allocated=_number(data.get("allocated")),
                available=_number(data.get("available")),
                unit_of_measure=uom if isinstance(uom, str) else None,
            )
        )
        oldest = received_at if oldest is None else min(oldest, received_at)
    if not stocks or oldest is None:
        return None
    return Availability(part, tuple(sorted(stocks, key=lambda s: s.warehouse)), oldest, origin="store", stale=True)


class _RateLimit:
    """At most `per_s` starts per second, spaced evenly (a missed slot is not saved up)."""

    def __init__(self, per_s: float | None, clock: Callable[[], float]) -> None:
        self.interval_s = 1.0 / per_s if per_s else 0.0
        self.clock = clock
        self.next_at = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval_s:
            return
        async with self.lock:
            now = self.clock()
            delay = self.next_at - now
            self.next_at = max(now, self.next_at) + self.interval_s
        if delay > 0:
            await asyncio.sleep(delay)


_Key = tuple[str, str | None]


class LookupService:
    """Availability lookups through one source.

    Args:
        source: the source's name (metric label).
        client: the ERP's availability call.
        config: the source's `lookup:` block.
        store: where the stale answers come from.
        clock: monotonic seconds (cache expiry).
    """

    def __init__(
        self,
        source: str,
        client: ErpClient,
        config: LookupConfig,
        store: Store,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.client = client
        self.config = config
        self.store = store
        self.clock = clock
        self._cache: dict[_Key, tuple[float, Availability | None]] = {}
        self._inflight: dict[_Key, asyncio.Future[Availability | None]] = {}
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._rate = _RateLimit(config.rate_limit, clock)

    def _cached(self, key: _Key) -> tuple[bool, Availability | None]:
        hit = self._cache.get(key)
        if hit is not None and hit[0] > self.clock():
            metrics.labelled(metrics.LOOKUP_CACHE, self.source, "hit").inc()
            return True, hit[1]
        metrics.labelled(metrics.LOOKUP_CACHE, self.source, "miss").inc()
        return False, None

    async def _call(self, parts: Sequence[str], warehouse: str | None) -> dict[str, list[WarehouseStock] | None]:
        async with self._slots:
            await self._rate.wait()
            try:
                return await asyncio.wait_for(self.client.availability(parts, warehouse), self.config.timeout_s)
            except TimeoutError:
                raise LookupError_(f"no answer within {self.config.timeout_s:g}s", "timeout") from None

    async def _live_many(self, parts: Sequence[str], warehouse: str | None) -> dict[str, Availability | None]:
        """One ERP call for `parts`; the results are cached. Raises LookupError_."""
        try:
            found = await self._call(parts, warehouse)
        except LookupError_ as exc:
            metrics.labelled(metrics.LOOKUP_ERP_ERRORS, self.source, exc.kind).inc()
            log.warning("availability lookup failed", source=self.source, error=str(exc), parts=len(parts))
            raise
        now = datetime.now(UTC)
        expires = self.clock() + self.config.cache_ttl_s
        out: dict[str, Availability | None] = {}
        for part in parts:
            stocks = found.get(part)
            answer = None if stocks is None else Availability(part, tuple(stocks), now)
            out[part] = answer
            if self.config.cache_ttl_s > 0:
                self._cache[(part, warehouse)] = (expires, answer)
        return out

    async def _single_flight(
        self, key: _Key, call: Callable[[], Awaitable[Availability | None]]
    ) -> Availability | None:
        running = self._inflight.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Availability | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await call()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: waiters re-raise it, and no "never retrieved" warning otherwise
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[key]

    async def _stale(self, part: str, warehouse: str | None) -> Availability | None:
        prefix = f"{part}|" if warehouse is None else f"{part}|{warehouse}"
        records = await self.store.list_state("inventory", prefix=prefix, limit=1000)
        rows = [(r.payload, r.received_at) for r in records if r.channel == "inventory/synced" and not r.deleted]
        return from_state(part, rows, warehouse)

    async def lookup(self, part: str, warehouse: str | None = None) -> Availability:
        """Live, else cached, else stale from the store.

        Raises:
            UnknownPart: the ERP says the part does not exist.
            LookupUnavailable: the ERP failed and the store holds nothing for the part.
        """
        started = time.perf_counter()
        key = (part, warehouse)
        origin = "none"
        try:
            hit, cached = self._cached(key)
            if hit:
                origin = "cache"
                if cached is None:
                    raise UnknownPart(part)
                return cached

            async def call() -> Availability | None:
                return (await self._live_many([part], warehouse))[part]

            try:
                answer = await self._single_flight(key, call)
            except LookupError_:
                stale = await self._stale(part, warehouse)
                if stale is None:
                    raise LookupUnavailable(f"{self.source}: the ERP did not answer and nothing is stored") from None
                origin = "store"
                return stale
            if answer is None:
                raise UnknownPart(part)
            origin = "live"
            return answer
        finally:
            metrics.labelled(metrics.LOOKUP_SECONDS, self.source, origin).observe(time.perf_counter() - started)

    async def lookup_many(self, parts: Sequence[str], warehouse: str | None = None) -> dict[str, Availability | str]:
        """Many parts at once: cache hits, then one batched ERP call for the rest.

        Returns:
            Per part its answer, or "unknown" (the ERP does not know it) or "unavailable" (no ERP, no store).
        """
        started = time.perf_counter()
        answers: dict[str, Availability | None] = {}
        missing: list[str] = []
        for part in dict.fromkeys(parts):
            hit, cached = self._cached((part, warehouse))
            if hit:
                answers[part] = cached
            else:
                missing.append(part)
        origin = "cache"
        out: dict[str, Availability | str] = {}
        if missing:
            try:
                answers.update(await self._live_many(missing, warehouse))
                origin = "live"
            except LookupError_:
                origin = "store"
                for part in missing:
                    stale = await self._stale(part, warehouse)
                    out[part] = stale if stale is not None else "unavailable"
        for part, answer in answers.items():
            out[part] = answer if answer is not None else "unknown"
        metrics.labelled(metrics.LOOKUP_SECONDS, self.source, origin).observe(time.perf_counter() - started)
        return {part: out[part] for part in dict.fromkeys(parts)}
