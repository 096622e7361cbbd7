"""The edge of drift and source-health: turn the pure decisions into validated events, commit, count, log.

The poll engine commits a page's drift event and new shape with the page itself (`PollCommit.shape`); an
IMS push and a health transition commit through `Store.commit_observation`. Either way the observation and
its event are one transaction, and the event ids are deterministic, so neither a crash nor a restart
announces a change twice.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from xml.etree.ElementTree import Element

import structlog

from relay import metrics
from relay.ingest.pipeline import Candidate, build_event
from relay.onboarding.drift import DRIFT_CHANNEL, Shape, ShapeChange, compare_shape, drift_payload, observe_bods
from relay.onboarding.health import HEALTH_CHANNEL, Failure, HealthState, Transition, health_payload, health_step
from relay.routing import Router
from relay.spec import SpecRegistry
from relay.store import NewEvent, Store

log = structlog.get_logger(__name__)

__all__ = [
    "announce_drift",
    "drift_event",
    "load_shape",
    "observe_bod_push",
    "record_health",
    "relay_event",
    "remember_shape",
]

SHAPE = "shape"
HEALTH = "health"

# The last shape committed per store, source and resource: an IMS push compares in memory instead of reading
# the store each time. Another process's newer shape only makes this one re-announce the same change, which
# has the same event id and is a duplicate.
_shapes: weakref.WeakKeyDictionary[Store, dict[tuple[str, str], Shape]] = weakref.WeakKeyDictionary()


def relay_event(
    specs: SpecRegistry,
    router: Router,
    *,
    source: str,
    channel: str,
    payload: Mapping[str, Any],
    entity_key: str,
    now: datetime,
) -> NewEvent | None:
    """A relay-made event validated against its channel and routed like any other; None (logged) when the
    loaded specs lack the channel or refuse the payload, so a misconfigured spec never blocks a poll."""
    if not specs.has_channel(channel):
        log.error("channel missing from the loaded specs; no event", channel=channel)
        return None
    if issues := specs.validate(channel, payload):
        log.error("relay event does not match its spec; no event", channel=channel, problem=str(issues[0]))
        return None
    event = build_event(Candidate(channel, payload, entity_key=entity_key), source=source, received_at=now)
    return NewEvent(event, router.plan(channel, payload), track_state=False)


async def load_shape(store: Store, source: str, resource: str) -> Shape | None:
    """The shape kept for a resource (None before its first page)."""
    cached = _shapes.get(store, {}).get((source, resource))
    if cached is not None:
        return cached
    value = await store.get_observation(source, resource, SHAPE)
    shape = {str(k): str(v) for k, v in value.items()} if value is not None else None
    if shape is not None:
        _shapes.setdefault(store, {})[(source, resource)] = shape
    return shape


def remember_shape(store: Store, source: str, resource: str, shape: Shape) -> None:
    """Note a shape the caller has just committed."""
    _shapes.setdefault(store, {})[(source, resource)] = dict(shape)


def drift_event(
    specs: SpecRegistry,
    router: Router,
    *,
    source: str,
    resource: str,
    change: ShapeChange,
    now: datetime,
    sample_key: str | None,
    tenant_id: str | None = None,
) -> NewEvent | None:
    """The `relay/drift` event of a change (`resource` as shown to subscribers)."""
    payload = drift_payload(source, resource, change, detected_at=now, sample_key=sample_key, tenant_id=tenant_id)
    return relay_event(
        specs, router, source=source, channel=DRIFT_CHANNEL, payload=payload, entity_key=f"{source}|{resource}", now=now
    )


def announce_drift(source: str, resource: str, change: ShapeChange, *, sample_key: str | None) -> None:
    """Count and log a drift that was just committed."""
    metrics.labelled(metrics.SOURCE_DRIFT, source, resource).inc()
    log.warning(
        "schema drift",
        source=source,
        resource=resource,
        added=change.added,
        removed=change.removed,
        retyped=[f"{r.field}: {r.from_} → {r.to}" for r in change.retyped],
        sample_key=sample_key,
    )


async def observe_bod_push(
    store: Store,
    specs: SpecRegistry,
    router: Router,
    *,
    source: str,
    noun: str,
    noun_elements: Iterable[Element],
    sample_key: str | None,
    now: datetime,
    tenant_id: str | None = None,
) -> ShapeChange:
    """Compare a pushed BOD's element paths with the noun's shape; commit a new shape and its drift event.

    One BOD is never a full page, so pushes report added paths only (every XML value is text: no retypes).

    Raises:
        StoreUnavailable: the observation could not be read or committed.
    """
    previous = await load_shape(store, source, noun)
    change = compare_shape(previous, observe_bods(noun_elements), full=False)
    if change.shape == previous:
        return change
    events: Sequence[NewEvent] = ()
    if change.drift:
        event = drift_event(specs, router, source=source, resource=noun, change=change, now=now,
                            sample_key=sample_key, tenant_id=tenant_id)  # fmt: skip
        events = [event] if event is not None else []
    await store.commit_observation(source, noun, SHAPE, change.shape, events)
    remember_shape(store, source, noun, change.shape)
    if change.drift:
        metrics.register_known(resources=[noun])  # a noun of a document the source accepts: bounded by config
        announce_drift(source, noun, change, sample_key=sample_key)
    return change


async def record_health(
    store: Store,
    specs: SpecRegistry,
    router: Router,
    *,
    source: str,
    resource: str,
    label: str,
    state: HealthState | None,
    failure: Failure | None,
    now: datetime,
    failures_before_failing: int,
    tenant_id: str | None = None,
) -> tuple[HealthState, Transition | None]:
    """Apply one poll's outcome to a resource's health (`state` None: read it from the store first), commit
    what changed with its `relay/source-health` event, and return the new state and the transition.

    `resource` is the store's name of the resource, `label` the one events and logs show (no URL secrets).
    Nothing is written while a resource keeps succeeding.

    Raises:
        StoreUnavailable: the state could not be read or committed (the caller keeps the old state).
    """
    if state is None:
        state = HealthState.from_json(await store.get_observation(source, resource, HEALTH))
    after, transition = health_step(state, failure, now, failures_before_failing=failures_before_failing)
    if failure is None and state.failures == 0 and not state.failing:
        return after, None
    events: list[NewEvent] = []
    if transition is not None:
        payload = health_payload(source, label, transition, now=now, tenant_id=tenant_id)
        event = relay_event(specs, router, source=source, channel=HEALTH_CHANNEL, payload=payload,
                            entity_key=f"{source}|{label}", now=now)  # fmt: skip
        events = [event] if event is not None else []
    await store.commit_observation(source, resource, HEALTH, after.to_json(), events)
    if transition is not None:
        log_at = log.warning if transition.state == "failing" else log.info
        log_at(
            "source " + transition.state,
            source=source,
            resource=label,
            failures=transition.failures,
            since=transition.since.isoformat(),
            error=transition.last_error,
        )
    return after, transition
