"""ConfirmBOD rules and shapes; the public ION samples of tests/fixtures/ion/ through the relay and the simulator."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from relay.auth.ionapi import load_ionapi
from relay.config import IonImsSource
from relay.ingest.bod import map_bod, parse_bod
from relay.ingest.bod_events import ImsContext
from relay.ingest.ion_confirm import (
    Refused,
    build_confirm_bod,
    confirm_bod_id,
    confirm_parameters,
    plan_confirm,
    wants_confirm,
)
from relay.sim.ion import check_confirm_bod, read_ims_message
from relay.spec import builtin_spec_paths, load_specs

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ion"
NOW = datetime(2026, 11, 20, 9, 42, 3, tzinfo=UTC)
RELAY_LID = "lid://infor.erp-relay.relay"


@pytest.mark.parametrize(
    ("code", "on", "expected"),
    [
        ("OnError", ["OnError", "Always"], True),
        ("Always", ["OnError", "Always"], True),
        ("Never", ["OnError", "Always"], False),
        (None, ["OnError", "Always"], False),
        ("", ["OnError"], False),
        (" OnError ", ["OnError"], True),
        ("Always", ["OnError"], False),
        ("OnError", ["Always"], False),
        ("onerror", ["OnError"], False),
    ],
)
def test_wants_confirm(code: str | None, on: list[str], expected: bool) -> None:
    assert wants_confirm(code, on) is expected


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        (
            "infor-nid:default:entity:1:9876:1?SalesOrder&verb=Process&variationID=24",
            "infor-nid:default:entity:1:9876:1?SalesOrder&verb=Confirm&variationID=24&sequence=1",
        ),
        (
            "infor-nid:TEST_TST:3555:S_350:PSU000049:?PurchaseOrder&verb=Sync",
            "infor-nid:TEST_TST:3555:S_350:PSU000049:?PurchaseOrder&verb=Confirm&sequence=1",
        ),
        ("no-verb-here", "infor-nid:erp-relay:m-1?BOD&verb=Confirm"),
        (None, "infor-nid:erp-relay:m-1?BOD&verb=Confirm"),
    ],
)
def test_confirm_bod_id_follows_the_ln_rule(original: str | None, expected: str) -> None:
    assert confirm_bod_id(original, "m-1") == expected


def _sample() -> bytes:
    return (FIXTURES / "sync_salesorder.xml").read_bytes()


def test_the_public_sync_sample_maps_to_an_order_event() -> None:
    bod = parse_bod(_sample())
    assert (bod.document_name, bod.confirmation_code) == ("Sync.SalesOrder", "OnError")
    events = map_bod(bod, tenant_id=None, source_logical_id=None)
    assert [(e.channel, e.entity_key, e.version) for e in events] == [("order/synced", "9876", "24")]
    data = events[0].payload["data"]
    assert (data["customerNumber"], data["totalAmount"], data["currency"]) == ("C1000", 1250.0, "EUR")
    assert load_specs(builtin_spec_paths()).validate("order/synced", events[0].payload) == []


def test_a_built_confirm_bod_passes_the_simulators_check_and_quotes_the_original() -> None:
    bod = parse_bod(_sample())
    xml = build_confirm_bod(
        bod,
        error="order/synced data.orderDate: 'next Tuesday' is not a date",
        reason_code="invalid_payload",
        logical_id=RELAY_LID,
        created_at=NOW,
        message_id="m-1",
    )
    confirm = check_confirm_bod(xml)
    assert confirm.original_bod_id == "infor-nid:default:entity:1:9876:1?SalesOrder&verb=Sync&variationID=24"
    assert confirm.original_sender == "lid://infor.erpenterprise.europe.001"
    assert confirm.descriptions == (
        "Sync.SalesOrder not processed: order/synced data.orderDate: 'next Tuesday' is not a date",
    )
    assert confirm.reason_codes == ("invalid_payload",)
    assert confirm.sender == RELAY_LID
    assert confirm.tenant_id == "default"
    assert confirm.bod_id == "infor-nid:default:entity:1:9876:1?SalesOrder&verb=Confirm&variationID=24&sequence=1"
    # The ConfirmBOD itself is a BOD the relay's parser reads: verb Confirm, noun BOD, never confirmed back.
    parsed = parse_bod(xml)
    assert (parsed.document_name, parsed.confirmation_code) == ("Confirm.BOD", "Never")


def test_a_long_error_is_cut() -> None:
    xml = build_confirm_bod(
        parse_bod(_sample()), error="x" * 10_000, reason_code="r", logical_id=RELAY_LID, created_at=NOW, message_id="m"
    )
    (description,) = check_confirm_bod(xml).descriptions
    assert len(description) < 2100
    assert description.endswith("…")


def test_the_public_confirm_sample_passes_the_simulators_check() -> None:
    confirm = check_confirm_bod((FIXTURES / "confirm_bod.xml").read_bytes())
    assert confirm.original_bod_id == "infor-nid:default:entity:1:9876:1?SalesOrder&verb=Process&variationID=24"
    assert confirm.descriptions == ("Customer C1000 does not exist in company 100",)
    assert confirm.reason_codes == ("CustomerNotFound",)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (
            (b"<BODID>infor-nid:default:entity:1:9876:1?SalesOrder&amp;verb=Process&amp;variationID=24</BODID>", b""),
            "OriginalApplicationArea/BODID",
        ),
        ((b"<Description>Customer C1000 does not exist in company 100</Description>", b""), "Description is missing"),
        ((b"<BODFailureMessage>", b"<Other>"), "not well-formed"),
        ((b"ConfirmBOD", b"SyncBOD"), "expected a ConfirmBOD"),
    ],
)
def test_the_simulator_refuses_a_confirm_bod_without_what_ion_needs(edit: tuple[bytes, bytes], problem: str) -> None:
    xml = (FIXTURES / "confirm_bod.xml").read_bytes().replace(*edit)
    with pytest.raises(ValueError, match=problem):
        check_confirm_bod(xml)


def test_the_public_parameter_request_is_what_the_simulator_reads() -> None:
    raw = (FIXTURES / "parameter_request.json").read_bytes()
    message = read_ims_message({"ParameterRequest": raw, "MessagePayload": (FIXTURES / "confirm_bod.xml").read_bytes()})
    assert message.document_name == "Confirm.BOD"
    # The relay sends the same keys.
    sent = confirm_parameters(parse_bod(_sample()), logical_id=RELAY_LID, to_logical_id="lid://default", message_id="m")
    assert set(orjson.loads(raw)) <= set(sent)
    with pytest.raises(ValueError, match="fromLogicalId must be a logical id"):
        read_ims_message({"ParameterRequest": raw.replace(b"lid://infor.ims", b"infor.ims"), "MessagePayload": b""})


def test_the_ionapi_sample_loads() -> None:
    creds = load_ionapi(FIXTURES / "sample.ionapi")
    assert creds.grant == "password"
    assert creds.gateway_url("IONSERVICES/api/ion/messaging/service/v2/multipartMessage") == (
        "https://mingle-ionapi.example.com/TENANT_TST/IONSERVICES/api/ion/messaging/service/v2/multipartMessage"
    )


def _source(**confirm: object) -> IonImsSource:
    block = {"ionapi_file": "x.ionapi", "logical_id": RELAY_LID, **confirm}
    return IonImsSource.model_validate({"name": "ion", "kind": "ion-ims", "auth": {"type": "none"}, "confirm": block})


def test_plan_confirm_goes_to_the_bod_sender_and_only_when_asked() -> None:
    bod = parse_bod(_sample())
    entry = plan_confirm(_source(), Refused(bod, "bad", "invalid_payload"), now=NOW, message_id="m-1")
    assert entry is not None
    params = orjson.loads(entry.parameters)
    assert params == {
        "documentName": "Confirm.BOD",
        "messageId": "m-1",
        "fromLogicalId": RELAY_LID,
        "toLogicalId": "lid://infor.erpenterprise.europe.001",
        "encoding": "NONE",
        "characterSet": "UTF-8",
        "accountingEntity": "entity",
        "location": "1",
    }
    assert entry.bod_id == bod.bod_id
    assert plan_confirm(_source(codes=["Always"]), Refused(bod, "bad", "x"), now=NOW) is None
    without = IonImsSource.model_validate({"name": "ion", "kind": "ion-ims", "auth": {"type": "none"}})
    assert plan_confirm(without, Refused(bod, "bad", "x"), now=NOW) is None


def test_plan_confirm_falls_back_to_the_ims_sender() -> None:
    xml = _sample().replace(b"<LogicalID>lid://infor.erpenterprise.europe.001</LogicalID>", b"")
    refused = Refused(parse_bod(xml), "bad", "x", ImsContext(from_logical_id="lid://infor.ln.ln"))
    entry = plan_confirm(_source(), refused, now=NOW)
    assert entry is not None
    assert orjson.loads(entry.parameters)["toLogicalId"] == "lid://infor.ln.ln"


@pytest.mark.parametrize(
    ("confirm", "message"),
    [
        ({"logical_id": "infor.erp-relay"}, "logical_id"),
        ({"codes": ["Never"]}, "codes"),
        ({"codes": []}, "codes"),
        ({"max_pending": 0}, "max_pending"),
        ({"ionapi_file": None}, "ionapi_file"),
    ],
)
def test_a_bad_confirm_block_is_refused_naming_the_key(confirm: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _source(**confirm)
