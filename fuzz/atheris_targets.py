"""Coverage-guided fuzzing (atheris) of the two parsers that face the network: JSON ingest and BOD XML.

`make soak` runs each target for a fixed time (`-max_total_time`); hypothesis covers the same ground briefly
in `make test`. A target fails (and atheris prints the input) when anything other than the documented
refusals escapes: malformed JSON, a PayloadProblem, a BodError.

The JSON target takes half its inputs as raw bytes (what a broken sender posts) and builds the other half
as events: a valid event whose fields the fuzzer replaces, deletes or retypes, so that mutations reach the
schema validation and routing instead of stopping at the JSON parser.

    python fuzz/atheris_targets.py json -max_total_time=60
    python fuzz/atheris_targets.py bod -max_total_time=60
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports():
    import orjson

    from relay.config import SubscriberConfig
    from relay.ingest.bod import BodError, UnmappedDocument, map_bod, parse_bod
    from relay.ingest.pipeline import Candidate, PayloadProblem, Router, build_event, check_payload
    from relay.spec import builtin_spec_paths, load_specs

SPECS = load_specs(builtin_spec_paths())
ROUTER = Router(
    [
        SubscriberConfig.model_validate(
            {
                "name": "shop",
                "url": "https://shop.example.com/hooks",
                "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
                "channels": ["order/*", "inventory/*"],
                "filter": {"data.warehouse": ["MAIN", "EAST"]},
            }
        )
    ]
)
NOW = datetime(2026, 11, 22, tzinfo=UTC)


DOCUMENT_TYPES = sorted({dt for spec in SPECS.channels.values() for dt in spec.document_types})
_FIELDS = ["eventId", "documentType", "tenantId", "timestamp", "data", "entityKey", "version"]
_DATA_FIELDS = ["orderNumber", "customerNumber", "orderDate", "totalAmount", "partNumber", "warehouse", "onHand"]


def _fuzzed_value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> Any:
    kind = fdp.ConsumeIntInRange(0, 8 if depth < 2 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeInt(8)
    if kind == 3:
        return fdp.ConsumeRegularFloat()
    if kind == 4:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if kind == 5:
        return fdp.PickValueInList(DOCUMENT_TYPES)
    if kind == 6:
        return [_fuzzed_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    size = fdp.ConsumeIntInRange(0, 4)
    return {fdp.PickValueInList(_DATA_FIELDS): _fuzzed_value(fdp, depth + 1) for _ in range(size)}


def _fuzzed_event(data: bytes) -> bytes:
    """A valid event with fuzzer-chosen fields replaced, retyped or deleted, as JSON."""
    fdp = atheris.FuzzedDataProvider(data)
    payload = orjson.loads(fdp.PickValueInList(JSON_SEEDS))
    if isinstance(payload, dict):
        payload["documentType"] = fdp.PickValueInList(DOCUMENT_TYPES)
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        if not isinstance(payload, dict):
            break
        target = payload
        if fdp.ConsumeBool() and isinstance(payload.get("data"), dict):
            target = payload["data"]
        key = fdp.PickValueInList(_DATA_FIELDS if target is not payload else _FIELDS)
        if fdp.ConsumeIntInRange(0, 3) == 0:
            target.pop(key, None)
        else:
            target[key] = _fuzzed_value(fdp)
    return orjson.dumps(payload)


def json_target(data: bytes) -> None:
    if data[:1] and data[0] & 1:
        data = _fuzzed_event(data[1:])
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return
    channel = check_payload(SPECS, payload)
    if isinstance(channel, PayloadProblem):
        assert channel.status in (404, 422), channel
        channel.details_json()
        return
    event = build_event(Candidate(channel, payload), source="hub", received_at=NOW, payload_bytes=data)
    assert event.event_id
    ROUTER.plan(channel, payload)


def bod_target(data: bytes) -> None:
    try:
        bod = parse_bod(data)
        events = map_bod(bod, tenant_id="T", source_logical_id=None)
    except (BodError, UnmappedDocument):
        return
    for item in events:
        # As the IMS receiver does: validate the mapped payload, then build the stored event.
        if SPECS.has_channel(item.channel):
            SPECS.validate(item.channel, item.payload)
        candidate = Candidate(
            item.channel, item.payload, original=data, version=item.version, entity_key=item.entity_key
        )
        build_event(candidate, source="ion", received_at=NOW)


def seeds(kind: str) -> list[bytes]:
    """Valid inputs to start from: mutations of real events reach far deeper than random bytes."""
    if kind == "bod":
        from relay.sim.ion import BodFactory

        factory = BodFactory(seed=1)
        return [factory.next_bod().xml for _ in range(20)]
    sample = {
        "eventId": "evt-1",
        "documentType": "SyncSalesOrder",
        "tenantId": "HALLORAN",
        "timestamp": "2026-11-20T09:41:56Z",
        "data": {"orderNumber": "SO-1", "customerNumber": "C1001", "orderDate": "2026-11-20", "totalAmount": 120.5},
    }
    inventory = {
        "eventId": "evt-2",
        "documentType": "SyncInventory",
        "data": {"partNumber": "P-100", "warehouse": "MAIN", "onHand": 12, "available": 10},
    }
    return [orjson.dumps(sample), orjson.dumps(inventory), b"[]", b'{"eventId": null}']


JSON_SEEDS = seeds("json")


def main() -> None:
    targets = {"json": json_target, "bod": bod_target}
    if len(sys.argv) < 2 or sys.argv[1] not in targets:
        raise SystemExit(f"usage: {sys.argv[0]} json|bod [atheris options]")
    kind = sys.argv.pop(1)
    corpus = Path(tempfile.mkdtemp(prefix=f"relay-fuzz-{kind}-"))
    for n, seed in enumerate(seeds(kind)):
        (corpus / f"seed-{n}").write_bytes(seed)
    atheris.Setup([*sys.argv, "-max_len=65536", str(corpus)], targets[kind])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
