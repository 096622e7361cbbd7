"""The budget of body bytes read before a sender is known: per source and in all."""

from __future__ import annotations

from relay.ingest.json_push import UnauthenticatedBodies

CAPS = {"max_total_bytes": 300, "max_per_source_bytes": 200}


def test_each_cap_refuses_what_would_pass_it_and_release_gives_back() -> None:
    bodies = UnauthenticatedBodies()
    assert bodies.reserve("a", 150, **CAPS)
    assert not bodies.reserve("a", 100, **CAPS)  # a: 250 > 200
    assert bodies.reserve("a", 50, **CAPS)  # a: 200, exactly the cap
    assert bodies.reserve("b", 100, **CAPS)  # total: 300, exactly the cap
    assert not bodies.reserve("c", 1, **CAPS)  # total full, though c holds nothing
    bodies.release("a", 150)
    assert bodies.reserve("c", 100, **CAPS)
    for source, size in (("a", 50), ("b", 100), ("c", 100)):
        bodies.release(source, size)
    assert (bodies.total_bytes, bodies.by_source) == (0, {})


def test_a_lone_body_larger_than_the_caps_is_admitted_so_large_signed_bodies_still_work() -> None:
    bodies = UnauthenticatedBodies()
    assert bodies.reserve("a", 1000, **CAPS)
    assert not bodies.reserve("b", 1, **CAPS)
    bodies.release("a", 1000)
    assert bodies.reserve("b", 1000, **CAPS)
