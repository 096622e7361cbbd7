"""`relay demo --duration 20`: both ERPs reach both subscribers, every signature verifies, a live lookup answers
and a low-stock alert arrives, exit 0."""

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
    # A live lookup before and after the scripted part's stock falls, answered by the SX.e simulator.
    lookup = r"storefront → GET /v1/sources/halloran-sxe/availability\?part=BRK-20A&warehouse=MAIN\n"
    for available in (40, 7):
        answer = rf"\s+200 live: MAIN on hand {available}, allocated 0, available {available} in [\d.]+ ms"
        assert re.search(lookup + answer, out), (available, out[-3000:])
    # The stock crossing the rule's thresholds reaches the storefront as signed alerts, in order.
    alerts = re.findall(r"(low-stock alert|stock restored) at storefront: BRK-20A\|MAIN available (\d+)", out)
    assert alerts == [("low-stock alert", "7"), ("stock restored", "60")], out[-3000:]
    assert re.search(r"storefront ← rule:low-stock\s+inventory/low-stock\s+low-stock\.poll-\S+ #1 signature ok", out)
    # Write-back: the accepted quote became an X3 order, and its number reached the storefront by webhook.
    created = re.search(r"quote QUOTE-2026-0042 became X3 order (SO\d+) \(succeeded", out)
    assert created is not None
    assert f"storefront received order/created: X3 order {created.group(1)} for quote QUOTE-2026-0042" in out
