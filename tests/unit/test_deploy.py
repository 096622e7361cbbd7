"""The shipped systemd unit: required directives present, and `systemd-analyze verify` clean where installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "erp-relay.service"


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def _seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "min": 60, "m": 60}
    for unit, factor in units.items():
        if value.endswith(unit):
            return float(value[: -len(unit)]) * factor
    return float(value)


def test_unit_has_the_operational_and_hardening_directives() -> None:
    d = _directives(UNIT.read_text())
    assert d["Type"] == ["notify"]
    assert d["NotifyAccess"] == ["main"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "WatchdogSec" in d
    assert d["DynamicUser"] == ["yes"]
    assert d["StateDirectory"] == ["erp-relay"]
    assert d["ConfigurationDirectory"] == ["erp-relay"]
    assert any(v.startswith("admin-tokens:") for v in d["LoadCredential"])
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
    }.items():
        assert d[key] == [value], key
    assert "AF_INET" in d["RestrictAddressFamilies"][0]
    assert "@system-service" in d["SystemCallFilter"]
    # The stop timeout must leave room for the drain grace (10 s by default) and a subscriber timeout.
    assert _seconds(d["TimeoutStopSec"][0]) > 10 + 15


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    relay_bin = Path(sys.executable).parent / "relay"
    unit = tmp_path / "erp-relay.service"
    unit.write_text(UNIT.read_text().replace("/opt/erp-relay/.venv/bin/relay", str(relay_bin)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if str(unit) in line]
    assert result.returncode == 0, result.stderr
    assert complaints == []
