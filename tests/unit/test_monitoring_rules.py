"""Pure rules behind the monitoring metrics: resource labels, pending age, source health, cron delays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, Gauge

from relay import metrics
from relay.monitoring import pending_age_s
from relay.poll.scheduler import cron_delay_s, source_up

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("BPCUSTOMER", "BPCUSTOMER"),  # an X3 class
        ("itembalance", "itembalance"),  # an SX.e feed
        ("table:icsw", "table:icsw"),  # not a URL: kept as it is
        ("0:https://wms.example.com/stock", "0:https://wms.example.com/stock"),
        ("1:https://wms.example.com/stock?api_key=s3cret&page=1", "1:https://wms.example.com/stock"),
        ("2:https://user:pa55@wms.example.com/v1/items", "2:https://wms.example.com/v1/items"),
        ("3:https://wms.example.com?key=a@b", "3:https://wms.example.com"),
        ("4:https://wms.example.com/items#frag", "4:https://wms.example.com/items"),
        ("5:http://127.0.0.1:8081/stock?token=x", "5:http://127.0.0.1:8081/stock"),
    ],
)
def test_resource_label_drops_what_a_url_may_hide_a_secret_in(name: str, label: str) -> None:
    assert metrics.resource_label(name) == label


@pytest.mark.parametrize(
    ("oldest", "age_s"),
    [
        (None, 0.0),  # nothing pending
        (T0, 0.0),
        (T0 - timedelta(minutes=5), 300.0),
        (T0 + timedelta(seconds=30), 0.0),  # created "in the future": the wall clock stepped back
    ],
)
def test_pending_age(oldest: datetime | None, age_s: float) -> None:
    assert pending_age_s(oldest, T0) == age_s


@pytest.mark.parametrize(
    ("failures", "up"),
    [
        ([], True),
        ([0], True),
        ([0, 0, 0], True),
        ([0, 1], False),  # one failing resource is enough to call the source down
        ([3], False),
    ],
)
def test_source_up_needs_every_resource_healthy(failures: list[int], up: bool) -> None:
    assert source_up(failures) is up


@pytest.mark.parametrize(
    ("expression", "after", "delay_s"),
    [
        ("*/5 * * * *", T0, 300.0),
        ("*/5 * * * *", T0 + timedelta(seconds=30), 270.0),
        ("0 * * * *", T0, 3600.0),
        ("30 2 * * *", T0, 17.5 * 3600),  # 02:30 tomorrow
        ("0 9,17 * * *", T0, 8 * 3600.0),  # from 09:00: 17:00
        ("0 9,17 * * *", T0 + timedelta(hours=10), 14 * 3600.0),  # from 19:00: 09:00 tomorrow
    ],
)
def test_cron_delay_is_the_time_to_the_next_run(expression: str, after: datetime, delay_s: float) -> None:
    assert cron_delay_s(expression, after) == delay_s


def test_cron_delay_of_a_malformed_expression_is_an_error() -> None:
    with pytest.raises(ValueError, match="5 fields"):
        cron_delay_s("* * *", T0)


def test_forget_removes_a_series_and_labelling_again_recreates_it() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("relay_test_forget", "test", ["source"], registry=registry)
    metrics.register_known(sources=["gone-src"])
    metrics.labelled(gauge, "gone-src").set(0)
    assert registry.get_sample_value("relay_test_forget", {"source": "gone-src"}) == 0
    metrics.forget(gauge, "gone-src")
    assert registry.get_sample_value("relay_test_forget", {"source": "gone-src"}) is None
    metrics.forget(gauge, "gone-src")  # forgetting twice is harmless
    metrics.labelled(gauge, "gone-src").set(1)
    assert registry.get_sample_value("relay_test_forget", {"source": "gone-src"}) == 1
