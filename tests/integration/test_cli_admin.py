"""The CLI answers an operator's questions: newest first with full ids, following new events, replay by source,
channel glob and relative time, config discovery, and read-only commands that need none of the secrets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
from conftest import Stack, start_stack, stop_stack
from helpers import (
    HUB_TOKEN,
    ainvoke_cli,
    base_config,
    free_port,
    invoke_cli,
    relay_process,
    sample_event,
    until,
    write_config,
)
from subscriber import Subscriber, subscriber_config

from relay.cli import DEFAULT_CONFIG_PATH
from relay.ops import DeliveryFilter

AUTH = {"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"}
OTHER_TOKEN = "other-hub-token-0123456789"
ADMIN_TOKEN = "admin-token-for-tests-0123456789"


def _two_sources(tmp_path: Path, sub_url: str, **over: Any) -> dict[str, Any]:
    data = base_config(tmp_path, subscribers=[subscriber_config("s", sub_url, **over)], admin={"tokens": [ADMIN_TOKEN]})
    data["sources"].append({"name": "erp2", "kind": "json-push", "auth": {"type": "bearer", "tokens": [OTHER_TOKEN]}})
    return data


async def _push(stack: Stack, channel: str, event_id: str, source: str = "hub") -> None:
    token = HUB_TOKEN if source == "hub" else OTHER_TOKEN
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = orjson.dumps(sample_event(channel, event_id))
    async with stack.client.post(f"/v1/sources/{source}/events", data=body, headers=headers) as r:
        assert r.status == 202, await r.text()


async def test_lists_are_newest_first_with_full_ids(tmp_path: Path) -> None:
    sub = Subscriber(behaviour=lambda s, r, b: 500)
    await sub.start()
    data = _two_sources(tmp_path, sub.url, retry={"schedule": ["10ms"], "max_age": "1h"})
    stack = await start_stack(tmp_path, data)
    config_path = write_config(tmp_path, data)
    long_id = "evt-" + "x" * 120  # longer than any terminal column
    ids = ["first", "second", long_id]
    try:
        for event_id in ids:
            await _push(stack, "order/synced", event_id)

        async def all_dead() -> bool:
            return len(await stack.store.list_deliveries(DeliveryFilter(state="dead"))) == 3

        await until(all_dead, timeout=10)
        listed = await ainvoke_cli("events", "list", "-c", str(config_path), "--json")
        assert [e["eventId"] for e in orjson.loads(listed.stdout)] == ids[::-1]
        oldest = await ainvoke_cli("events", "list", "-c", str(config_path), "--json", "--oldest-first")
        assert [e["eventId"] for e in orjson.loads(oldest.stdout)] == ids
        table = await ainvoke_cli("events", "list", "-c", str(config_path))
        assert long_id in table.stdout  # piped: never cut
        assert table.stdout.index(long_id) < table.stdout.index("second") < table.stdout.index("first")

        deliveries = orjson.loads((await ainvoke_cli("deliveries", "list", "-c", str(config_path), "--json")).stdout)
        assert [d["eventId"] for d in deliveries] == ids[::-1]
        dead = orjson.loads((await ainvoke_cli("dlq", "list", "-c", str(config_path), "--json")).stdout)
        assert [d["eventId"] for d in dead] == ids[::-1]
        dead_table = await ainvoke_cli("dlq", "list", "-c", str(config_path))
        assert long_id in dead_table.stdout

        for bad in (b"{", b"[1]"):
            async with stack.client.post("/v1/sources/hub/events", data=bad, headers=AUTH) as r:
                assert r.status in (400, 422)
        quarantined = orjson.loads((await ainvoke_cli("quarantine", "list", "-c", str(config_path), "--json")).stdout)
        assert len(quarantined) == 2
        assert quarantined[0]["id"] > quarantined[1]["id"]

        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with stack.client.get("/v1/admin/events", headers=admin) as r:
            assert [e["eventId"] for e in await r.json()] == ids[::-1]
        async with stack.client.get("/v1/admin/events?order=oldest", headers=admin) as r:
            assert [e["eventId"] for e in await r.json()] == ids
        async with stack.client.get("/v1/admin/events?order=sideways", headers=admin) as r:
            assert r.status == 400
            assert "order: expected newest or oldest" in (await r.json())["message"]
    finally:
        await stop_stack(stack)
        await sub.stop()


async def test_replay_by_source_channel_glob_and_relative_time(tmp_path: Path) -> None:
    sub = Subscriber()
    await sub.start()
    data = _two_sources(tmp_path, sub.url, channels=["*"])
    stack = await start_stack(tmp_path, data)
    config_path = write_config(tmp_path, data)
    try:
        await _push(stack, "order/synced", "o-1")
        await _push(stack, "order/synced", "o-2", source="erp2")
        await _push(stack, "customer/synced", "c-1")
        await _push(stack, "invoice/synced", "i-1", source="erp2")
        await until(lambda: len(sub.requests) == 4, timeout=10)

        async def dry(*args: str) -> dict[str, Any]:
            done = await ainvoke_cli("replay", "-c", str(config_path), "--dry-run", "--json", *args)
            assert done.returncode == 0, done.stderr
            result: dict[str, Any] = orjson.loads(done.stdout)
            return result

        assert await dry() == {"events": 4, "deliveries": 4, "dryRun": True}
        assert (await dry("--channel", "order/*"))["events"] == 2
        assert (await dry("--channel", "*/synced", "--source", "erp2"))["events"] == 2
        assert (await dry("--source", "erp2", "--channel", "order/*"))["events"] == 1
        assert (await dry("--channel", "order/synced"))["events"] == 2  # an exact name still works
        assert (await dry("--channel", "o*/synced"))["events"] == 2
        assert (await dry("--channel", "nothing/*"))["events"] == 0
        assert (await dry("--since", "2h"))["events"] == 4
        assert (await dry("--until", "2h"))["events"] == 0  # all were received less than two hours ago
        assert (await dry("--source", "nope"))["events"] == 0

        done = await ainvoke_cli("replay", "-c", str(config_path), "--channel", "order/*", "--source", "hub")
        assert done.returncode == 0, done.stderr
        assert "1 replay deliveries created for 1 event(s)" in done.stdout
        await until(lambda: len(sub.requests) == 5, timeout=10)
        replayed = sub.requests[-1]
        assert replayed.headers["relay-replay"] == "true"
        assert orjson.loads(replayed.body)["eventId"] == "o-1"

        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        body = {"channel": "*/synced", "source": "erp2", "dryRun": True}
        async with stack.client.post("/v1/admin/replay", json=body, headers=admin) as r:
            assert await r.json() == {"events": 2, "deliveries": 2, "dryRun": True}
    finally:
        await stop_stack(stack)
        await sub.stop()


async def test_events_tail_prints_new_events_as_they_are_stored_until_ctrl_c(tmp_path: Path) -> None:
    data = base_config(tmp_path)
    stack = await start_stack(tmp_path, data)
    config_path = write_config(tmp_path, data)
    proc = None
    try:
        await _push(stack, "order/synced", "before-1")
        await _push(stack, "customer/synced", "before-2")
        await _push(stack, "order/synced", "before-3")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "relay.cli", "events", "tail", "-c", str(config_path), "--json", "-n", "2"),
            *("--channel", "order/synced", "--interval", "0.1"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None

        async def next_event_id() -> str:
            assert proc is not None
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=15)
            assert line, "tail ended early"
            return str(json.loads(line)["eventId"])

        # The newest matching events first, oldest of them first; then what is stored from now on.
        assert [await next_event_id(), await next_event_id()] == ["before-1", "before-3"]
        await _push(stack, "customer/synced", "after-skip")
        await _push(stack, "order/synced", "after-1")
        assert await next_event_id() == "after-1"
        await _push(stack, "order/synced", "after-2")
        assert await next_event_id() == "after-2"

        proc.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=15)
        assert proc.returncode == 0
        assert b"Traceback" not in stderr, stderr
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await stop_stack(stack)


async def test_event_feed_cursor_misses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    data = base_config(tmp_path, admin={"tokens": [ADMIN_TOKEN]})
    stack = await start_stack(tmp_path, data)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        async with stack.client.get("/v1/admin/events-feed?limit=0", headers=admin) as r:
            empty = await r.json()
        assert empty == {"cursor": 0, "events": []}
        for i in range(5):
            await _push(stack, "order/synced", f"e-{i}")
        async with stack.client.get("/v1/admin/events-feed?limit=2", headers=admin) as r:
            start = await r.json()
        assert [e["eventId"] for e in start["events"]] == ["e-3", "e-4"]
        await _push(stack, "order/synced", "e-5")
        seen: list[str] = []
        cursor = start["cursor"]
        async with stack.client.get(f"/v1/admin/events-feed?after={cursor}&limit=1", headers=admin) as r:
            page = await r.json()
        assert [e["eventId"] for e in page["events"]] == ["e-5"]
        seen += [e["eventId"] for e in page["events"]]
        async with stack.client.get(f"/v1/admin/events-feed?after={page['cursor']}", headers=admin) as r:
            assert await r.json() == {"cursor": page["cursor"], "events": []}
        async with stack.client.get(f"/v1/admin/events-feed?after={empty['cursor']}&limit=100", headers=admin) as r:
            assert [e["eventId"] for e in (await r.json())["events"]] == [f"e-{i}" for i in range(6)]
        async with stack.client.get("/v1/admin/events-feed?after=-1", headers=admin) as r:
            assert r.status == 400
        assert seen == ["e-5"]
    finally:
        await stop_stack(stack)


def test_the_config_is_found_at_relay_config_then_etc(tmp_path: Path) -> None:
    assert not DEFAULT_CONFIG_PATH.exists()  # this machine has no system-wide configuration
    data = base_config(tmp_path)
    config_path = write_config(tmp_path, data)
    nowhere = invoke_cli("events", "list", env={"RELAY_CONFIG": ""})
    assert nowhere.returncode == 1
    assert "$RELAY_CONFIG is not set and /etc/erp-relay/relay.yaml does not exist" in nowhere.stderr
    found = invoke_cli("events", "list", "--json", env={"RELAY_CONFIG": str(config_path)})
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == []
    missing = invoke_cli("events", "list", env={"RELAY_CONFIG": str(tmp_path / "gone.yaml")})
    assert missing.returncode == 1
    assert "gone.yaml: cannot read" in missing.stderr


def test_read_only_commands_need_none_of_the_secrets(tmp_path: Path) -> None:
    data = base_config(tmp_path, admin={"tokens": ["${RELAY_TEST_UNSET_ADMIN_TOKEN}"]})
    data["sources"][0]["auth"] = {"type": "bearer", "tokens_file": "no-such-tokens.txt"}
    data["subscribers"] = [
        {"name": "s", "url": "https://example.invalid/hook", "secrets_file": str(tmp_path / "missing-whsec")}
    ]
    config_path = write_config(tmp_path, data)
    env = {"RELAY_TEST_UNSET_ADMIN_TOKEN": None}
    assert "RELAY_TEST_UNSET_ADMIN_TOKEN" not in os.environ
    for command in (
        ("events", "list", "--json"),
        ("deliveries", "list", "--json"),
        ("dlq", "list", "--json"),
        ("quarantine", "list", "--json"),
        ("subscribers", "list", "--json"),
        ("replay", "--dry-run", "--json"),
        ("dlq", "redrive", "--dry-run"),
    ):
        result = invoke_cli(*command, "-c", str(config_path), env=env)  # type: ignore[arg-type]
        assert result.returncode == 0, (command, result.stderr)
    names = [s["name"] for s in json.loads(invoke_cli("subscribers", "list", "--json", "-c", str(config_path)).stdout)]
    assert names == ["s"]
    shown = invoke_cli("events", "show", "nope", "-c", str(config_path))
    assert shown.returncode == 1
    assert "no event 'nope'" in shown.stderr  # got as far as the store

    for write in (("dlq", "redrive"), ("replay",), ("check-config",)):
        refused = invoke_cli(*write, "-c", str(config_path), env=env)  # type: ignore[arg-type]
        assert refused.returncode == 1, write
        assert "cannot read secret file" in refused.stdout + refused.stderr, write


async def test_url_answers_like_the_database_through_a_running_relays_admin_api(tmp_path: Path) -> None:
    import aiohttp

    sub = Subscriber(behaviour=lambda s, r, b: 500)
    await sub.start()
    data = _two_sources(tmp_path, sub.url, retry={"schedule": ["10ms"], "max_age": "1h"})
    config_path = write_config(tmp_path, data)
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    with relay_process(config_path, tmp_path) as relay:
        await relay.wait_ready()
        url = relay.base_url
        async with aiohttp.ClientSession() as session:
            for event_id in ("u-1", "u-2"):
                body = orjson.dumps(sample_event("order/synced", event_id))
                async with session.post(f"{url}/v1/sources/hub/events", data=body, headers=AUTH) as r:
                    assert r.status == 202
            async with session.post(f"{url}/v1/sources/hub/events", data=b"{", headers=AUTH) as r:
                assert r.status == 400

        async def both_dead() -> bool:
            listed = await ainvoke_cli("dlq", "list", "--json", "--url", url, "--token-file", str(token_file))
            return listed.returncode == 0 and len(orjson.loads(listed.stdout)) == 2

        await until(both_dead, timeout=15, interval=0.1)
        delivery_id = str(
            orjson.loads((await ainvoke_cli("dlq", "list", "--json", "-c", str(config_path))).stdout)[0]["id"]
        )
        quarantine_id = str(
            orjson.loads((await ainvoke_cli("quarantine", "list", "--json", "-c", str(config_path))).stdout)[0]["id"]
        )
        env = {"RELAY_ADMIN_TOKEN": ADMIN_TOKEN}
        for command in (
            ("events", "list", "--json"),
            ("events", "list", "--json", "--oldest-first", "--channel", "order/synced", "--since", "1h"),
            ("events", "show", "u-1", "--json"),
            ("deliveries", "list", "--json", "--state", "dead"),
            ("deliveries", "show", delivery_id, "--json"),
            ("dlq", "list", "--json", "--subscriber", "s"),
            ("quarantine", "list", "--json"),
            ("quarantine", "show", quarantine_id, "--json"),
            ("subscribers", "list", "--json"),
            ("replay", "--dry-run", "--json", "--channel", "order/*"),
            ("dlq", "redrive", "--dry-run"),
        ):
            local = await ainvoke_cli(*command, "-c", str(config_path))
            remote = await ainvoke_cli(*command, "--url", url, env=env)
            assert remote.returncode == 0, (command, remote.stderr)
            assert remote.stdout == local.stdout, command
        table = await ainvoke_cli("deliveries", "show", delivery_id, "--url", url, env=env)
        assert "500" in table.stdout

        refused = await ainvoke_cli("dlq", "redrive", "--subscriber", "nope", "--url", url, env=env)
        assert refused.returncode == 1
        assert "no subscriber named 'nope' (HTTP 404)" in refused.stderr
        missing = await ainvoke_cli("events", "show", "nope", "--url", url, env=env)
        assert missing.returncode == 1
        assert "no event 'nope' (HTTP 404)" in missing.stderr

        redriven = await ainvoke_cli("dlq", "redrive", "--url", url, env=env)
        assert redriven.returncode == 0, redriven.stderr
        assert "2 dead deliveries redriven" in redriven.stdout
        await until(lambda: len(sub.requests) >= 4, timeout=15)

        no_token = await ainvoke_cli("events", "list", "--url", url, env={"RELAY_ADMIN_TOKEN": ""})
        assert no_token.returncode == 1
        assert "--url needs an admin token: set $RELAY_ADMIN_TOKEN or give --token-file" in no_token.stderr
        wrong = await ainvoke_cli("events", "list", "--url", url, env={"RELAY_ADMIN_TOKEN": "wrong-token-000000"})
        assert wrong.returncode == 1
        assert "an admin bearer token is required (HTTP 401)" in wrong.stderr
        port = free_port()
        gone = await ainvoke_cli("events", "list", "--url", f"http://127.0.0.1:{port}", env=env)
        assert gone.returncode == 1
        assert f"cannot reach the relay at http://127.0.0.1:{port}" in gone.stderr
        not_http = await ainvoke_cli("events", "list", "--url", "ftp://x", env=env)
        assert "expected http(s)://host:port" in not_http.stderr
    await sub.stop()
