"""Polling of sources that publish no events (Sage X3, Infor SX.e, any JSON API)."""

from __future__ import annotations

import importlib

# Modules that register a builder in `relay.poll.scheduler.BUILDERS` when imported.
_SOURCE_MODULES = ("relay.poll.x3", "relay.poll.sxe")


def load_builders() -> None:
    """Import every source kind that is installed (each registers its builder)."""
    for name in _SOURCE_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
