"""Schema drift rules: observed shapes of raw records and BODs, and what counts as added, removed, retyped."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from relay.ingest.bod import parse_bod
from relay.onboarding.drift import (
    Retype,
    compare_shape,
    drift_event_id,
    drift_payload,
    observe_bods,
    observe_records,
    sample_of,
)
from relay.spec import builtin_spec_paths, load_specs

BASE = {"ITMREF": "string", "PHYSTO": "number", "ZLEAD": "null"}


@pytest.mark.parametrize(
    ("records", "full", "added", "removed", "retyped", "shape"),
    [
        # Same fields and types: nothing.
        ([{"ITMREF": "A", "PHYSTO": 5, "ZLEAD": None}], False, [], [], [], BASE),
        # 5 and 5.5 are both numbers.
        ([{"ITMREF": "A", "PHYSTO": 5.5, "ZLEAD": None}], True, [], [], [], BASE),
        # A field that was only null learns its type silently.
        ([{"ITMREF": "A", "PHYSTO": 5, "ZLEAD": 3}], True, [], [], [], {**BASE, "ZLEAD": "number"}),
        # A new field.
        ([{"ITMREF": "A", "PHYSTO": 5, "ZLEAD": None, "ZNEW": True}], False, ["ZNEW"], [], [],
         {**BASE, "ZNEW": "boolean"}),
        # A type replaced entirely.
        ([{"ITMREF": "A", "PHYSTO": "5", "ZLEAD": None}], False, [], [], [Retype("PHYSTO", "number", "string")],
         {**BASE, "PHYSTO": "string"}),
        # A type seen beside the known one widens it.
        ([{"ITMREF": "A", "PHYSTO": "5", "ZLEAD": None}, {"ITMREF": "B", "PHYSTO": 1}], False, [], [],
         [Retype("PHYSTO", "number", "number|string")], {**BASE, "PHYSTO": "number|string"}),
        # A null value is present, not removed; a field missing from a partial page is not removed.
        ([{"ITMREF": "A", "PHYSTO": None}], False, [], [], [], BASE),
        # Missing from every record of a full page: removed.
        ([{"ITMREF": "A", "PHYSTO": None}, {"ITMREF": "B"}], True, [], ["ZLEAD"], [],
         {"ITMREF": "string", "PHYSTO": "number"}),
        # Missing from one record of a full page only (sparse): kept.
        ([{"ITMREF": "A", "ZLEAD": None}, {"ITMREF": "B", "PHYSTO": 1}], True, [], [], [], BASE),
        # Nested objects by dotted path.
        ([{"ITMREF": "A", "PHYSTO": 1, "ZLEAD": None, "site": {"code": "X"}}], False, ["site.code"], [], [],
         {**BASE, "site.code": "string"}),
    ],
)  # fmt: skip
def test_compare_with_a_known_shape(
    records: list[dict[str, Any]],
    full: bool,
    added: list[str],
    removed: list[str],
    retyped: list[Retype],
    shape: dict[str, str],
) -> None:
    change = compare_shape(BASE, observe_records(records), full=full)
    assert (change.added, change.removed, change.retyped) == (added, removed, retyped)
    assert change.shape == shape
    assert change.drift == bool(added or removed or retyped)
    assert not change.baseline


def test_the_first_shape_is_a_baseline_and_an_empty_page_changes_nothing() -> None:
    first = compare_shape(None, observe_records([{"A": 1, "B": None}]), full=True)
    assert first.baseline
    assert not first.drift
    assert first.shape == {"A": "number", "B": "null"}
    assert compare_shape(None, {}, full=True).shape == {}
    empty = compare_shape(BASE, {}, full=True)
    assert empty.shape == BASE
    assert not empty.drift


def test_the_event_id_follows_the_new_shape_only() -> None:
    one = drift_event_id("x3", "ITMMVT", {"A": "number", "B": "string"})
    assert one == drift_event_id("x3", "ITMMVT", {"B": "string", "A": "number"})
    assert one != drift_event_id("x3", "ITMMVT", {"A": "string", "B": "string"})
    assert one != drift_event_id("x3", "BPCUSTOMER", {"A": "number", "B": "string"})


def test_the_payload_is_a_valid_schema_drift_event() -> None:
    change = compare_shape(BASE, observe_records([{"ITMREF": "A", "PHYSTO": "5", "ZLEAD": None, "Z": 1}]), full=False)
    payload = drift_payload("x3", "ITMMVT", change, detected_at=datetime(2026, 12, 2, 9, tzinfo=UTC), sample_key="A")
    assert payload["data"] == {
        "source": "x3",
        "resource": "ITMMVT",
        "added": ["Z"],
        "removed": [],
        "retyped": [{"field": "PHYSTO", "from": "number", "to": "string"}],
        "detectedAt": "2026-12-02T09:00:00.000Z",
        "sampleKey": "A",
    }
    assert load_specs(builtin_spec_paths()).validate("relay/drift", payload) == []


def test_sample_of_names_the_first_record_with_a_changed_field() -> None:
    records = [{"A": 1}, {"A": 2, "Z": 1}, {"Z": 2}]
    assert sample_of(records, ["Z"]) == 1
    assert sample_of(records, ["Q"]) is None


BOD = b"""<SyncSalesOrder xmlns="http://schema.infor.com/InforOAGIS/2"><ApplicationArea><BODID>x</BODID>
</ApplicationArea><DataArea><Sync/><SalesOrder><SalesOrderHeader><DocumentID><ID variationID="5">SO1</ID>
</DocumentID><Note/></SalesOrderHeader><SalesOrderLine><Quantity unitCode="EA">2</Quantity></SalesOrderLine>
<SalesOrderLine><Quantity unitCode="EA">3</Quantity></SalesOrderLine></SalesOrder></DataArea></SyncSalesOrder>"""


def test_bod_element_paths_relative_to_the_noun() -> None:
    seen = observe_bods(parse_bod(BOD).noun_elements)
    assert seen == {
        "SalesOrderHeader/DocumentID/ID/@variationID": {"string"},
        "SalesOrderHeader/DocumentID/ID": {"string"},
        "SalesOrderHeader/Note": {"string"},
        "SalesOrderLine/Quantity/@unitCode": {"string"},
        "SalesOrderLine/Quantity": {"string"},
    }
