"""The live state shared by HTTP handlers and workers; swapped piecewise on reload."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web

from relay import metrics
from relay.config import Config, SourceConfig
from relay.ingest.pipeline import Ingestor
from relay.routing import Router
from relay.spec import SpecRegistry
from relay.store import Store, create_store

if TYPE_CHECKING:
    # The dispatcher is built from a Runtime: a type-only import, so no import circle at run time.
    from relay.deliver.dispatcher import Dispatcher
    from relay.ingest.ion_confirm import ConfirmSender
    from relay.poll.scheduler import PollScheduler

__all__ = ["RUNTIME", "Runtime", "open_configured_store"]


def open_configured_store(config: Config) -> Store:
    """An unopened store with the configured URL and settings, as `relay serve` and the CLI use it.

    Raises:
        ValueError: an unsupported store URL.
    """
    return create_store(
        config.store.url,
        synchronous=config.store.synchronous,
        batch_max=config.store.batch_max,
        busy_timeout_s=config.store.busy_timeout_s,
        quarantine_max_bytes=config.quarantine.max_bytes,
    )


@dataclass(eq=False)
class Runtime:
    config: Config
    store: Store
    specs: SpecRegistry
    ingestor: Ingestor
    draining: bool = False
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Set by the daemon once the delivery engine runs; the admin API reads it.
    dispatcher: Dispatcher | None = None
    # Set by the daemon when an ion-ims source sends ConfirmBODs; woken when one is queued.
    confirms: ConfirmSender | None = None
    # Set by the daemon once polling runs; the console reads each resource's health from it.
    poller: PollScheduler | None = None
    # Every ingest request looks its source up by name: a dict, rebuilt when the config is swapped.
    _sources: dict[str, SourceConfig] = field(default_factory=dict, init=False, repr=False)
    _sources_of: Config | None = field(default=None, init=False, repr=False)

    @classmethod
    def build(cls, config: Config, store: Store, specs: SpecRegistry) -> Runtime:
        metrics.register_config(config, specs)
        runtime = cls(config=config, store=store, specs=specs, ingestor=Ingestor(store, Router(config.subscribers)))
        runtime._apply_rules()
        return runtime

    def _apply_rules(self) -> None:
        """Give the store the configured derived-event rules (none: the store skips them entirely)."""
        from relay.rules import RuleEngine

        router = self.ingestor.router
        self.store.set_deriver(RuleEngine(self.config.rules, self.specs, router.plan) if self.config.rules else None)

    def source(self, name: str) -> SourceConfig | None:
        if self._sources_of is not self.config:
            self._sources = {s.name: s for s in self.config.sources}
            self._sources_of = self.config
        return self._sources.get(name)

    def apply_config(self, config: Config, specs: SpecRegistry) -> None:
        """Take a new, already validated configuration (reload)."""
        metrics.register_config(config, specs)
        self.config = config
        self.specs = specs
        self.ingestor.router = Router(config.subscribers)
        self._apply_rules()


RUNTIME = web.AppKey("runtime", Runtime)
