"""Quarantine keeps refused input within `quarantine.max_bytes` and `quarantine.retention`."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import make_app
from helpers import HUB_TOKEN, base_config, until

from relay.daemon import Retention
from relay.store import QuarantineEntry

BUDGET = 4 * 1024 * 1024


def _sample(metrics_text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", metrics_text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_malformed_bodies_never_grow_the_database_past_the_budget(tmp_path: Path) -> None:
    data = base_config(tmp_path, quarantine={"max_bytes": "4MiB"})
    app, _ = await make_app(tmp_path, data)
    try:
        async with app.client.get("/metrics") as r:
            dropped_before = _sample(await r.text(), 'relay_quarantine_dropped_total{reason="budget"}')
        ids = []
        for i in range(20):
            body = b"{" + str(i).encode() + b"x" * (1024 * 1024)  # 1 MiB of malformed JSON
            async with app.client.post(
                "/v1/sources/hub/events",
                data=io.BytesIO(body),
                headers={"Authorization": f"Bearer {HUB_TOKEN}", "Content-Type": "application/json"},
            ) as r:
                assert r.status == 400
                ids.append((await r.json())["quarantineId"])
        rows = await app.store.list_quarantine(limit=100)
        assert sum(r.size for r in rows) <= BUDGET
        assert [r.id for r in rows] == ids[::-1][: len(rows)], "the newest are kept"
        assert len(rows) == 3
        async with app.client.get("/metrics") as r:
            text = await r.text()
        assert _sample(text, 'relay_quarantine_dropped_total{reason="budget"}') - dropped_before == 17
        assert 0 < _sample(text, "relay_quarantine_bytes") <= BUDGET
        # Freed pages are reused: the file holds about the budget, not the 20 MiB that was sent.
        assert (tmp_path / "relay.db").stat().st_size < 2 * BUDGET
    finally:
        await app.client.close()
        await app.store.close()


async def test_retention_job_prunes_old_quarantine(tmp_path: Path) -> None:
    data = base_config(tmp_path, quarantine={"retention": "7d"})
    app, _ = await make_app(tmp_path, data)
    now = datetime.now(UTC)
    old = await app.store.quarantine(QuarantineEntry("hub", "old", b"{", now - timedelta(days=8)))
    recent = await app.store.quarantine(QuarantineEntry("hub", "recent", b"{", now - timedelta(days=6)))
    retention = Retention(app.runtime)
    await retention.start()
    try:

        async def pruned() -> bool:
            return await app.store.get_quarantine(old) is None

        await until(pruned, timeout=10)
        assert [r.id for r in await app.store.list_quarantine()] == [recent]
    finally:
        await retention.stop(1.0)
        await app.client.close()
        await app.store.close()
