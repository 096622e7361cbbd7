"""The pure parts of `relay discover` for ion-ims sources: guessed values, mapped paths, the draft."""

from __future__ import annotations

import re
from typing import Any

import pytest

from relay.ingest.bod import DEFAULT_MAPPINGS, parse_bod
from relay.onboarding.bod_discover import bod_record, guess_value, ion_draft, mapped_paths
from relay.onboarding.discover import DEFAULT_MASK
from relay.spec import builtin_spec_paths, load_specs


@pytest.mark.parametrize(
    ("text", "value"),
    [("", None), ("42", 42), ("-3", -3), ("0", 0), ("0042", "0042"), ("2.50", 2.5), ("1e5", "1e5"),
     ("SO-1", "SO-1"), ("12345678901234567", "12345678901234567")],
)  # fmt: skip
def test_guess_value(text: str, value: Any) -> None:
    assert guess_value(text) == value


def test_mapped_paths_are_relative_to_the_noun_without_predicates() -> None:
    customer = mapped_paths(DEFAULT_MAPPINGS["Sync.CustomerPartyMaster"])
    assert {"PartyIDs/ID", "PartyIDs/ID/@variationID", "Communication/URI", "Location/Address/CityName"} <= customer
    balance = mapped_paths(DEFAULT_MAPPINGS["Sync.ItemBalance"])
    assert {
        "ItemBalanceLine/ItemID/ID",
        "ItemBalanceLine/OnHandQuantity/@unitCode",
        "ItemBalanceHeader/DocumentID/ID",
    } <= balance
    assert not any(p.startswith("bod:") or "[" in p for p in customer | balance)


BOD = b"""<SyncSalesOrder><DataArea><Sync/><SalesOrder><SalesOrderHeader><DocumentID><ID variationID="2">SO9</ID>
</DocumentID><OrderDateTime>2026-11-20T08:00:00Z</OrderDateTime><ShipFromParty><Location><ID>MAIN</ID></Location>
</ShipFromParty><Item><ItemID><ID>P1</ID></ItemID></Item><UserArea><LeadTimeDays>4</LeadTimeDays></UserArea></SalesOrderHeader><SalesOrderLine>
<Quantity unitCode="EA">3</Quantity></SalesOrderLine></SalesOrder></DataArea></SyncSalesOrder>"""


def test_the_draft_proposes_the_default_mapping_and_suggests_the_rest() -> None:
    records = [bod_record(n) for n in parse_bod(BOD).noun_elements]
    assert records[0]["SalesOrderHeader/UserArea/LeadTimeDays"] == 4
    schema = load_specs(builtin_spec_paths()).channels["order/synced"].payload_schema
    draft = ion_draft("Sync.SalesOrder", DEFAULT_MAPPINGS["Sync.SalesOrder"], schema, records, re.compile(DEFAULT_MASK))
    assert (draft.key, draft.name, draft.channel, draft.sampled) == ("document", "Sync.SalesOrder", "order/synced", 1)
    proposed = {p.canonical: (p.path, p.how) for p in draft.proposals}
    assert proposed["orderNumber"] == ("SalesOrderHeader/DocumentID/ID", "default")
    assert proposed["lineCount"] == ("SalesOrderLine", "default")
    assert {c.path: c.suggestion for c in draft.custom} == {
        "SalesOrderHeader/ShipFromParty/Location/ID": "extensions.locationID",
        "SalesOrderHeader/Item/ItemID/ID": "extensions.itemID",
        "SalesOrderHeader/UserArea/LeadTimeDays": "extensions.leadTimeDays",
        "SalesOrderLine/Quantity/@unitCode": "extensions.quantityUnitCode",
        "SalesOrderLine/Quantity": "extensions.quantity",
    }


def test_a_document_without_a_mapping_lists_its_fields_only() -> None:
    records = [bod_record(n) for n in parse_bod(BOD).noun_elements]
    draft = ion_draft("Sync.SalesOrder", None, None, records, re.compile(DEFAULT_MASK))
    assert (draft.channel, draft.proposals, draft.custom) == ("(no mapping)", [], [])
    assert len(draft.fields) == 8
