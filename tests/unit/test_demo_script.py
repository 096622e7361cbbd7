"""The demo's scripted stock: which on-hand quantity holds when, and how a short demo compresses the script."""

from __future__ import annotations

import pytest

from relay.demo import script_time_scale, scripted_stock


@pytest.mark.parametrize(
    ("elapsed_s", "time_scale", "on_hand"),
    [
        (0.0, 1.0, 40),
        (2.9, 1.0, 40),
        (3.0, 1.0, 18),
        (6.0, 1.0, 7),  # below the rule's threshold of 10 available: the low-stock alert
        (11.9, 1.0, 7),
        (12.0, 1.0, 60),  # above the restore level of 20: stock restored
        (600.0, 1.0, 60),
        (3.0, 0.5, 7),  # a 10 s demo runs the script twice as fast
        (6.0, 0.5, 60),
    ],
)
def test_scripted_stock(elapsed_s: float, time_scale: float, on_hand: int) -> None:
    assert scripted_stock(elapsed_s, time_scale) == on_hand


@pytest.mark.parametrize(("duration_s", "scale"), [(None, 1.0), (30.0, 1.0), (20.0, 1.0), (10.0, 0.5), (5.0, 0.25)])
def test_script_time_scale(duration_s: float | None, scale: float) -> None:
    assert script_time_scale(duration_s) == scale
