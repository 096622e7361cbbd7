"""LeaseKeeper: which leases it renews, which it reports lost, and when it renews."""

from __future__ import annotations

import asyncio

import pytest
from helpers import until

from relay.leases import LeaseKeeper, renewal_period_s


def test_a_lease_is_renewed_every_third_of_it() -> None:
    assert renewal_period_s(30.0) == 10.0


async def test_keys_not_renewed_while_held_are_lost_until_released() -> None:
    asked: list[dict[int, str]] = []

    async def renew(held: dict[int, str]) -> set[int]:
        asked.append(dict(held))
        return {1}  # 2's lease ran out and was taken over

    keeper: LeaseKeeper[int, str] = LeaseKeeper("test", renew, lambda: 30.0)
    keeper.hold(1, "token-1")
    keeper.hold(2, "token-2")
    await keeper.renew()
    assert asked == [{1: "token-1", 2: "token-2"}]
    assert (keeper.held, keeper.lost) == ({1: "token-1"}, {2})
    keeper.release(2)
    keeper.release(1)
    assert (keeper.held, keeper.lost) == ({}, set())
    await keeper.renew()  # nothing held: the store is not asked
    assert len(asked) == 1


async def test_a_failed_renewal_loses_nothing() -> None:
    async def renew(held: dict[int, str]) -> set[int]:
        raise ConnectionError("store unavailable")

    keeper: LeaseKeeper[int, str] = LeaseKeeper("test", renew, lambda: 30.0)
    keeper.hold(1, "token-1")
    await keeper.renew()
    assert (keeper.held, keeper.lost) == ({1: "token-1"}, set())


@pytest.mark.parametrize("reconfigured", [True, False])
async def test_a_shorter_lease_after_a_reload_is_renewed_at_its_own_pace(reconfigured: bool) -> None:
    lease_s = [600.0]  # the loop starts waiting 200 s
    renewals: list[dict[int, None]] = []

    async def renew(held: dict[int, None]) -> set[int]:
        renewals.append(dict(held))
        return set(held)

    keeper: LeaseKeeper[int, None] = LeaseKeeper("test", renew, lambda: lease_s[0])
    keeper.start()
    try:
        await asyncio.sleep(0)  # one turn of the loop: the new task runs up to its (200 s) wait, deterministically
        keeper.hold(7, None)
        lease_s[0] = 0.3  # a reload shortens the lease
        if reconfigured:
            keeper.reconfigured()
            await until(lambda: len(renewals) >= 3, timeout=2)  # at once, then every 0.1 s
        else:
            with pytest.raises(AssertionError, match="condition not met"):
                await until(lambda: renewals, timeout=0.5)  # still in its old 200 s wait
    finally:
        await keeper.stop()
