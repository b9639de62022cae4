"""Posts recorded notices to their webhooks: one loop per webhook, retries with backoff and jitter.

Each webhook has its own loop, its own bounded number of notices in flight and its own timeout,
so a slow or dead receiver delays only its own notices, never another webhook's nor the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import asyncpg
import httpx
import structlog
from pydantic import ValidationError

from lapse_request.notifier import repository
from lapse_request.notifier.formats import parse_event, render
from lapse_request.notifier.metrics import NotifierMetrics
from lapse_request.notifier.repository import Delivery
from lapse_request.notifier.webhooks import Webhook

log = structlog.get_logger("lapse.notifier")

# The lease outlives the send timeout by this much before another replica may retry the notice.
LEASE_MARGIN_SECONDS = 30.0
# Receivers' answers are quoted in last_error this far (Slack says e.g. `invalid_payload`).
ANSWER_EXCERPT = 200


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    max_age_seconds: float = 3600.0
    backoff_seconds: float = 2.0
    backoff_max_seconds: float = 300.0

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds before the next attempt, after `attempts` failed ones: exponential, upper-half jitter.

        A receiver's Retry-After (Slack and Teams send one with 429) is honoured when longer.
        """
        ceiling = min(self.backoff_max_seconds, self.backoff_seconds * 2 ** (attempts - 1))
        wait = random.uniform(ceiling / 2, ceiling)
        return max(wait, min(retry_after, self.backoff_max_seconds)) if retry_after else wait


class AttemptFailed(Exception):
    def __init__(self, reason: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after = retry_after


class WebhookDispatcher:
    def __init__(
        self,
        webhook: Webhook,
        pool: asyncpg.Pool,
        client: httpx.AsyncClient,
        metrics: NotifierMetrics,
        policy: RetryPolicy,
        *,
        concurrency: int = 4,
        poll_seconds: float = 1.0,
    ) -> None:
        self.webhook = webhook
        self._pool = pool
        self._client = client
        self._metrics = metrics
        self._policy = policy
        self._concurrency = concurrency
        self._poll = poll_seconds
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._log = log.bind(webhook=webhook.name, host=webhook.host)

    def wake(self) -> None:
        """New notices were committed for this webhook: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Dispatch forever; a database fault is logged and retried, never ends the loop."""
        try:
            while True:
                self._wake.clear()
                try:
                    timeout = await self._dispatch_due()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the dispatcher must outlive any fault
                    self._log.warning("notice dispatch failed, retrying", error=str(exc))
                    timeout = self._poll
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=timeout)
        finally:
            for task in self._in_flight:
                task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _dispatch_due(self) -> float:
        """Start due notices up to the in-flight bound; returns how long to wait unless woken."""
        free = self._concurrency - len(self._in_flight)
        if free > 0:
            lease = self.webhook.timeout_seconds + LEASE_MARGIN_SECONDS
            for delivery in await repository.claim_due(self._pool, self.webhook.name, free, lease):
                task = asyncio.create_task(self._attempt(delivery))
                self._in_flight.add(task)
                task.add_done_callback(self._finished)
            if len(self._in_flight) < self._concurrency:
                due = await repository.seconds_until_due(self._pool, self.webhook.name)
                if due is not None:
                    return min(self._poll, due)
        return self._poll

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wake.set()

    async def _attempt(self, delivery: Delivery) -> None:
        bound = self._log.bind(
            event_id=str(delivery.event_id),
            event_type=delivery.event_type,
            request_id=str(delivery.request_id),
            attempt=delivery.attempts,
        )
        try:
            try:
                event = parse_event(delivery.event)
                payload = render(self.webhook, event)
            except (ValidationError, ValueError, KeyError) as exc:
                await repository.mark_failed(self._pool, delivery.id, f"cannot render the notice: {exc}")
                self._metrics.failed.labels(self.webhook.name, "unrenderable").inc()
                bound.error("notice failed: it cannot be rendered", error=str(exc))
                return
            try:
                await self._post(payload)
            except AttemptFailed as failure:
                await self._failed_attempt(delivery, failure, bound)
                return
            await repository.mark_sent(self._pool, delivery.id)
            self._metrics.sent.labels(self.webhook.name).inc()
            latency = (datetime.now(UTC) - event.time).total_seconds()
            self._metrics.latency.labels(self.webhook.name).observe(max(latency, 0.0))
            bound.info("notice delivered")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the lease hands the notice to a later attempt
            bound.warning(
                "notice attempt could not be recorded; it is retried when its lease ends", error=str(exc)
            )

    async def _failed_attempt(
        self, delivery: Delivery, failure: AttemptFailed, bound: structlog.stdlib.BoundLogger
    ) -> None:
        self._metrics.attempt_errors.labels(self.webhook.name).inc()
        policy = self._policy
        delay = policy.delay(delivery.attempts, failure.retry_after)
        age = (datetime.now(UTC) - delivery.created_at).total_seconds()
        reason = None
        if failure.permanent:
            reason = "rejected"
        elif delivery.attempts >= policy.max_attempts:
            reason = "max_attempts"
        elif age + delay > policy.max_age_seconds:
            reason = "max_age"
        if reason is None:
            await repository.mark_retry(self._pool, delivery.id, delay, failure.reason)
            bound.warning("notice attempt failed, retrying", error=failure.reason, retry_in=round(delay, 1))
            return
        await repository.mark_failed(self._pool, delivery.id, failure.reason)
        self._metrics.failed.labels(self.webhook.name, reason).inc()
        bound.error(
            "notice failed: giving up", error=failure.reason, reason=reason, age_seconds=round(age, 1)
        )

    async def _post(self, payload: dict[str, object]) -> None:
        """One POST; raises AttemptFailed with a reason that never holds the URL."""
        try:
            response = await self._client.post(
                self.webhook.url, json=payload, timeout=self.webhook.timeout_seconds
            )
        except httpx.TimeoutException:
            raise AttemptFailed(f"no answer within {self.webhook.timeout_seconds:g}s") from None
        except httpx.HTTPError as exc:
            # httpx messages may quote the request URL; keep the class and scrub the rest.
            detail = str(exc).replace(self.webhook.url, self.webhook.host)
            raise AttemptFailed(f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__) from None
        if response.is_success:
            return
        answer = response.text[:ANSWER_EXCERPT].strip()
        reason = f"HTTP {response.status_code}" + (f": {answer}" if answer else "")
        status = response.status_code
        transient = status >= 500 or status in (408, 425, 429)
        raise AttemptFailed(
            reason, permanent=not transient, retry_after=_retry_after(response.headers.get("retry-after"))
        )


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())
