"""SX.e's pure rules: server-local time → UTC, FetchWhere paging, answer shapes (against the public samples)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from relay.poll.sxe import (
    FEEDS,
    RECEIVED_STAGES_WHERE,
    ShapeError,
    TableFeed,
    fetchwhere_rows,
    icsw_available,
    local_to_utc,
    next_restart_row_id,
    normalise_row,
    number_text,
    operation_rows,
    order_key,
    status_text,
    utc_to_local_date,
    where_clause,
)
from relay.sim.sxe import SxeSimulator

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sxe"
CHICAGO = ZoneInfo("America/Chicago")


def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.mark.parametrize(
    ("day", "time", "zone", "expected"),
    [
        ("2022-04-04", "1204", CHICAGO, "2022-04-04T17:04:00Z"),  # the public sample's columns; CDT is UTC-5
        ("2026-11-20", "0930", CHICAGO, "2026-11-20T15:30:00Z"),  # CST is UTC-6
        ("2026-11-20", "23:59:30", CHICAGO, "2026-11-21T05:59:30Z"),  # crosses midnight in UTC
        ("2026-11-20", "093015", CHICAGO, "2026-11-20T15:30:15Z"),
        ("11/20/26", "", CHICAGO, "2026-11-20T06:00:00Z"),  # no time: local midnight
        ("11/20/2026", None, ZoneInfo("UTC"), "2026-11-20T00:00:00Z"),
        ("2026-03-08", "0230", CHICAGO, "2026-03-08T08:30:00Z"),  # in the spring-forward gap: earlier offset
        ("2026-11-01", "0130", CHICAGO, "2026-11-01T06:30:00Z"),  # repeated hour in autumn: first (CDT)
        ("", "1204", CHICAGO, None),
        (None, "1204", CHICAGO, None),
        ("not a date", "1204", CHICAGO, None),
        ("2026-11-20", "2500", CHICAGO, None),
        ("2026-11-20", "noon", CHICAGO, None),
    ],
)
def test_local_date_and_time_become_utc(day: Any, time: Any, zone: ZoneInfo, expected: str | None) -> None:
    assert local_to_utc(day, time, zone) == expected


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-11-21T05:59:30Z", date(2026, 11, 20)),  # still the 20th in Chicago
        ("2026-11-21T06:00:00Z", date(2026, 11, 21)),
        ("2026-07-01T04:59:59.000Z", date(2026, 6, 30)),
    ],
)
def test_utc_instant_to_server_date(stamp: str, expected: date) -> None:
    assert utc_to_local_date(stamp, CHICAGO) == expected


@pytest.mark.parametrize(
    ("since", "extra", "expected"),
    [
        (None, None, "icsw.cono = 1"),
        (date(2026, 11, 20), None, "icsw.cono = 1 and icsw.transdt >= DATE(11,20,2026)"),
        (None, "icsw.whse = 'MAIN'", "icsw.cono = 1 and (icsw.whse = 'MAIN')"),
    ],
)
def test_where_clause(since: date | None, extra: str | None, expected: str) -> None:
    assert where_clause("icsw", 1, since, extra) == expected


def test_fetchwhere_rows_read_the_public_sample() -> None:
    (row,) = fetchwhere_rows(_fixture("fetchwhere_sasc.json"), "sasc")
    assert (row["sascRowID"], row["transdt"], row["transtm"]) == ("AAAAAAAIigA=", "2022-04-04", "1204")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"ttblicsw": [{"prod": "A"}]}, "expected a 'ttblsasc' list; the answer had keys: ttblicsw"),
        ({"response": {"cErrorMessage": ""}}, "the answer had keys: response"),
        ({}, "the answer had keys: none"),
        ([], "a list, not an object"),
        ({"ttblsasc": {"sascRowID": "x"}}, "expected a 'ttblsasc' list"),
        ({"ttblsasc": ["x"]}, "something other than row objects"),
    ],
)
def test_an_unexpected_fetchwhere_answer_names_what_it_had(body: Any, message: str) -> None:
    with pytest.raises(ShapeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fetchwhere_rows(body, "sasc")


@pytest.mark.parametrize(
    ("fixture", "wrapper", "rows_key", "first_key"),
    [
        ("custlstv3.json", "tCustLstV3", "t-custLstV3", "custNo"),
        ("oeordv5.json", "tOeordV5", "t-oeordV5", "orderNo"),
        ("itemmasterv3.json", "tItemmasterv3", "t-itemmasterv3", "prod"),
    ],
)
def test_operation_rows_read_the_camelcase_wrappers(fixture: str, wrapper: str, rows_key: str, first_key: str) -> None:
    rows = operation_rows(_fixture(fixture)["response"], "op", wrapper, rows_key)
    assert len(rows) == 1
    assert first_key in rows[0]


@pytest.mark.parametrize(
    ("response", "message"),
    [
        # What the relay used to look for: lower-case wrappers. Now an error naming the keys that were there.
        ({"cErrorMessage": "", "tcustlstv3": {"t-custlstv3": []}}, "had keys: cErrorMessage, tcustlstv3"),
        ({"cErrorMessage": ""}, "expected the table 'tCustLstV3'"),
        ({"tCustLstV3": {"t-custLstV3": {"custNo": 1}}}, "had keys: t-custLstV3"),
    ],
)
def test_an_unexpected_operation_answer_names_what_it_had(response: Any, message: str) -> None:
    with pytest.raises(ShapeError, match=message):
        operation_rows(response, "sxapiargetcustomerlistv3", "tCustLstV3", "t-custLstV3")


def test_a_wrapper_without_rows_is_an_empty_result() -> None:
    assert operation_rows({"tCustLstV3": {}}, "op", "tCustLstV3", "t-custLstV3") == []


def _rows(*ids: str) -> list[dict[str, Any]]:
    return [{"icswRowID": i} for i in ids]


@pytest.mark.parametrize(
    ("rows", "batch", "restart", "expected"),
    [
        (_rows("a", "b"), 3, None, None),  # a short page is the last
        (_rows("a", "b", "c"), 3, None, "c"),
        (_rows("c", "d", "e"), 3, "c", "e"),  # a server that repeats the restart row still advances
        (_rows(), 3, "c", None),
        (_rows("a", "b", "c"), 0, None, None),  # BatchSize 0 asks for everything at once
    ],
)
def test_next_restart_row_id(rows: list[dict[str, Any]], batch: int, restart: str | None, expected: str | None) -> None:
    assert next_restart_row_id(rows, "icsw", batch, restart) == expected


@pytest.mark.parametrize(
    ("rows", "restart", "message"),
    [
        (_rows("a", "b", "c"), "c", "does not advance"),
        ([{"prod": "A"}, {"prod": "B"}, {"prod": "C"}], None, "without 'icswRowID'"),
    ],
)
def test_a_page_that_cannot_advance_is_an_error(rows: list[dict[str, Any]], restart: str | None, message: str) -> None:
    with pytest.raises(ShapeError, match=message):
        next_restart_row_id(rows, "icsw", 3, restart)


@pytest.mark.parametrize(
    ("func", "args", "expected"),
    [
        (order_key, (500042, 0), "500042-00"),
        (order_key, ("500042", "1"), "500042-01"),
        (order_key, (300001.0, None), "300001-00"),
        (order_key, (None, 0), None),
        (order_key, ("x", 0), None),
        (number_text, (10042.0,), "10042"),
        (number_text, (10042,), "10042"),
        (number_text, ("  ",), None),
        (number_text, (12.5,), "12.5"),
        (status_text, (True,), "Active"),
        (status_text, (False,), "Inactive"),
        (status_text, ("Hold",), "Hold"),
        (icsw_available, ({"qtyonhand": 100.0, "qtycommit": 30.0, "qtyreservd": 5.0},), 65.0),
        (icsw_available, ({"qtyonhand": "x"},), None),
    ],
)
def test_value_rules(func: Any, args: tuple[Any, ...], expected: Any) -> None:
    assert func(*args) == expected


async def test_the_simulator_answers_in_the_sampled_shapes() -> None:
    """The simulator's rows carry what the public samples carry: the wrappers, `<table>RowID`, HHMM times."""
    sim = SxeSimulator()
    for table in ("icsw", "arsc", "poeh"):
        sim.seed_rows(table, 2)
    sample = _fixture("fetchwhere_sasc.json")["ttblsasc"][0]
    for table in ("icsw", "arsc", "poeh"):
        row = sim.tables[table][0]
        assert {"cono", "transdt", "transtm", "operinit"} <= row.keys()
        assert len(row["transtm"]) == len(sample["transtm"])
        assert row["transtm"].isdigit()
        assert len(row[f"{table}RowID"]) == len(sample["sascRowID"])
    customers = sim._customer_list({})
    wanted = set(_fixture("custlstv3.json")["response"]) - {"cErrorMessage"}
    assert wanted <= customers.keys()
    sampled = set(_fixture("custlstv3.json")["response"]["tCustLstV3"]["t-custLstV3"][0])
    assert sampled <= set(customers["tCustLstV3"]["t-custLstV3"][0])
    sim.seed_rows("oeeh", 1)
    orders = sim._order_list({})
    assert set(_fixture("oeordv5.json")["response"]["tOeordV5"]["t-oeordV5"][0]) <= set(
        orders["tOeordV5"]["t-oeordV5"][0]
    )


_RECEIVED = {
    "cono": 1,
    "pono": 300002,
    "posuf": 1,
    "vendno": 1002.0,
    "whse": "WEST",
    "stagecd": 5,
    "orderdt": "2026-11-02",
    "receiptdt": "2026-11-20",
    "transdt": "2026-11-20",
    "transtm": "1815",
}


@pytest.mark.parametrize(
    ("row", "zone", "expected"),
    [
        (  # 18:15 in Chicago (CST, UTC-6) is the next day in UTC; the receipt date stays the server's date
            _RECEIVED,
            CHICAGO,
            {
                "receiptNumber": "300002-01",
                "purchaseOrderNumber": "300002-01",
                "vendorNumber": "1002",
                "warehouse": "WEST",
                "receiptDate": "2026-11-20",
                "lastModified": "2026-11-21T00:15:00Z",
            },
        ),
        (  # Sydney (AEDT, UTC+11): the same local columns are the morning before in UTC
            _RECEIVED,
            ZoneInfo("Australia/Sydney"),
            {
                "receiptNumber": "300002-01",
                "purchaseOrderNumber": "300002-01",
                "vendorNumber": "1002",
                "warehouse": "WEST",
                "receiptDate": "2026-11-20",
                "lastModified": "2026-11-20T07:15:00Z",
            },
        ),
        (  # Progress's unknown receipt date and an unreadable time leave those fields out, not the receipt
            {**_RECEIVED, "receiptdt": None, "transtm": "9999"},
            CHICAGO,
            {
                "receiptNumber": "300002-01",
                "purchaseOrderNumber": "300002-01",
                "vendorNumber": "1002",
                "warehouse": "WEST",
            },
        ),
    ],
)
def test_a_received_purchase_order_becomes_a_receipt(row: dict[str, Any], zone: ZoneInfo, expected: Any) -> None:
    feed = FEEDS["receipts"]
    assert isinstance(feed, TableFeed)
    record = normalise_row(row, feed.derived, ("transdt", "transtm"), zone)
    assert feed.mapping.data(record) == expected
    assert feed.mapping.updated(record) == expected.get("lastModified")


def test_the_receipts_feed_reads_received_costed_and_closed_purchase_orders() -> None:
    """Stages 5 (Received), 6 (Costed), 7 (Closed) as Infor documents them; 9 (Cancelled) is no receipt."""
    feed = FEEDS["receipts"]
    assert isinstance(feed, TableFeed)
    assert (feed.table, feed.where) == ("poeh", RECEIVED_STAGES_WHERE)
    assert where_clause("poeh", 1, date(2026, 11, 20), feed.where) == (
        "poeh.cono = 1 and poeh.transdt >= DATE(11,20,2026) and (poeh.stagecd >= 5 and poeh.stagecd <= 7)"
    )
    sim = SxeSimulator()
    sim.seed_rows("poeh", 6)
    rows = [r for r in sim.tables["poeh"] if sim._matches("poeh", r, where_clause("poeh", 1, None, feed.where))]
    assert [(r["pono"], r["stagecd"]) for r in rows] == [(300002, 5), (300005, 5)]
    assert all(r["receiptdt"] == r["transdt"] for r in rows)
    assert all(r["receiptdt"] is None for r in sim.tables["poeh"] if r not in rows)
    for stage in (6, 7, 9):
        sim.tables["poeh"][0]["stagecd"] = stage
        assert sim._matches("poeh", sim.tables["poeh"][0], feed.where) is (stage != 9)
