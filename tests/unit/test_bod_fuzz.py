"""Hypothesis against the BOD parser and mapping: any input ends in events or a BodError, never a crash."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.ingest.bod import BodError, map_bod, parse_bod
from relay.sim.ion import BodFactory

EXAMPLES = int(os.environ.get("RELAY_FUZZ_EXAMPLES", "150"))
SEEDS = [BodFactory(seed=s).next_bod().xml for s in range(8)]


def _check(xml: bytes) -> None:
    try:
        bod = parse_bod(xml)
        events = map_bod(bod, tenant_id="T", source_logical_id=None)
    except BodError:
        return
    for event in events:
        assert event.payload["eventId"]
        assert event.channel


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_arbitrary_bytes(xml: bytes) -> None:
    _check(xml)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(SEEDS),
    cut=st.integers(min_value=0, max_value=6000),
    insert=st.binary(max_size=40) | st.sampled_from([b"<!DOCTYPE x>", b"&amp;", b"<![CDATA[x]]>", b"\x00", b"</a>"]),
)
def test_mutated_real_bods(base: bytes, cut: int, insert: bytes) -> None:
    position = cut % (len(base) + 1)
    _check(base[:position] + insert + base[position:])


@settings(max_examples=EXAMPLES, deadline=None)
@given(text=st.text(max_size=200))
def test_field_text_of_any_unicode(text: str) -> None:
    from xml.sax.saxutils import escape

    xml = SEEDS[0].replace(b"<Name>", b"<Name>" + escape(text).encode("utf-8", "surrogatepass"), 1)
    _check(xml)
