"""Schema drift and source health as an integration dashboard subscribed to `relay/*` sees them.

`relay serve` polls the X3 simulator; the simulator adds a field and retypes another mid-run, then answers
500 for one class and heals. The dashboard receives exactly one signed `relay/drift` event per change and
one `relay/source-health` event per transition, and a restart of the relay announces nothing again.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import aiohttp
from helpers import base_config, relay_process, until, write_config
from subscriber import Subscriber, subscriber_config

from relay.sim.x3 import X3Simulator, running_x3_simulator

BASIC = {"type": "basic", "username": "admin", "password": "aldgate"}
DRIFT_SERIES = re.compile(r'^relay_source_drift_total\{resource="ITMMVT",source="aldgate-x3"\} (\S+)$', re.M)


def _config(tmp_path: Path, base_url: str, hook_url: str) -> dict[str, Any]:
    resource = {"channel": "inventory/synced", "every": "300ms", "jitter": 0}
    return base_config(
        tmp_path,
        delivery={"poll_interval": "100ms"},
        sources=[
            {
                "name": "aldgate-x3",
                "kind": "x3",
                "base_url": base_url,
                "folder": "ALDGATE",
                "auth": BASIC,
                "resources": [{"class": "ITMMVT", **resource}, {"class": "BPCUSTOMER", **resource,
                                                                "channel": "customer/synced"}],
            }
        ],
        subscribers=[subscriber_config("dashboard", hook_url, channels=["relay/*"])],
    )  # fmt: skip


def _received(dashboard: Subscriber, channel: str) -> list[dict[str, Any]]:
    """The events of `channel` the dashboard accepted, each verified as a Standard Webhooks receiver would."""
    found = [r for r in dashboard.delivered if r.headers["relay-channel"] == channel]
    assert all(r.verified for r in found)
    return [r.payload for r in found]


async def _polls_pass(sim: X3Simulator, count: int) -> None:
    """Wait until the relay has asked the simulator `count` more times (both classes poll every 300 ms)."""
    start = sim.requests
    await until(lambda: sim.requests >= start + count, timeout=20)


async def test_one_drift_event_per_change_and_none_again_after_a_restart(tmp_path: Path) -> None:
    dashboard = Subscriber()
    await dashboard.start()
    async with running_x3_simulator(seed_data=False) as (sim, base_url):
        sim.seed_records("ITMMVT", 30)
        sim.seed_records("BPCUSTOMER", 5)
        config_path = write_config(tmp_path, _config(tmp_path, base_url, dashboard.url))
        try:
            with relay_process(config_path, tmp_path) as relay:
                await relay.wait_ready()
                await _polls_pass(sim, 6)
                assert _received(dashboard, "relay/drift") == []  # the first shape seen is a baseline

                sim.set_field("ITMMVT", "ZLEADTIME", lambda r: 14)  # a customer adds a lead-time field
                await until(lambda: len(_received(dashboard, "relay/drift")) == 1, timeout=20)
                sim.set_field("ITMMVT", "PHYSTO", lambda r: f"{r['PHYSTO']:.3f}")  # an upgrade makes it text
                await until(lambda: len(_received(dashboard, "relay/drift")) == 2, timeout=20)
                sim.set_field("ITMMVT", "ZLEADTIME", lambda r: 21)  # new values, same shape: nothing to announce
                await _polls_pass(sim, 8)
                async with aiohttp.ClientSession() as session, session.get(f"{relay.base_url}/metrics") as resp:
                    series = DRIFT_SERIES.search(await resp.text())
                assert series is not None
                assert float(series[1]) == 2
                relay.signal(signal.SIGTERM)
                relay.wait(timeout=15)

            with relay_process(config_path, tmp_path) as relay:
                await relay.wait_ready()
                sim.set_field("ITMMVT", "ZLEADTIME", lambda r: 28)
                await _polls_pass(sim, 8)
                assert len(_received(dashboard, "relay/drift")) == 2  # the stored shape was compared, quietly
                sim.set_field("ITMMVT", "ZBIN", lambda r: "A-01")  # and a change after the restart is news
                await until(lambda: len(_received(dashboard, "relay/drift")) == 3, timeout=20)
                await _polls_pass(sim, 6)
        finally:
            await dashboard.stop()

    added, retyped, after_restart = (p["data"] for p in _received(dashboard, "relay/drift"))
    assert (added["source"], added["resource"]) == ("aldgate-x3", "ITMMVT")
    assert (added["added"], added["removed"], added["retyped"]) == (["ZLEADTIME"], [], [])
    assert re.fullmatch(r"[A-Z-]+-\d{4}\|ALD0[12]", added["sampleKey"])
    assert (retyped["added"], retyped["retyped"]) == ([], [{"field": "PHYSTO", "from": "number", "to": "string"}])
    assert (after_restart["added"], after_restart["retyped"]) == (["ZBIN"], [])
    assert len(set(dashboard.delivered_ids())) == len(dashboard.delivered_ids()) == 3


async def test_one_failing_and_one_recovered_event_when_a_class_breaks_and_heals(tmp_path: Path) -> None:
    dashboard = Subscriber()
    await dashboard.start()
    async with running_x3_simulator(seed_data=False) as (sim, base_url):
        sim.seed_records("ITMMVT", 10)
        sim.seed_records("BPCUSTOMER", 5)
        config_path = write_config(tmp_path, _config(tmp_path, base_url, dashboard.url))
        try:
            with relay_process(config_path, tmp_path) as relay:
                await relay.wait_ready()
                await _polls_pass(sim, 6)
                sim.class_status["ITMMVT"] = 500  # broken by an upgrade; BPCUSTOMER still answers
                await until(lambda: len(_received(dashboard, "relay/source-health")) == 1, timeout=20)
                await _polls_pass(sim, 8)  # it keeps failing: announced once
                relay.signal(signal.SIGTERM)
                relay.wait(timeout=15)

            with relay_process(config_path, tmp_path) as relay:
                await relay.wait_ready()
                failed_before = sim.requests
                await until(lambda: sim.requests >= failed_before + 20, timeout=20)  # 3+ failed ITMMVT polls
                assert len(_received(dashboard, "relay/source-health")) == 1
                del sim.class_status["ITMMVT"]
                await until(lambda: len(_received(dashboard, "relay/source-health")) == 2, timeout=30)
                await _polls_pass(sim, 6)
        finally:
            await dashboard.stop()

    failing, recovered = (p["data"] for p in _received(dashboard, "relay/source-health"))
    assert (failing["source"], failing["resource"], failing["state"]) == ("aldgate-x3", "ITMMVT", "failing")
    assert failing["failures"] == 1  # a new definite error right after a success: announced at once
    assert "500" in failing["lastError"]
    assert (recovered["resource"], recovered["state"]) == ("ITMMVT", "recovered")
    assert recovered["failures"] >= 2  # the streak went on across the restart
    assert recovered["since"] > failing["since"]
    assert len(dashboard.delivered) == 2
