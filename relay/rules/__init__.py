"""Derived events: rules that turn streams of changes into the few events that matter (low stock, restored).

A rule watches one channel and keeps, per entity key, whether it has fired: it emits `emit` once when `when`
becomes true, and `emit_clear` once when `clear_when` (default: `when` no longer holds) becomes true after
that. The store runs the rules inside the transaction that stores their triggering events and keeps the
per-key state there too, so restarts and replays never emit twice; derived event ids are the rule name and
the triggering event id, so a redelivered trigger derives a duplicate, not a new event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import structlog

from relay.config import Config, RuleConfig
from relay.events import KEY_FIELDS, MAX_EVENT_ID_LENGTH, Event, format_ts
from relay.rules.cel import Condition, compile_condition
from relay.spec import SpecRegistry
from relay.store.base import DeliveryPlan, Derivation, NewEvent, RuleState

__all__ = ["RuleEngine", "Transition", "decide", "derived_event_id", "rule_problems"]

log = structlog.get_logger(__name__)

Transition = Literal["fire", "clear", "stay"]
Planner = Callable[[str, Mapping[str, Any]], list[DeliveryPlan]]

# The documentType of the shipped alert channels; another channel a rule emits takes its name in CamelCase.
_DOCUMENT_TYPES = {"inventory/low-stock": "InventoryLowStock", "inventory/stock-restored": "InventoryStockRestored"}


def decide(active: bool, fires: bool | None, clears: bool | None) -> Transition:
    """The edge a rule takes for one new event of a key (pure).

    Args:
        active: the rule has fired for this key and not cleared since.
        fires: `when` over the event (None: could not be evaluated, e.g. a missing field).
        clears: `clear_when` over the event; without `clear_when`, pass `not fires`.

    Returns:
        "fire" on the edge into the condition, "clear" on the edge out of it, else "stay". An expression that
        cannot be evaluated never moves the rule.
    """
    if not active:
        return "fire" if fires is True else "stay"
    return "clear" if clears is True else "stay"


def derived_event_id(rule: str, trigger_event_id: str) -> str:
    """`{rule}.{trigger}`: the same trigger always derives the same id; too long ones use the trigger's digest."""
    plain = f"{rule}.{trigger_event_id}"
    if len(plain) <= MAX_EVENT_ID_LENGTH:
        return plain
    return f"{rule}.sha256-{hashlib.sha256(trigger_event_id.encode()).hexdigest()}"


def _document_type(channel: str) -> str:
    known = _DOCUMENT_TYPES.get(channel)
    if known:
        return known
    return "".join(part.capitalize() for part in channel.replace("-", "/").split("/"))


def rule_problems(config: Config, specs: SpecRegistry) -> list[str]:
    """Rules whose channels the loaded specs lack (what the models cannot check on their own)."""
    problems: list[str] = []
    for rule in config.rules:
        if not specs.has_channel(rule.on):
            problems.append(f"rules[{rule.name}].on: channel {rule.on!r} is not in the loaded specs")
        for field_name in ("emit", "emit_clear"):
            channel = getattr(rule, field_name)
            if channel is not None and not specs.has_channel(channel):
                problems.append(f"rules[{rule.name}].{field_name}: channel {channel!r} is not in the loaded specs")
    return problems


@dataclass(frozen=True, slots=True)
class _Rule:
    config: RuleConfig
    when: Condition
    clear_when: Condition | None


class RuleEngine:
    """The configured rules as the store's `Deriver`: pure evaluation over events and stored rule states.

    Args:
        rules: the `rules:` of the configuration (already validated).
        specs: channel schemas; a derived payload is checked against its channel before it is emitted.
        plan: the delivery fan-out of a channel and payload (the ingest router's `plan`).
    """

    def __init__(self, rules: Sequence[RuleConfig], specs: SpecRegistry, plan: Planner) -> None:
        self._by_channel: dict[str, list[_Rule]] = {}
        for cfg in rules:
            rule = _Rule(
                cfg, compile_condition(cfg.when), compile_condition(cfg.clear_when) if cfg.clear_when else None
            )
            self._by_channel.setdefault(cfg.on, []).append(rule)
        self._channels = frozenset(self._by_channel)
        self.specs = specs
        self.plan = plan

    @property
    def channels(self) -> frozenset[str]:
        return self._channels

    def derive(self, events: Sequence[Event], states: dict[tuple[str, str], RuleState]) -> Derivation:
        """Evaluate the rules over `events` in order; an event older than the key's last evaluated one is skipped."""
        derived: list[NewEvent] = []
        changed: dict[tuple[str, str], RuleState] = {}
        for ev in events:
            rules = self._by_channel.get(ev.channel)
            if not rules or ev.entity_key is None:
                continue
            try:
                payload = orjson.loads(ev.payload)
            except orjson.JSONDecodeError:
                continue
            data = payload.get("data") if isinstance(payload, dict) else None
            variables = {
                "data": data if isinstance(data, dict) else {},
                "event": payload,
                "channel": ev.channel,
                "key": ev.entity_key,
            }
            order = ev.version_order
            for rule in rules:
                name = rule.config.name
                prior = changed.get((name, ev.entity_key)) or states.get((name, ev.entity_key))
                if prior is not None and order < prior.version_order:
                    continue  # an older version arriving late does not move the rule
                active = prior.active if prior is not None else False
                fires = rule.when.holds(variables)
                clears = rule.clear_when.holds(variables) if rule.clear_when else (None if fires is None else not fires)
                step = decide(active, fires, clears)
                if step == "fire":
                    active = True
                    derived.extend(self._emit(rule, rule.config.emit, rule.when.text, ev, variables["data"]))
                elif step == "clear":
                    active = False
                    if rule.config.emit_clear:
                        threshold = rule.clear_when.text if rule.clear_when else f"!({rule.when.text})"
                        derived.extend(self._emit(rule, rule.config.emit_clear, threshold, ev, variables["data"]))
                changed[(name, ev.entity_key)] = RuleState(name, ev.entity_key, active, order, ev.event_id)
        return Derivation(events=derived, states=list(changed.values()))

    def _emit(
        self, rule: _Rule, channel: str, threshold: str, trigger: Event, data: Mapping[str, Any]
    ) -> list[NewEvent]:
        fields = KEY_FIELDS.get(channel.partition("/")[0], ())
        body: dict[str, Any] = {f: data[f] for f in fields if f in data}
        body["key"] = trigger.entity_key
        if "available" in data:
            body["available"] = data["available"]
        body.update(threshold=threshold, triggeringEventId=trigger.event_id, rule=rule.config.name)
        payload: dict[str, Any] = {
            "eventId": derived_event_id(rule.config.name, trigger.event_id),
            "documentType": _document_type(channel),
            "timestamp": format_ts(trigger.occurred_at),
            "data": body,
        }
        if trigger.tenant_id is not None:
            payload["tenantId"] = trigger.tenant_id
        issues = self.specs.validate(channel, payload) if self.specs.has_channel(channel) else []
        if issues:
            log.error(
                "derived event does not match its channel's schema; not emitted",
                rule=rule.config.name,
                channel=channel,
                problem=f"{issues[0].path}: {issues[0].message}",
            )
            return []
        event = Event(
            event_id=payload["eventId"],
            channel=channel,
            source=f"rule:{rule.config.name}",
            tenant_id=trigger.tenant_id,
            entity_key=trigger.entity_key,
            version=trigger.version,
            occurred_at=trigger.occurred_at,
            received_at=trigger.received_at,
            payload=orjson.dumps(payload),
        )
        return [NewEvent(event, self.plan(channel, payload), track_state=False)]
