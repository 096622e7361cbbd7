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


def test_the_heap_is_trimmed_once_a_burst_of_bodies_is_over() -> None:
    bodies = UnauthenticatedBodies()
    half = UnauthenticatedBodies.TRIM_AFTER_BYTES // 2
    caps = {"max_total_bytes": 4 * half, "max_per_source_bytes": 4 * half}
    assert bodies.reserve("a", half, **caps)
    assert bodies.reserve("b", half, **caps)
    assert not bodies.release("a", half)  # b is still being read
    assert bodies.release("b", half)  # the burst is over
    assert bodies.reserve("a", 100, **caps)
    assert not bodies.release("a", 100)  # a small body alone: no trim
