"""Every default X3 mapping yields data its channel's schema accepts; overrides replace fields."""

from __future__ import annotations

import pytest

from relay.poll.changes import FieldRule, RecordMapping, entity_key
from relay.poll.x3 import CLASSES
from relay.sim.x3 import X3Simulator
from relay.spec import builtin_spec_paths, load_specs

CHANNELS = {"BPCUSTOMER": "customer/synced", "ITMMASTER": "inventory/synced", "SORDER": "order/synced"}
SAMPLES = {
    "SINVOICE": {
        "NUM": "INV1",
        "BPR": "C1",
        "ACCDAT": "2026-11-20",
        "DUDDAT": "2026-12-20",
        "AMTATI": "12.5",
        "CUR": "GBP",
        "INVSTA": "Open",
        "UPDDATTIM": "2026-11-20T10:00:00Z",
    },
    "SDELIVERY": {
        "SDHNUM": "D1",
        "SOHNUM": "SO1",
        "BPCORD": "C1",
        "SHIDAT": "2026-11-21",
        "SDHSTA": "Shipped",
        "BPTNUM": "DHL",
        "UPDDATTIM": "2026-11-20T10:00:00Z",
    },
}
SAMPLE_CHANNELS = {"SINVOICE": "invoice/synced", "SDELIVERY": "delivery/synced"}


@pytest.mark.parametrize("cls", sorted(CHANNELS))
def test_simulated_records_map_to_valid_events(cls: str) -> None:
    specs = load_specs(builtin_spec_paths())
    sim = X3Simulator(seed=2)
    sim.seed_records(cls, 10)
    for record in sim.records[cls].values():
        data = CLASSES[cls].mapping.data(record)
        payload = {
            "eventId": "e",
            "documentType": specs.channels[CHANNELS[cls]].document_type,
            "timestamp": "2026-11-20T10:00:00Z",
            "tenantId": "ALDGATE",
            "data": data,
        }
        assert specs.validate(CHANNELS[cls], payload) == []
        assert entity_key(CHANNELS[cls], data)


@pytest.mark.parametrize("cls", sorted(SAMPLES))
def test_invoice_and_delivery_mappings(cls: str) -> None:
    specs = load_specs(builtin_spec_paths())
    channel = SAMPLE_CHANNELS[cls]
    data = CLASSES[cls].mapping.data(SAMPLES[cls])
    payload = {
        "eventId": "e",
        "documentType": specs.channels[channel].document_type,
        "timestamp": "2026-11-20T10:00:00Z",
        "tenantId": "ALDGATE",
        "data": data,
    }
    assert specs.validate(channel, payload) == []
    assert entity_key(channel, data)


def test_override_replaces_one_field() -> None:
    mapping = RecordMapping.parse({"fields": {"customerName": "BPCSHO"}}, defaults=CLASSES["BPCUSTOMER"].mapping)
    assert mapping.fields["customerName"] == FieldRule("BPCSHO")
    assert mapping.data({"BPCNUM": "C1", "BPCSHO": "Short"}) == {"customerNumber": "C1", "customerName": "Short"}
