"""Wall-clock steps, noticed against the monotonic clock.

Retry times and leases are stored as wall-clock instants (they must survive a restart), so a step of the
system clock (NTP after a long suspend, an operator, a VM restored from a snapshot) would move every retry:
a step back of an hour would hold them all for an extra hour. The dispatcher asks `ClockWatch.check` on
every turn and shifts the stored schedule by any step it reports; in-memory timers (circuit breakers) run
on `steady`, which never steps.
"""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["ClockWatch"]


class ClockWatch:
    """Compares wall-clock progress with monotonic progress between two looks."""

    def __init__(self, wall: datetime, mono: float, *, threshold_s: float = 2.0) -> None:
        """Start watching.

        Args:
            wall: the wall clock now (aware).
            mono: the monotonic clock now, seconds.
            threshold_s: smaller differences are ordinary jitter (or NTP slewing), not steps.
        """
        self.threshold_s = threshold_s
        self._wall = wall
        self._mono = mono
        self._origin = wall - timedelta(seconds=mono)

    def check(self, wall: datetime, mono: float) -> float:
        """How far the wall clock stepped since the last look, in seconds (0.0 below the threshold).

        Each look re-anchors, so a slow drift never adds up to a step and a step is reported once.

        Args:
            wall: the wall clock now (aware).
            mono: the monotonic clock now, seconds.
        """
        step = (wall - self._wall).total_seconds() - (mono - self._mono)
        self._wall, self._mono = wall, mono
        return step if abs(step) >= self.threshold_s else 0.0

    def steady(self, mono: float) -> datetime:
        """A datetime that follows the monotonic clock: the wall clock at start plus the time elapsed since.

        Args:
            mono: the monotonic clock now, seconds.
        """
        return self._origin + timedelta(seconds=mono)

    @staticmethod
    def shift_since(now: datetime, step_s: float) -> datetime:
        """After a step of `step_s` seconds, where the stored schedule starts to need moving.

        Forward: what lay after the old clock's now (now - step) was still waiting, so it keeps its delay.
        Backward: everything after the new now moves back, including retries that were already due by
        the old clock (they become due at once instead of waiting for the old time to come round again).

        Args:
            now: the wall clock now, after the step.
            step_s: the step, seconds (positive: forward).
        """
        return min(now, now - timedelta(seconds=step_s))
