"""What an operator asks on a bad day, through the CLI (in process) and the admin API: the same answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from conftest import Stack, start_stack, stop_stack
from helpers import HUB_TOKEN, ainvoke_cli, base_config, sample_event, until, write_config
from subscriber import Subscriber, subscriber_config

from relay.ops import DeliveryFilter

AUTH = {"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"}
ADMIN_TOKEN = "admin-token-for-tests-0123456789"


async def _failing_stack(tmp_path: Path, sub: Subscriber, **over: Any) -> tuple[Stack, Path]:
    data = base_config(
        tmp_path,
        subscribers=[subscriber_config("s", sub.url, **over)],
        admin={"tokens": [ADMIN_TOKEN]},
    )
    return await start_stack(tmp_path, data), write_config(tmp_path, data)


async def _push(stack: Stack, event_id: str) -> None:
    body = orjson.dumps(sample_event("order/synced", event_id))
    async with stack.client.post("/v1/sources/hub/events", data=body, headers=AUTH) as r:
        assert r.status == 202, await r.text()


async def test_deliveries_show_has_each_attempt_with_the_answer_and_the_next_attempt(tmp_path: Path) -> None:
    sub = Subscriber(behaviour=lambda s, r, b: 503)
    await sub.start()
    # A long second retry: the delivery stays pending with a next attempt to show.
    stack, config_path = await _failing_stack(tmp_path, sub, retry={"schedule": ["50ms", "1h"], "max_age": "2h"})
    try:
        await _push(stack, "slow-1")
        await until(lambda: len(sub.requests) == 2, timeout=10)

        async def two_attempts() -> bool:
            rows = await stack.store.list_deliveries(DeliveryFilter(event_id="slow-1"))
            return rows[0].attempts == 2

        await until(two_attempts, timeout=10)
        listed = await ainvoke_cli("deliveries", "list", "-c", str(config_path), "--json")
        (row,) = orjson.loads(listed.stdout)
        shown = await ainvoke_cli("deliveries", "show", str(row["id"]), "-c", str(config_path), "--json")
        assert shown.returncode == 0, shown.stderr
        detail = orjson.loads(shown.stdout)
        assert detail["state"] == "pending"
        assert detail["nextAttemptAt"].endswith("Z")
        assert [(a["attempt"], a["status"], a["response"]) for a in detail["attempts"]] == [
            (1, 503, "no"),
            (2, 503, "no"),
        ]
        assert all(a["durationMs"] >= 0 and a["startedAt"].endswith("Z") for a in detail["attempts"])

        table = await ainvoke_cli("deliveries", "show", str(row["id"]), "-c", str(config_path))
        assert table.returncode == 0, table.stderr
        assert "nextAttemptAt: " + detail["nextAttemptAt"] in table.stdout
        assert len([line for line in table.stdout.splitlines() if " 503 " in line]) == 2  # one row per attempt

        async with stack.client.get(f"/v1/admin/deliveries/{row['id']}", headers=_admin()) as r:
            assert r.status == 200
            assert await r.json() == detail  # one view for the CLI and the admin API
        async with stack.client.get("/v1/admin/deliveries/999999", headers=_admin()) as r:
            assert r.status == 404

        missing = await ainvoke_cli("deliveries", "show", "999999", "-c", str(config_path))
        assert missing.returncode == 1
        assert "no delivery 999999" in missing.stderr

        event = await ainvoke_cli("events", "show", "slow-1", "-c", str(config_path), "--json")
        assert [d["id"] for d in orjson.loads(event.stdout)["deliveries"]] == [row["id"]]
        event_text = await ainvoke_cli("events", "show", "slow-1", "-c", str(config_path))
        assert "deliveries" in event_text.stdout
        assert "1 delivery" in event_text.stdout
    finally:
        await stop_stack(stack)
        await sub.stop()


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_redrive_dry_run_counts_and_an_unknown_subscriber_is_an_error(tmp_path: Path) -> None:
    sub = Subscriber(behaviour=lambda s, r, b: 500)
    await sub.start()
    stack, config_path = await _failing_stack(tmp_path, sub, retry={"schedule": ["10ms"], "max_age": "1h"})
    try:
        for event_id in ("d-1", "d-2"):
            await _push(stack, event_id)

        async def both_dead() -> bool:
            return len(await stack.store.list_deliveries(DeliveryFilter(state="dead"))) == 2

        await until(both_dead, timeout=10)
        dry = await ainvoke_cli("dlq", "redrive", "-c", str(config_path), "--dry-run", "--since", "1h")
        assert dry.returncode == 0, dry.stderr
        assert "dry run: 2 dead deliveries would be redriven" in dry.stdout
        assert len(await stack.store.list_deliveries(DeliveryFilter(state="dead"))) == 2  # nothing changed

        typo = await ainvoke_cli("dlq", "redrive", "-c", str(config_path), "--subscriber", "nope")
        assert typo.returncode == 1
        assert "no subscriber named 'nope'" in typo.stderr
        async with stack.client.post("/v1/admin/dlq/redrive", json={"subscriber": "nope"}, headers=_admin()) as r:
            assert r.status == 404
            assert (await r.json())["error"] == "unknown_subscriber"
        async with stack.client.post("/v1/admin/dlq/redrive", json={"dryRun": True}, headers=_admin()) as r:
            assert await r.json() == {"redriven": 2, "dryRun": True}

        future = await ainvoke_cli("dlq", "redrive", "-c", str(config_path), "--dry-run", "--until", "1h")
        assert "dry run: 0 dead deliveries would be redriven" in future.stdout  # both are younger than an hour

        bad = await ainvoke_cli("dlq", "redrive", "-c", str(config_path), "--since", "2 hours")
        assert bad.returncode == 2
        assert "a time ago like 2h" in bad.stderr
    finally:
        await stop_stack(stack)
        await sub.stop()


async def test_subscribers_test_sends_a_signed_event_and_reports_the_answer(tmp_path: Path) -> None:
    healthy, failing = Subscriber(), Subscriber(behaviour=lambda s, r, b: 503)
    for s in (healthy, failing):
        await s.start()
    data = base_config(
        tmp_path, subscribers=[subscriber_config("shop", healthy.url), subscriber_config("crm", failing.url)]
    )
    config_path = write_config(tmp_path, data)
    try:
        ok = await ainvoke_cli("subscribers", "test", "-c", str(config_path), "shop", "--json")
        refused = await ainvoke_cli("subscribers", "test", "-c", str(config_path), "crm")
        unknown = await ainvoke_cli("subscribers", "test", "-c", str(config_path), "nobody")
    finally:
        for s in (healthy, failing):
            await s.stop()
    assert ok.returncode == 0, ok.stderr
    answer = orjson.loads(ok.stdout)
    assert (answer["subscriber"], answer["status"], answer["ok"]) == ("shop", 200, True)
    (received,) = healthy.requests
    assert received.verified  # signed with the subscriber's secret, checked by standardwebhooks
    assert received.headers["webhook-id"] == answer["webhookId"]
    assert received.headers["relay-channel"] == "relay/test"
    assert refused.returncode == 1
    assert "crm: HTTP 503" in refused.stdout
    assert len(failing.requests) == 1
    assert unknown.returncode == 1
    assert "nobody" in unknown.stderr
