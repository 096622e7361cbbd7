"""What every polled source provides: pages of records, and a way to list them all."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from relay.poll.changes import RecordMapping

__all__ = ["Fetcher", "Page", "PollError", "ResourceSpec"]


class PollError(Exception):
    """A poll request failed. `retry_after_s` from a 429/503; `permission` for 401/403 (check-config --probe)."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None, permission: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s
        self.permission = permission


@dataclass(frozen=True, slots=True)
class Page:
    """Records of one request and the opaque cursor of the next page (None: this was the last one)."""

    records: Sequence[Mapping[str, Any]]
    next_cursor: str | None = None


@dataclass(frozen=True)
class ResourceSpec:
    """One polled resource of a source, as the engine needs it."""

    name: str
    channel: str
    mapping: RecordMapping
    document_type: str
    every_s: float
    jitter: float = 0.1
    reconcile_every_s: float | None = None
    deleted_channel: str | None = None
    deleted_document_type: str | None = None
    tenant_id: str | None = None
    logical_id: str | None = None
    page_size: int = 100
    cron: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


class Fetcher(Protocol):
    """A source's API. Implementations raise PollError for every failure they can name."""

    async def changes(self, resource: ResourceSpec, *, since: str | None, cursor: str | None) -> Page:
        """Records updated at or after `since` (None: all), continuing from `cursor`."""
        ...

    async def listing(self, resource: ResourceSpec, *, cursor: str | None) -> Page:
        """Every current record (for deletion detection), continuing from `cursor`."""
        ...

    async def close(self) -> None: ...

    @property
    def token_expires_at(self) -> datetime | None:
        """When the access token the source's requests carry now expires (aware UTC), for operators: None
        while there is none yet, and always for credentials without one (basic, a static bearer)."""
        ...
