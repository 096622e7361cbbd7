"""`relay quarantine retry`: run a quarantined input through its source's checks again (after a spec or
mapping fix) and, when it passes now, store it and forget the quarantine entry."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import orjson

from relay.config import Config, IonImsSource, JsonPushSource
from relay.ingest.pipeline import Candidate, Ingestor, PayloadProblem, check_payload
from relay.routing import Router
from relay.spec import SpecRegistry
from relay.store import IngestOutcome, Store

__all__ = ["RequeueResult", "requeue"]


@dataclass
class RequeueResult:
    ok: bool
    problems: list[str] = field(default_factory=list)
    outcomes: list[IngestOutcome] = field(default_factory=list)


async def requeue(store: Store, specs: SpecRegistry, config: Config, quarantine_id: int) -> RequeueResult:
    """Re-check quarantine entry `quarantine_id`; commit it and delete the entry when it passes.

    Raises:
        KeyError: no such entry.
    """
    row = await store.get_quarantine(quarantine_id)
    if row is None or row.body is None:
        raise KeyError(quarantine_id)
    source = config.source(row.source)
    candidates: list[Candidate] = []
    if isinstance(source, IonImsSource) or (row.content_type or "").endswith("xml"):
        from relay.ingest.bod import BodError, parse_bod, parse_mapping_overrides
        from relay.ingest.bod_events import ImsContext, bod_candidates

        # The IMS parameters kept with the entry make the ids those of a live redelivery of the same BOD.
        context = ImsContext.from_details(row.details) or ImsContext()
        if context.tenant_id is None and isinstance(source, IonImsSource):
            context = replace(context, tenant_id=source.tenant_id)
        try:
            candidates, problems = bod_candidates(
                parse_bod(row.body),
                row.body,
                context,
                mappings=parse_mapping_overrides(source.mappings if isinstance(source, IonImsSource) else {}),
                specs=specs,
            )
        except BodError as exc:
            return RequeueResult(False, [str(exc)])
        if problems:
            return RequeueResult(False, problems)
    else:
        try:
            payload = orjson.loads(row.body)
        except orjson.JSONDecodeError as exc:
            return RequeueResult(False, [f"not valid JSON: {exc}"])
        allowed = source.channels if isinstance(source, JsonPushSource) else None
        checked = check_payload(specs, payload, path_channel=row.channel, allowed_channels=allowed, raw=row.body)
        if isinstance(checked, PayloadProblem):
            return RequeueResult(False, [f"{d.path}: {d.message}" for d in checked.details])
        candidates = [Candidate(checked, payload)]
    outcomes = await Ingestor(store, Router(config.subscribers)).commit(
        row.source, candidates, received_at=datetime.now(UTC)
    )
    await store.delete_quarantine(quarantine_id)
    return RequeueResult(True, outcomes=outcomes)
