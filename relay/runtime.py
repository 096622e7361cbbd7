"""The live state shared by HTTP handlers and workers; swapped piecewise on reload."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from relay.config import Config, SourceConfig
from relay.ingest.pipeline import Ingestor, Router
from relay.spec import SpecRegistry
from relay.store import Store

__all__ = ["RUNTIME", "Runtime"]


@dataclass(eq=False)
class Runtime:
    config: Config
    store: Store
    specs: SpecRegistry
    ingestor: Ingestor
    draining: bool = False
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Set by the daemon once the delivery engine runs; the admin API reads it.
    dispatcher: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, config: Config, store: Store, specs: SpecRegistry) -> Runtime:
        return cls(config=config, store=store, specs=specs, ingestor=Ingestor(store, Router(config.subscribers)))

    def source(self, name: str) -> SourceConfig | None:
        return self.config.source(name)

    def apply_config(self, config: Config, specs: SpecRegistry) -> None:
        """Take a new, already validated configuration (reload)."""
        self.config = config
        self.specs = specs
        self.ingestor.router = Router(config.subscribers)


RUNTIME = web.AppKey("runtime", Runtime)
