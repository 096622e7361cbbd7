"""Each `relay serve` records itself in the store with a heartbeat, so `relay instances` (and the admin API) can
list the live instances on one database with their leases and version."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from relay import __version__, metrics
from relay.runtime import Runtime
from relay.store import InstanceRecord, StoreUnavailable

if TYPE_CHECKING:
    from relay.deliver.dispatcher import Dispatcher
    from relay.poll.scheduler import PollScheduler

log = structlog.get_logger(__name__)

__all__ = ["FORGET_AFTER_S", "HEARTBEAT_S", "LIVE_WITHIN_S", "Heartbeat"]

HEARTBEAT_S = 5.0
#: An instance is listed while its last heartbeat is at most this old: three missed heartbeats mean it is gone.
LIVE_WITHIN_S = 3 * HEARTBEAT_S
#: The rows of instances silent this long are deleted (a killed instance never removes its own).
FORGET_AFTER_S = 3600.0


class Heartbeat:
    """The `relay serve` service that records this instance every `HEARTBEAT_S` seconds; removed on a clean stop.

    Args:
        runtime: the running relay.
        dispatcher: counts the deliveries in flight.
        poller: counts the poll leases held.
    """

    def __init__(self, runtime: Runtime, dispatcher: Dispatcher, poller: PollScheduler) -> None:
        self.runtime = runtime
        self.dispatcher = dispatcher
        self.poller = poller
        self.started_at = datetime.now(UTC)
        self._task: asyncio.Task[None] | None = None

    def record(self) -> InstanceRecord:
        """This instance as its next heartbeat records it (`heartbeat_at` is set by the store)."""
        return InstanceRecord(
            id=self.dispatcher.owner,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            started_at=self.started_at,
            heartbeat_at=datetime.now(UTC),
            poll_leases=self.poller.leases_held,
            deliveries_in_flight=self.dispatcher.in_flight,
        )

    async def _beat(self) -> None:
        try:
            await self.runtime.store.heartbeat(self.record(), forget_after_s=FORGET_AFTER_S)
        except StoreUnavailable as exc:
            log.warning("heartbeat not recorded", error=str(exc))

    async def start(self) -> None:
        instance_id = self.dispatcher.owner
        metrics.register_instance(instance_id, __version__)
        metrics.labelled(metrics.INSTANCE_INFO, instance_id, __version__, self.runtime.store.dialect).set(1)
        await self._beat()  # listed as soon as it serves
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)  # the heartbeat period, not a synchronisation
            await self._beat()

    async def stop(self, grace_s: float) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(StoreUnavailable):
            await self.runtime.store.forget_instance(self.dispatcher.owner)

    def reconfigure(self, runtime: Runtime) -> None:
        self.runtime = runtime
