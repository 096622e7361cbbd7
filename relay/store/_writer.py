"""The group-commit writer both stores share: writes queue up, and one task sends each batch of them to the
database in one transaction, so a commit's cost is shared by every write in it.

A backend supplies `_flush(batch)` (its transaction: ingest, completions, then `write` calls, each isolated
from the others) and reports each write's result or error back with `_settle`, or fails the whole batch with
`_fail`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from relay import metrics
from relay.store.base import Completion, NewEvent, StoreUnavailable

__all__ = ["GroupCommit", "WriteOp"]

Conn = TypeVar("Conn")
T = TypeVar("T")


@dataclass(eq=False, slots=True)
class WriteOp(Generic[Conn]):
    """One write waiting for the next batch; `future` gets its result once the batch is committed."""

    kind: Literal["ingest", "complete", "call"]
    future: asyncio.Future[Any]
    items: Sequence[NewEvent] = ()
    completions: Sequence[Completion] = ()
    fn: Callable[[Conn], Awaitable[Any]] | None = None
    size: int = field(default=1)


class GroupCommit(Generic[Conn]):
    """The queue, the loop that gathers up to `batch_max` items into one batch, and answering each write."""

    batch_max: int
    _closed: bool

    def _init_writer(self, batch_max: int) -> None:
        self.batch_max = batch_max
        self._queue: asyncio.Queue[WriteOp[Conn] | None] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None

    def _start_writer(self, name: str) -> None:
        self._writer_task = asyncio.create_task(self._write_loop(), name=name)

    async def _stop_writer(self) -> None:
        """Let the writes already queued commit, then end the writer."""
        if self._writer_task is not None:
            await self._queue.put(None)
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task

    @property
    def _writer_running(self) -> bool:
        return self._writer_task is not None and not self._closed

    async def _submit(self, op: WriteOp[Conn]) -> Any:
        if self._closed or self._writer_task is None or self._writer_task.done():
            raise StoreUnavailable("the store is closed")
        await self._queue.put(op)
        return await op.future

    def _op(self, kind: Literal["ingest", "complete", "call"], **fields: Any) -> WriteOp[Conn]:
        return WriteOp(kind, asyncio.get_running_loop().create_future(), **fields)

    async def write(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `fn` inside the next group-commit transaction; returns once it is committed."""
        result: T = await self._submit(self._op("call", fn=fn))
        return result

    async def complete_deliveries(self, completions: Sequence[Completion]) -> None:
        if not completions:
            return
        await self._submit(self._op("complete", completions=completions, size=len(completions)))

    async def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            size = first.size
            while size < self.batch_max:
                try:
                    nxt = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
                size += nxt.size
            await self._flush(batch)

    async def _flush(self, batch: list[WriteOp[Conn]]) -> None:
        raise NotImplementedError

    @staticmethod
    def _fail(batch: Sequence[WriteOp[Conn]], failure: BaseException) -> None:
        """The batch was not committed: every write in it that has no answer yet fails with `failure`."""
        metrics.STORE_COMMIT_FAILURES.inc()
        for op in batch:
            if not op.future.done():
                op.future.set_exception(failure)

    @staticmethod
    def _settle(
        batch: Sequence[WriteOp[Conn]],
        results: dict[WriteOp[Conn], Any],
        errors: dict[WriteOp[Conn], BaseException],
        started: float,
    ) -> None:
        """The batch is committed: answer each write with its result, or the error that rolled back its part."""
        metrics.STORE_COMMIT_BATCH_SIZE.observe(sum(op.size for op in batch))
        metrics.STORE_COMMIT_SECONDS.observe(time.perf_counter() - started)
        for op in batch:
            if op.future.done():
                continue
            if op in errors:
                op.future.set_exception(errors[op])
            else:
                op.future.set_result(results.get(op))
