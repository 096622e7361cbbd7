"""200 orders through `relay serve` while X3 times out after creating on 30 % of first attempts and the relay is
SIGKILLed twice: every command ends succeeded and X3 holds exactly 200 orders, none twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from helpers import base_config, relay_process, until, write_config

from relay.sim.x3 import running_x3_simulator

TOKEN = "quotes-token-0123456789"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
COUNT = 200


@pytest.mark.slow
async def test_two_sigkills_and_timeouts_after_create_still_make_exactly_one_order_per_command(tmp_path: Path) -> None:
    async with running_x3_simulator(seed=7) as (sim, url):
        sim.after_create_rate = 0.3
        sim.hang_s = 2.0
        sim.create_delay_s = 0.01
        data = base_config(
            tmp_path,
            sources=[
                {
                    "name": "aldgate-x3",
                    "kind": "x3",
                    "base_url": url,
                    "folder": "ALDGATE",
                    "auth": sim.demo_auth(),
                    "timeout": "500ms",
                    "commands": {
                        "auth": {"type": "bearer", "tokens": [TOKEN]},
                        "max_in_flight": 8,
                        "retry": {"schedule": ["100ms", "200ms", "500ms"], "max_age": "1h"},
                        "lease": "3s",
                    },
                }
            ],
        )
        config_path = write_config(tmp_path, data)
        ids: list[str] = []
        adopted = 0
        async with aiohttp.ClientSession() as http:
            for round_no, kill_after in enumerate((60, 130, None)):
                with relay_process(config_path, tmp_path) as relay:
                    await relay.wait_ready()
                    if round_no == 0:
                        for n in range(COUNT):
                            body = {
                                "customerNumber": f"C{n % 40:05d}",
                                "customerReference": f"Q-{n:04d}",
                                "lines": [{"partNumber": "BOX-M-KRAFT", "quantity": n + 1}],
                            }
                            async with http.post(
                                relay.base_url + "/v1/sources/aldgate-x3/commands/order/create",
                                json=body,
                                headers={**HEADERS, "Idempotency-Key": f"quote-{n}"},
                            ) as resp:
                                assert resp.status == 202
                                ids.append((await resp.json())["commandId"])
                    if kill_after is not None:
                        await until(lambda k=kill_after: len(sim.orders) >= k, timeout=60, interval=0.01)
                        relay.kill()
                        continue

                    async def all_succeeded() -> bool:
                        for command_id in ids:
                            async with http.get(f"{relay.base_url}/v1/commands/{command_id}", headers=HEADERS) as r:
                                if (await r.json())["status"] != "succeeded":
                                    return False
                        return True

                    await until(all_succeeded, timeout=120, interval=0.5)
                    for command_id in ids:
                        async with http.get(f"{relay.base_url}/v1/commands/{command_id}", headers=HEADERS) as r:
                            adopted += bool((await r.json())["result"].get("adopted"))
        references = Counter(o["CUSORDREF"] for o in sim.orders)
        assert len(references) == COUNT
        assert max(references.values()) == 1, [r for r, n in references.items() if n > 1]
        assert len(sim.orders) == COUNT
        # The faults happened: first attempts that timed out after creating were found and adopted.
        assert sim.creates == COUNT
        assert adopted >= COUNT * 0.15
