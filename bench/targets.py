"""The performance targets and how each is judged from the results (pure: results in, verdicts out)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INGEST_RATIO_MIN = 0.60
FANOUT_RATIO_MIN = 0.50
LATENCY_P99_MAX_MS = 25.0
REPLAY_RATE_MIN = 5000.0
RSS_GROWTH_MAX = 0.10


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    target: str
    measured: str
    met: bool | None  # None: not measured in this run

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "measured": self.measured, "met": self.met}


def _get(results: dict[str, Any], *path: str) -> Any:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator


def paired_ratio(
    results: dict[str, Any], num: tuple[str, str], den: tuple[str, str]
) -> tuple[float | None, list[tuple[float, float]]]:
    """Relay figure over baseline figure: the median of per-round ratios when both ran in the same rounds.

    Pairing each relay run with the baseline run next to it cancels slow drifts of the machine's speed
    (other work on a shared host) that would otherwise skew a ratio of two medians.
    """
    num_runs = _get(results, num[0], "runs")
    den_runs = _get(results, den[0], "runs")
    if isinstance(num_runs, list) and isinstance(den_runs, list) and len(num_runs) == len(den_runs) > 1:
        pairs = [(n, d) for n, d in zip(num_runs, den_runs, strict=True) if n and d]
        if pairs:
            return sorted(n / d for n, d in pairs)[(len(pairs) - 1) // 2], pairs
    return ratio(_get(results, *num), _get(results, *den)), []


def _ratio_text(
    value: float, unit: str, base: float, base_unit: str, r: float, pairs: list[tuple[float, float]]
) -> str:
    if not pairs:
        return f"{value:,.0f} {unit} vs {base:,.0f} {base_unit}: {r:.0%}"
    # Each relay round over the baseline round next to it; the verdict takes the median of those ratios.
    rounds = "; ".join(f"{n:,.0f} / {d:,.0f} = {n / d:.0%}" for n, d in pairs)
    return f"{r:.0%}, the median of the paired rounds ({unit} / {base_unit}: {rounds})"


def verdicts(results: dict[str, Any]) -> list[Verdict]:
    out: list[Verdict] = []
    base_a = _get(results, "baseline_a", "requests_per_s")
    accepted = _get(results, "ingest_full", "accepted_per_s")
    r, pairs = paired_ratio(results, ("ingest_full", "accepted_per_s"), ("baseline_a", "requests_per_s"))
    out.append(
        Verdict(
            "Ingest, synchronous=FULL",
            f"≥ {INGEST_RATIO_MIN:.0%} of baseline A",
            _ratio_text(accepted, "accepted/s", base_a, "req/s", r, pairs) if r is not None else "not measured",
            None if r is None else r >= INGEST_RATIO_MIN,
        )
    )
    base_b = _get(results, "baseline_b", "posts_per_s")
    fan = _get(results, "fanout", "deliveries_per_s")
    r, pairs = paired_ratio(results, ("fanout", "deliveries_per_s"), ("baseline_b", "posts_per_s"))
    out.append(
        Verdict(
            "Fan-out to 3 subscribers",
            f"≥ {FANOUT_RATIO_MIN:.0%} of baseline B",
            _ratio_text(fan, "deliveries/s", base_b, "posts/s", r, pairs) if r is not None else "not measured",
            None if r is None else r >= FANOUT_RATIO_MIN,
        )
    )
    p99 = _get(results, "latency_1", "ack_to_receipt_ms", "p99")
    rate = _get(results, "latency_1", "rate_target")
    out.append(
        Verdict(
            f"End-to-end latency p99 at {rate or 500:,.0f} events/s",
            f"≤ {LATENCY_P99_MAX_MS:.0f} ms",
            f"{p99:.1f} ms (202 answer → receiver)" if p99 is not None else "not measured",
            None if p99 is None else p99 <= LATENCY_P99_MAX_MS,
        )
    )
    replay_rate = _get(results, "replay", "deliveries_per_s")
    out.append(
        Verdict(
            "Replay delivery rate",
            f"≥ {REPLAY_RATE_MIN:,.0f} deliveries/s",
            f"{replay_rate:,.0f} deliveries/s" if replay_rate is not None else "not measured",
            None if replay_rate is None else replay_rate >= REPLAY_RATE_MIN,
        )
    )
    lo = _get(results, "replay", "rss_kib_during_replay", "min")
    hi = _get(results, "replay", "rss_kib_during_replay", "max")
    growth = (hi - lo) / lo if lo else None
    out.append(
        Verdict(
            "RSS flat during replay",
            f"max ≤ min + {RSS_GROWTH_MAX:.0%}",
            f"{lo / 1024:.1f} → {hi / 1024:.1f} MiB (+{growth:.1%})" if growth is not None else "not measured",
            None if growth is None else growth <= RSS_GROWTH_MAX,
        )
    )
    return out
