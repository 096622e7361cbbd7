"""The CLI shows whatever senders stored, literally: rich markup is text, escape sequences are made visible."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import base_config, invoke_cli, write_config

from relay.events import Event
from relay.store import DeliveryPlan, NewEvent, QuarantineEntry, create_store

EVENT_ID = "evt-[/]-[bold]x[/bold]-\x1b[31m-:smile:"
SHOWN_ID = "evt-[/]-[bold]x[/bold]-\\x1b[31m-:smile:"
REASON = "bad [/] [bold]x[/bold] \x1b[2J"
SHOWN_REASON = "bad [/] [bold]x[/bold] \\x1b[2J"
# Wide enough that no table cell is wrapped or cut.
WIDE = {"COLUMNS": "400"}


@pytest.fixture
async def hostile_store(tmp_path: Path) -> tuple[Path, int]:
    config = base_config(tmp_path)
    config_path = write_config(tmp_path, config)
    store = create_store(config["store"]["url"])
    await store.open()
    now = datetime.now(UTC)
    event = Event(
        event_id=EVENT_ID,
        channel="order/synced",
        source="hub",
        tenant_id="T[/]",
        entity_key="SO-[/]\x1b[2J",
        version="[bold]1",
        occurred_at=now,
        received_at=now,
        payload=b'{"orderNumber": "[/] \\u001b[31m [bold]"}',
        original=b"<Sync>[/] \x1b[2J\n  [bold]</Sync>",
        original_type="application/xml",
    )
    await store.ingest([NewEvent(event, [DeliveryPlan("storefront")])])
    quarantine_id = await store.quarantine(
        QuarantineEntry(
            source="hub",
            reason=REASON,
            body=b'{"eventId": "[/]"}\n\x1b[31m',
            received_at=now,
            channel="order/[/]",
            details=[{"path": "data.[/]", "message": "[bold]\x1b[31m"}],
            content_type="application/json",
        )
    )
    await store.close()
    return config_path, quarantine_id


def _assert_shown(out: str, *texts: str) -> None:
    assert "\x1b" not in out, out
    for text in texts:
        assert text in out, f"{text!r} not in {out!r}"


def test_events_list_and_show_print_markup_and_escapes_literally(hostile_store: tuple[Path, int]) -> None:
    config_path, _ = hostile_store
    listed = invoke_cli("events", "list", "-c", str(config_path), env=WIDE)
    assert listed.returncode == 0, listed.stderr
    _assert_shown(listed.stdout, SHOWN_ID, "SO-[/]\\x1b[2J", "[bold]1")

    shown = invoke_cli("events", "show", EVENT_ID, "-c", str(config_path), env=WIDE)
    assert shown.returncode == 0, shown.stderr
    _assert_shown(
        shown.stdout, f"eventId: {SHOWN_ID}", "tenantId: T[/]", "[bold]", "<Sync>[/] \\x1b[2J\n  [bold]</Sync>"
    )


def test_deliveries_list_prints_markup_literally(hostile_store: tuple[Path, int]) -> None:
    config_path, _ = hostile_store
    listed = invoke_cli("deliveries", "list", "-c", str(config_path), env=WIDE)
    assert listed.returncode == 0, listed.stderr
    _assert_shown(listed.stdout, SHOWN_ID, "storefront")


def test_quarantine_list_and_show_print_markup_and_escapes_literally(hostile_store: tuple[Path, int]) -> None:
    config_path, quarantine_id = hostile_store
    listed = invoke_cli("quarantine", "list", "-c", str(config_path), env=WIDE)
    assert listed.returncode == 0, listed.stderr
    _assert_shown(listed.stdout, SHOWN_REASON, "order/[/]")

    shown = invoke_cli("quarantine", "show", str(quarantine_id), "-c", str(config_path), env=WIDE)
    assert shown.returncode == 0, shown.stderr
    _assert_shown(
        shown.stdout,
        "id: ",  # the field names are plain, not "[bold]id[/bold]"
        f"reason: {SHOWN_REASON}",
        "data.[/]: [bold]\\x1b[31m",
        '{"eventId": "[/]"}\n\\x1b[31m',
    )
    assert "[bold]id[/bold]" not in shown.stdout


def test_json_output_keeps_the_exact_values(hostile_store: tuple[Path, int]) -> None:
    config_path, _ = hostile_store
    listed = invoke_cli("events", "list", "--json", "-c", str(config_path))
    assert listed.returncode == 0, listed.stderr
    assert [e["eventId"] for e in json.loads(listed.stdout)] == [EVENT_ID]
