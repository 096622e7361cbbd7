"""Keeping leases while the work they cover is in flight.

A lease (a delivery's, a write-back command's, a polled resource's) has an expiry so that a process that dies
gives its work up; a process that lives renews it every third of the lease, so two renewals can fail (a store
briefly out of reach) before anyone else may take the work over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger(__name__)

__all__ = ["LeaseKeeper", "renewal_period_s"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def renewal_period_s(lease_s: float) -> float:
    """How often a lease is renewed (and a standby asks for a poll lease): a third of it, so two renewals can fail
    before it lapses, and a dead holder's work moves within `lease_s` + this."""
    return lease_s / 3


class LeaseKeeper(Generic[K, V]):
    """The leases of one process's work in flight, renewed together every `renewal_period_s` of the lease.

    `held` maps each piece of work (a delivery id, a command id) to what its renewal needs (a fencing token, its
    lease length); `renew(held)` extends them in the store and returns the keys it renewed. A key still held but
    not renewed has lost its lease (it ran out and another claim took the work): it moves to `lost`, for the work
    to stop before it sends anything more. `release` forgets a key once its work is done.
    """

    def __init__(self, what: str, renew: Callable[[dict[K, V]], Awaitable[set[K]]], lease_s: Callable[[], float]):
        self.what = what
        self.held: dict[K, V] = {}
        self.lost: set[K] = set()
        self._renew = renew
        self._lease_s = lease_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._renew_forever(), name=f"{self.what}-leases")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def hold(self, key: K, value: V) -> None:
        self.held[key] = value

    def release(self, key: K) -> None:
        self.held.pop(key, None)
        self.lost.discard(key)

    def reconfigured(self) -> None:
        """The lease may have changed: a shorter one takes effect now, not after the current (old-lease) wait."""
        self._wake.set()

    async def _renew_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(renewal_period_s(self._lease_s())):
                    await self._wake.wait()
            self._wake.clear()
            await self.renew()

    async def renew(self) -> None:
        """Renew every lease held now (the loop does this every renewal period)."""
        if not self.held:
            return
        asked = dict(self.held)
        try:
            renewed = await self._renew(asked)
        except Exception as exc:  # tried again at the next renewal, while the leases still stand
            log.warning("leases not renewed", work=self.what, count=len(asked), error=str(exc))
            return
        lost = [key for key in asked if key not in renewed and key in self.held]
        for key in lost:
            del self.held[key]
            self.lost.add(key)
        if lost:
            log.warning("leases lost while in flight", work=self.what, count=len(lost))
