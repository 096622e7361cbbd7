"""`relay demo --duration 20`: both ERPs reach both subscribers, every signature verifies, exit 0."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import arun_cli


async def test_demo_runs_and_shows_both_erps_reaching_both_subscribers(tmp_path: Path) -> None:
    result = await arun_cli("demo", "--duration", "20", "--state-dir", str(tmp_path / "demo"), timeout=120)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-2000:]
    rows = re.findall(
        r"│ (storefront|credit-app)\s*│ (Halloran \(Infor\)|Aldgate \(Sage X3\)) · ([\w-]+)\s*│ (\d+)", out
    )
    delivered = {(sub, erp): int(n) for sub, erp, _, n in rows}
    for sub in ("storefront", "credit-app"):
        for erp in ("Halloran (Infor)", "Aldgate (Sage X3)"):
            assert delivered.get((sub, erp), 0) > 0, (sub, erp, rows)
    assert re.search(r"storefront ← aldgate-x3\s+(purchaseorder|receipt)/synced", out), "no X3 purchase document"
    assert "signature BAD" not in out
    assert "some signatures did not verify" not in out
    assert "dead letters redriven: 1" in out
    # Write-back: the accepted quote became an X3 order, and its number reached the storefront by webhook.
    created = re.search(r"quote QUOTE-2026-0042 became X3 order (SO\d+) \(succeeded", out)
    assert created is not None
    assert f"storefront received order/created: X3 order {created.group(1)} for quote QUOTE-2026-0042" in out
