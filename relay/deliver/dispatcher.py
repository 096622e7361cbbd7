"""The delivery engine: claims due deliveries with a lease, sends signed POSTs, applies the retry policy.

Isolation between subscribers: each has its own in-flight budget, rate limit and circuit breaker, and
claims are made per subscriber, so one that is down or slow only ever holds its own slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import aiohttp
import structlog
from yarl import URL

from relay import metrics
from relay.config import Config, SubscriberConfig
from relay.deliver.clock import ClockWatch
from relay.deliver.retry import (
    AttemptOutcome,
    CircuitBreaker,
    TokenBucket,
    decide,
    describe,
    shared_circuit_step,
    shared_rate_batch,
    shared_rate_wait_s,
)
from relay.guard import GuardedResolver, target_refusal, target_url
from relay.leases import LeaseKeeper
from relay.runtime import Runtime
from relay.signing import header_refusal, parse_secret, signature_header
from relay.store import ClaimedDelivery, ClaimRequest, Completion, Store, StoreUnavailable

log = structlog.get_logger(__name__)

__all__ = ["Dispatcher"]

RESPONSE_EXCERPT_BYTES = 1024
ERROR_TEXT_CHARS = 300
USER_AGENT = "erp-relay (+https://github.com/erp-relay/erp-relay)"
# Tokens taken from a shared bucket and not used (nothing was due) go back after this long: held longer, every
# instance's leftovers would add to the burst the subscriber sees.
SHARED_TOKEN_HOLD_S = 1.0


@lru_cache(maxsize=256)
def _keys(secrets: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(parse_secret(s) for s in secrets)


@dataclass(eq=False)
class _SubscriberRuntime:
    """In-memory state of one subscriber in this process.

    `target` is the URL the client is given, built once; `refusal` is the guard's answer for exactly that
    URL (or why it could not be built), so the host judged is the host dialled.
    """

    config: SubscriberConfig
    breaker: CircuitBreaker
    bucket: TokenBucket | None
    target: URL | None = None
    refusal: str | None = None
    in_flight: int = 0
    disabled: bool = False
    last_circuit_state: str = "closed"
    circuit_seen: str | None = None  # the stored circuit change last taken over from a shared store
    # On a shared store `rate_limit` is one bucket in the database: tokens taken from it, not used yet.
    shared_tokens: int = 0
    shared_tokens_at: float = 0.0  # monotonic time of the take
    shared_ask_at: float = 0.0  # monotonic time the shared bucket may have a whole token again
    rng: random.Random = field(default_factory=random.Random)


def _wants_claim(sub: _SubscriberRuntime) -> bool:
    """Whether the subscriber has room for a claim. Claims go in batches: a claim is a write transaction, so
    refilling one freed slot at a time would cost one transaction per delivery under load; an idle
    subscriber is served at once."""
    free = sub.config.max_in_flight - sub.in_flight
    return free > 0 and (sub.in_flight == 0 or free >= max(1, sub.config.max_in_flight // 4))


def _now() -> datetime:
    return datetime.now(UTC)


def _error_text(text: str) -> str:
    # Recorded errors may quote what a peer or an exception said: keep them short and always storable
    # (a lone surrogate would fail the completion's commit and bring the delivery back forever).
    return text[:ERROR_TEXT_CHARS].encode("utf-8", "replace").decode("utf-8")


class Dispatcher:
    """Runs inside `relay serve`; one per process. `wake()` after new deliveries are committed."""

    def __init__(self, runtime: Runtime, *, owner: str | None = None) -> None:
        self.runtime = runtime
        self.owner = owner or f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self._subs: dict[str, _SubscriberRuntime] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._state_task: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._completions: list[Completion] = []
        # Deliveries this process claimed whose completion is not yet handed to the store: id -> fencing token.
        # Renewed while in flight: a long request keeps its delivery, while a process that dies gives its
        # deliveries up within one lease (they are claimed again elsewhere, or after a restart).
        self._leases: LeaseKeeper[int, int | None] = LeaseKeeper("delivery", self._renew_leases, self._lease_s)
        # The earliest retry this process scheduled: wake for it instead of waiting a whole poll interval.
        self._next_retry_at: datetime | None = None
        self._clock = ClockWatch(_now(), time.monotonic())
        self._unshifted_step_s = 0.0  # a clock step whose schedule shift could not be written yet
        self._apply_subscribers(runtime.config)

    # ------------------------------------------------------------------------------------ lifecycle

    @property
    def store(self) -> Store:
        return self.runtime.store

    @property
    def in_flight(self) -> int:
        """Deliveries being sent by this process now."""
        return sum(sub.in_flight for sub in self._subs.values())

    def _apply_subscribers(self, config: Config) -> None:
        fresh: dict[str, _SubscriberRuntime] = {}
        for sub in config.subscribers:
            old = self._subs.get(sub.name)
            breaker = (
                old.breaker
                if old is not None and old.config.circuit == sub.circuit
                else CircuitBreaker(sub.circuit.failure_threshold, sub.circuit.cooldown_s)
            )
            bucket = TokenBucket(sub.rate_limit) if sub.rate_limit else None
            state = _SubscriberRuntime(sub, breaker, bucket)
            try:
                state.target = target_url(sub.url)
                state.refusal = target_refusal(state.target, allow_private_network=sub.allow_private_network)
            except ValueError:
                state.refusal = "malformed URL"
            if old is not None:
                state.in_flight = old.in_flight
                state.disabled = old.disabled
                state.last_circuit_state = old.last_circuit_state
            fresh[sub.name] = state
        self._subs = fresh

    def _allow_private_for_host(self, host: str) -> bool:
        # A host may reach private addresses only if every subscriber using it allows that: connections
        # are pooled per host, so a looser subscriber must not open the way for a stricter one.
        # aiohttp asks the resolver with the URL's raw (IDNA-encoded) host.
        using = [s.config for s in self._subs.values() if s.target is not None and s.target.raw_host == host]
        return bool(using) and all(s.allow_private_network for s in using)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self._allow_private_for_host),
            limit=self.runtime.config.delivery.max_concurrency,
            limit_per_host=0,
            ttl_dns_cache=10,
            enable_cleanup_closed=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": USER_AGENT},
            auto_decompress=False,
            raise_for_status=False,
        )
        await self._load_subscriber_states()
        self.store.add_commit_listener(self.wake)
        self._loop_task = asyncio.create_task(self._run(), name="dispatcher")
        self._state_task = asyncio.create_task(self._refresh_states_forever(), name="dispatcher-states")
        self._leases.start()
        log.info("dispatcher started", owner=self.owner, subscribers=len(self._subs))

    def reconfigure(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._apply_subscribers(runtime.config)
        self._leases.reconfigured()
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def enable(self, name: str) -> None:
        """Resume a subscriber that a 410 disabled (the store was already updated)."""
        sub = self._subs.get(name)
        if sub is not None:
            sub.disabled = False
            self.wake()

    def circuit_status(self, name: str) -> tuple[str, int] | None:
        """(circuit state, consecutive failures) of a subscriber in this process; None for an unknown name."""
        sub = self._subs.get(name)
        if sub is None:
            return None
        return sub.breaker.state, sub.breaker.consecutive_failures

    def record_probe(self, name: str, status: int | None, error: str | None) -> str | None:
        """An operator's probe (a signed test event) counts for the circuit like an attempt: a 2xx closes it
        and deliveries flow at once; a failure counts. Returns the state after; None for an unknown name."""
        sub = self._subs.get(name)
        if sub is None:
            return None
        self._record_circuit(sub, AttemptOutcome(status=status, error=error), self._clock.steady(time.monotonic()))
        self.wake()
        return sub.breaker.state

    async def stop(self, grace_s: float) -> None:
        """Stop claiming, let attempts in flight finish within `grace_s`, release the rest's leases."""
        self._stopping = True
        self.wake()
        for task in (self._loop_task, self._state_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._attempts:
            _, pending = await asyncio.wait(set(self._attempts), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
                log.warning("attempts cut off at shutdown", count=len(pending))
        await self._leases.stop()
        with contextlib.suppress(StoreUnavailable):
            await self._flush_completions()
            released = await self.store.release_leases(self.owner)
            log.info("dispatcher stopped", leases_released=released)
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------------------------ claiming

    async def _load_subscriber_states(self) -> None:
        try:
            states = await self.store.subscriber_states()
        except StoreUnavailable:
            return
        steady = self._clock.steady(time.monotonic())
        for name, sub in self._subs.items():
            st = states.get(name)
            sub.disabled = bool(st and st.disabled)
            if st is not None and self.store.shared:
                self._share_circuit(sub, st.circuit_state, st.circuit_changed_at, steady)
        for name, sub in self._subs.items():
            metrics.labelled(metrics.DELIVERIES_PENDING, name).set(states[name].pending if name in states else 0)
            metrics.labelled(metrics.DEAD_LETTERS, name).set(states[name].dead if name in states else 0)
            metrics.labelled(metrics.CIRCUIT_OPEN, name).set(1 if sub.breaker.state == "open" else 0)

    def _share_circuit(
        self, sub: _SubscriberRuntime, stored: str | None, changed_at: str | None, now: datetime
    ) -> None:
        """One instance's open circuit holds for all on a shared store, and its successful probe closes it."""
        step = shared_circuit_step(sub.breaker.state, stored, changed_at, sub.circuit_seen)
        sub.circuit_seen = changed_at
        if step == "keep":
            return
        if step == "open":
            sub.breaker.trip(now)
        else:
            sub.breaker.record_success(now)
        state = sub.breaker.state
        sub.last_circuit_state = state
        metrics.labelled(metrics.CIRCUIT_OPEN, sub.config.name).set(1 if state == "open" else 0)
        log.info("circuit " + state + " (from another instance)", subscriber=sub.config.name)
        if state == "closed":
            self.wake()

    async def _refresh_states_forever(self) -> None:
        # Picks up `relay subscribers enable` from another process, and keeps the gauges current.
        while True:
            await asyncio.sleep(1.0)
            before = {n: s.disabled for n, s in self._subs.items()}
            await self._load_subscriber_states()
            if any(before.get(n) and not s.disabled for n, s in self._subs.items()):
                self.wake()

    def _claim_requests(self, now: datetime) -> list[ClaimRequest]:
        requests = []
        mono = time.monotonic()
        lease_s = self.runtime.config.delivery.lease_s
        for name, sub in self._subs.items():
            if sub.disabled:
                continue
            if not _wants_claim(sub):
                continue
            free = sub.config.max_in_flight - sub.in_flight
            if not sub.breaker.allow(self._clock.steady(mono)):
                continue
            probing = sub.breaker.state == "half-open"
            if probing:
                free = 1
            if sub.bucket is not None and self.store.shared:
                free = min(free, sub.shared_tokens)
                sub.shared_tokens -= free
            elif sub.bucket is not None:
                granted = 0
                while granted < free and sub.bucket.try_take(mono):
                    granted += 1
                free = granted
            if free <= 0:
                if probing:
                    sub.breaker.release_probe()
                continue
            lease_until = now + timedelta(seconds=lease_s)  # renewed while the attempt is in flight
            requests.append(ClaimRequest(name, free, sub.config.ordering == "per-key", lease_until))
        return requests

    def _idle_wait_s(self) -> float:
        wait = self.runtime.config.delivery.poll_interval_s
        if self._next_retry_at is not None:
            until_retry = (self._next_retry_at - _now()).total_seconds()
            if until_retry <= 0:
                self._next_retry_at = None
            wait = min(wait, max(0.001, until_retry))
        mono = time.monotonic()
        for sub in self._subs.values():
            if sub.bucket is None or sub.in_flight >= sub.config.max_in_flight:
                continue
            if not self.store.shared:
                wait = min(wait, max(0.001, sub.bucket.delay_until_available(mono)))
            elif sub.shared_tokens == 0:
                wait = min(wait, max(0.001, sub.shared_ask_at - mono))
            else:
                wait = min(wait, max(0.001, sub.shared_tokens_at + SHARED_TOKEN_HOLD_S - mono))
        return wait

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            now = _now()
            await self._follow_clock_steps(now)
            if self.store.shared:
                await self._take_shared_tokens()
            requests = self._claim_requests(now)
            claimed: list[ClaimedDelivery] = []
            if requests:
                try:
                    claimed = await self.store.claim_deliveries(self.owner, now, requests)
                except Exception as exc:  # any failure: try again shortly rather than end the claim loop
                    log.warning("claim failed", error=str(exc))
                    self._release_unused_probes(requests, [])
                    await asyncio.sleep(1.0)
                    continue
            self._refund_tokens(requests, claimed)
            self._release_unused_probes(requests, claimed)
            for delivery in claimed:
                sub = self._subs.get(delivery.subscriber)
                if sub is None:
                    continue
                sub.in_flight += 1
                self._leases.hold(delivery.id, delivery.lease_token)
                task = asyncio.create_task(self._attempt(sub, delivery))
                self._attempts.add(task)
                task.add_done_callback(self._attempts.discard)
            if claimed and any(len([c for c in claimed if c.subscriber == r.subscriber]) >= r.limit for r in requests):
                continue  # a full claim: more may be due right now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._idle_wait_s())

    def _lease_s(self) -> float:
        return self.runtime.config.delivery.lease_s

    async def _renew_leases(self, held: dict[int, int | None]) -> set[int]:
        # Not renewed while still in flight: the lease ran out and another claim took the delivery. This attempt's
        # completion will be refused (the fence); the delivery goes on under the new claim.
        until = _now() + timedelta(seconds=self._lease_s())
        return await self.store.renew_leases(self.owner, list(held.items()), until)

    async def _follow_clock_steps(self, now: datetime) -> None:
        step_s = self._clock.check(now, time.monotonic()) + self._unshifted_step_s
        if not step_s:
            return
        try:
            moved = await self.store.shift_schedule(ClockWatch.shift_since(now, step_s), step_s)
        except StoreUnavailable as exc:
            self._unshifted_step_s = step_s  # tried again on the next turn
            log.warning("clock step not applied yet", step_s=round(step_s, 3), error=str(exc))
            return
        self._unshifted_step_s = 0.0
        self._next_retry_at = None
        log.warning("wall clock stepped; retry schedule moved with it", step_s=round(step_s, 3), deliveries=moved)

    def _release_unused_probes(self, requests: Sequence[ClaimRequest], claimed: Sequence[ClaimedDelivery]) -> None:
        # A half-open breaker grants one probe per `allow`; when nothing was due, give it back so the next
        # delivery that becomes due can probe at once instead of waiting another cooldown.
        with_claims = {c.subscriber for c in claimed}
        for req in requests:
            sub = self._subs.get(req.subscriber)
            if sub is not None and req.subscriber not in with_claims and sub.breaker.state == "half-open":
                sub.breaker.release_probe()

    def _refund_tokens(self, requests: Sequence[ClaimRequest], claimed: Sequence[ClaimedDelivery]) -> None:
        for req in requests:
            sub = self._subs.get(req.subscriber)
            if sub is None or sub.bucket is None:
                continue
            used = sum(1 for c in claimed if c.subscriber == req.subscriber)
            if self.store.shared:
                sub.shared_tokens += req.limit - used  # kept for the next claim, or given back after a while
            else:
                sub.bucket.refund(req.limit - used)

    async def _take_shared_tokens(self) -> None:
        """On a shared store, take tokens from each rate-limited subscriber's bucket in the database (one limit
        for all instances) before claiming; give back tokens held unused too long."""
        mono = time.monotonic()
        for name, sub in self._subs.items():
            bucket = sub.bucket
            if bucket is None:
                continue
            try:
                if sub.shared_tokens and (sub.disabled or mono - sub.shared_tokens_at >= SHARED_TOKEN_HOLD_S):
                    await self.store.return_rate_tokens(name, sub.shared_tokens, bucket.burst)
                    sub.shared_tokens = 0
                if sub.shared_tokens or sub.disabled or mono < sub.shared_ask_at or not _wants_claim(sub):
                    continue
                wanted = shared_rate_batch(bucket.rate_per_s, sub.config.max_in_flight - sub.in_flight)
                granted, left = await self.store.take_rate_tokens(name, bucket.rate_per_s, bucket.burst, wanted)
            except StoreUnavailable as exc:
                log.warning("shared rate limit unavailable", subscriber=name, error=str(exc))
                sub.shared_ask_at = mono + 1.0  # nothing is sent without a token: ask again shortly
                continue
            sub.shared_tokens, sub.shared_tokens_at = granted, mono
            sub.shared_ask_at = mono if granted else mono + shared_rate_wait_s(left, bucket.rate_per_s)

    # ------------------------------------------------------------------------------------ attempts

    def _request(self, sub: SubscriberConfig, d: ClaimedDelivery, attempt: int) -> tuple[bytes, dict[str, str]]:
        if sub.format == "xml" and d.original is not None:
            body, content_type = d.original, d.original_type or "application/xml"
        else:
            body, content_type = d.payload, "application/json"
        timestamp = int(time.time())
        headers = {
            **sub.headers,
            "content-type": content_type,
            "webhook-id": d.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(_keys(tuple(sub.secrets)), d.event_id, timestamp, body),
            "relay-channel": d.channel,
            "relay-source": d.source,
            "relay-attempt": str(attempt),
            "relay-replay": "true" if d.replay else "false",
        }
        return body, headers

    def _prepare(
        self, sub: SubscriberConfig, d: ClaimedDelivery, attempt: int
    ) -> tuple[bytes, dict[str, str]] | AttemptOutcome:
        """The body and headers of one attempt, or why it can never be sent (a permanent failure)."""
        try:
            body, headers = self._request(sub, d, attempt)
        except Exception as exc:
            # Building depends only on the stored event and the configuration: it would fail the same again.
            return AttemptOutcome(error=_error_text(f"request not built: {type(exc).__name__}: {exc}"), permanent=True)
        for name, value in headers.items():
            refusal = header_refusal(name, value)
            if refusal is not None:
                return AttemptOutcome(error=f"cannot be sent: {refusal}", permanent=True)
        return body, headers

    async def _send(
        self, sub: _SubscriberRuntime, body: bytes, headers: dict[str, str]
    ) -> tuple[AttemptOutcome, bytes | None]:
        """Post one attempt to the URL the guard judged; every failure comes back as an outcome."""
        assert self._session is not None
        if sub.refusal is not None or sub.target is None:
            return AttemptOutcome(error=f"refused: {sub.refusal}"), None
        try:
            async with self._session.post(
                sub.target,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=sub.config.timeout_s),
            ) as resp:
                excerpt = await resp.content.read(RESPONSE_EXCERPT_BYTES)
                return AttemptOutcome(status=resp.status, retry_after=resp.headers.get("Retry-After")), excerpt
        except TimeoutError:
            return AttemptOutcome(error="timeout"), None
        except aiohttp.ClientConnectorError as exc:
            return AttemptOutcome(error=f"connection failed: {exc.os_error.strerror or exc.os_error}"), None
        except aiohttp.ClientError as exc:
            return AttemptOutcome(error=_error_text(f"{type(exc).__name__}: {exc}")), None
        except OSError as exc:  # the SSRF resolver refuses with OSError subclasses
            return AttemptOutcome(error=_error_text(str(exc))), None
        except Exception as exc:
            # Anything else the client raises is this attempt's failure: recorded and retried by the policy.
            return AttemptOutcome(error=_error_text(f"{type(exc).__name__}: {exc}")), None

    async def _attempt(self, sub: _SubscriberRuntime, d: ClaimedDelivery) -> None:
        config = sub.config
        attempt = d.attempts + 1
        slot_held = True
        structlog.contextvars.bind_contextvars(event_id=d.event_id, subscriber=config.name, attempt=attempt)
        try:
            started_at = _now()
            started = time.perf_counter()
            prepared = self._prepare(config, d, attempt)
            if isinstance(prepared, AttemptOutcome):
                outcome, excerpt = prepared, None
            else:
                outcome, excerpt = await self._send(sub, *prepared)
            duration_s = time.perf_counter() - started
            now = _now()
            decision = decide(
                outcome,
                attempt=attempt,
                now=now,
                created_at=d.created_at,
                schedule_s=config.retry.schedule_s,
                max_age_s=config.retry.max_age_s,
                rng=sub.rng,
                retry_after_cap_s=self.runtime.config.delivery.retry_after_cap_s,
            )
            if not outcome.permanent:  # nothing was sent: it says nothing of the subscriber's health
                self._record_circuit(sub, outcome, self._clock.steady(time.monotonic()))
            state = {"delivered": "delivered", "retry": "pending", "dead": "dead", "disable": "dead"}[decision.action]
            if decision.action == "disable":
                sub.disabled = True
                log.warning("subscriber disabled", reason=decision.reason)
                try:
                    await self.store.set_subscriber_disabled(config.name, True, decision.reason)
                except Exception as exc:
                    # The attempt is still recorded below; the flag holds in this process meanwhile.
                    log.warning("subscriber disabled state not saved", error=str(exc))
                # The event itself is kept for a later redrive: it did not fail, the endpoint went away.
                state = "pending"
            per_key = config.ordering == "per-key"
            self._completions.append(
                Completion(
                    delivery_id=d.id,
                    subscriber=config.name,
                    owner=self.owner,
                    attempt=attempt,
                    started_at=started_at,
                    duration_ms=duration_s * 1000,
                    status=outcome.status,
                    error=None
                    if state == "delivered"
                    else _error_text(decision.reason if state == "dead" else describe(outcome)),
                    response_excerpt=excerpt,
                    state=state,  # type: ignore[arg-type]
                    next_attempt_at=decision.next_attempt_at if state == "pending" else None,
                    entity_key=d.entity_key,
                    version_order=d.version_order,
                    track_key=per_key,
                    mark_older_stale=per_key and not config.deliver_stale,
                    lease_token=d.lease_token,
                )
            )
            if (
                state == "pending"
                and decision.next_attempt_at is not None
                and (self._next_retry_at is None or decision.next_attempt_at < self._next_retry_at)
            ):
                self._next_retry_at = decision.next_attempt_at
            outcome_label = {"delivered": "delivered", "pending": "retry", "dead": "dead"}[state]
            if decision.action == "disable":
                outcome_label = "disabled"
            metrics.labelled(metrics.WEBHOOK_ATTEMPTS, config.name, outcome_label).inc()
            metrics.labelled(metrics.WEBHOOK_ATTEMPT_DURATION, config.name).observe(duration_s)
            if state == "delivered":
                metrics.labelled(metrics.WEBHOOK_END_TO_END, config.name).observe((now - d.received_at).total_seconds())
            elif state == "dead":
                log.warning("delivery dead", reason=decision.reason)
            else:
                log.info(
                    "delivery will retry", outcome=describe(outcome), next_attempt_at=str(decision.next_attempt_at)
                )
            # The slot limits requests, not bookkeeping: free it before the completion's commit so the next
            # claim overlaps with it. Until then the lease keeps this delivery from being claimed again and,
            # still pending and leased, it holds back the later versions of its key (per-key ordering).
            slot_held = False
            self._release_slot(sub)
            await self._flush_completions()
        except StoreUnavailable as exc:
            log.warning("attempt not recorded", error=str(exc))
        except Exception as exc:
            # A fault in the bookkeeping would repeat on every claim of this delivery: record it dead instead.
            log.exception("attempt failed outside its outcome")
            await self._record_fault(config, d, attempt, exc)
        finally:
            self._leases.release(d.id)
            if slot_held:
                self._release_slot(sub)
            structlog.contextvars.unbind_contextvars("event_id", "subscriber", "attempt")

    async def _record_fault(self, config: SubscriberConfig, d: ClaimedDelivery, attempt: int, exc: Exception) -> None:
        fault = Completion(
            delivery_id=d.id,
            subscriber=config.name,
            owner=self.owner,
            attempt=attempt,
            started_at=_now(),
            duration_ms=0.0,
            status=None,
            error=_error_text(f"internal error: {type(exc).__name__}: {exc} (not retried)"),
            response_excerpt=None,
            state="dead",
            next_attempt_at=None,
            entity_key=d.entity_key,
            version_order=d.version_order,
            track_key=config.ordering == "per-key",
            lease_token=d.lease_token,
        )
        try:
            await self.store.complete_deliveries([fault])
        except Exception as store_exc:
            log.warning("attempt not recorded", error=str(store_exc))

    def _release_slot(self, sub: _SubscriberRuntime) -> None:
        sub.in_flight -= 1
        # A turn of the claim loop per finished attempt would cost more than the attempt's own bookkeeping
        # at high rates: wake it when this subscriber would claim, or a retry may now be due sooner.
        if _wants_claim(sub) or self._next_retry_at is not None:
            self.wake()

    def _record_circuit(self, sub: _SubscriberRuntime, outcome: AttemptOutcome, now: datetime) -> None:
        if outcome.status is not None and 200 <= outcome.status < 300:
            sub.breaker.record_success(now)
        elif outcome.status in (410,):
            pass
        else:
            sub.breaker.record_failure(now)
        state = sub.breaker.state
        if state != sub.last_circuit_state:
            sub.last_circuit_state = state
            metrics.labelled(metrics.CIRCUIT_OPEN, sub.config.name).set(1 if state == "open" else 0)
            log.info("circuit " + state, subscriber=sub.config.name)
            task = asyncio.create_task(self._save_circuit(sub.config.name, state))
            self._attempts.add(task)
            task.add_done_callback(self._attempts.discard)

    async def _save_circuit(self, name: str, state: str) -> None:
        try:
            await self.store.set_circuit_state(name, state)
        except Exception as exc:
            # Shown to operators only; the breaker itself lives in memory. Never a task exception left unread.
            log.warning("circuit state not saved", subscriber=name, error=str(exc))

    async def _flush_completions(self) -> None:
        # Completions that finish together are written in one batch by whichever task gets here first.
        if not self._completions:
            return
        batch, self._completions = self._completions, []
        for completion in batch:  # its commit takes milliseconds; the lease has at least two thirds left
            self._leases.release(completion.delivery_id)
        await self.store.complete_deliveries(batch)
