"""Who may produce what: every consumer accepts a message type only from the broker user that owns it.

RabbitMQ refuses a message whose AMQP `user_id` is not the publishing connection's user, so the
`user_id` of a delivered message names its publisher. Each type has an owner: `request.*` events
and `request.expire` the request service, `policy.decided` the policy service, `grant.*` events,
`grant.start` and `grant.expire` the grant service; `request.submit` comes from the configured
submitters and `grant.revoke` from the configured command principals. A message is also refused
when its `type` property or routing key names another type than its body (a relabelled message).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from faststream import BaseMiddleware
from faststream.exceptions import RejectMessage
from faststream.message import StreamMessage
from prometheus_client import CollectorRegistry, Counter

from lapse_shared.events import EVENT_TYPES, SecurityMessageRejected, SecurityMessageRejectedData

log = structlog.get_logger("lapse.auth")

SERVICES = ("request", "policy", "grant", "audit", "notifier")
DEFAULT_BROKER_USERS = {service: f"lapse-{service}" for service in SERVICES}
"""Each service's broker user unless LAPSE_BROKER_USERS says otherwise."""

KNOWN_TYPES = frozenset(event.TYPE for event in EVENT_TYPES)
SUBMIT = "request.submit"
REVOKE = "grant.revoke"
OWNER_BY_PREFIX = {"request": "request", "policy": "policy", "grant": "grant", "audit": "audit"}
"""A type's first word names its producing service (`grant.revoke` and `request.submit` aside)."""

MAX_MESSAGE_BYTES = 1 << 20
"""Largest message body a consumer reads: Lapse's own messages are a few kilobytes."""

MAX_PRINCIPAL_LABELS = 64
"""Distinct principals a process labels by name; any further one is `other` (bounded series)."""


@dataclass(frozen=True)
class Producers:
    """The principals allowed to produce each message type."""

    broker_users: Mapping[str, str]
    submit_principals: frozenset[str] = frozenset()
    command_principals: frozenset[str] = frozenset()

    def allowed(self, message_type: str) -> frozenset[str]:
        if message_type == SUBMIT:
            return self.submit_principals
        if message_type == REVOKE:
            return self.command_principals
        if message_type == SecurityMessageRejected.TYPE:
            # Any Lapse service reports what it refused; the audit rate-limits these too.
            return frozenset(self.broker_users.values())
        owner = OWNER_BY_PREFIX.get(message_type.split(".", 1)[0])
        user = self.broker_users.get(owner) if owner else None
        return frozenset([user]) if user else frozenset()

    def lapse_principals(self) -> frozenset[str]:
        return frozenset(self.broker_users.values()) | self.submit_principals | self.command_principals


def shared_broker_users(broker_users: Mapping[str, str]) -> dict[str, list[str]]:
    """Broker users that more than one service is given (user -> services); empty when none is."""
    services: dict[str, list[str]] = {}
    for service, user in broker_users.items():
        services.setdefault(user, []).append(service)
    return {user: sorted(names) for user, names in services.items() if len(names) > 1}


def body_type(body: bytes) -> str | None:
    """The `type` of a JSON body, None when the body is not a JSON object with a string type."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        # JSON nested deeper than the interpreter's stack raises RecursionError: it must count as
        # unreadable, not escape (the audit's ingest nacked a whole batch with it, forever).
        return None
    value = parsed.get("type") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) else None


def routed_type(routing_key: str) -> str:
    """The type a routing key names; delayed ones keep their delay bits in front (`0.1.….grant.expire`)."""
    words = routing_key.split(".")
    while words and words[0] in ("0", "1"):
        words.pop(0)
    return ".".join(words)


def refusal(
    producers: Producers,
    *,
    user_id: str | None,
    property_type: str | None,
    routing_key: str | None,
    body: bytes,
) -> tuple[str, str | None]:
    """(the message's type, why it is refused or None).

    A body without a readable type is judged by its routing key: the contract check then parks it
    if its publisher was allowed to send that key at all.
    """
    if len(body) > MAX_MESSAGE_BYTES:
        # Refused before it is parsed: no Lapse message comes near this, and a huge body would
        # hold the event loop while it is read. (The broker's `max_message_size` is the first bound.)
        message_type = (routed_type(routing_key) if routing_key else property_type) or "unknown"
        return message_type, f"its body of {len(body)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit"
    declared = body_type(body)
    message_type = declared or (routed_type(routing_key) if routing_key else property_type) or "unknown"
    if declared is not None:
        if property_type and property_type != declared:
            return message_type, f"its type property '{property_type}' is not its body's type '{declared}'"
        if routing_key and routed_type(routing_key) != declared:
            return message_type, f"its routing key '{routing_key}' is not its body's type '{declared}'"
    if not user_id:
        return message_type, "the message has no AMQP user_id, so its publisher is unknown"
    allowed = producers.allowed(message_type)
    if user_id not in allowed:
        return message_type, f"principal '{user_id}' may not publish {message_type}"
    return message_type, None


Report = Callable[[SecurityMessageRejected], Awaitable[None]]


@dataclass
class _Window:
    started: float
    suppressed: int = 0


@dataclass
class RejectionLog:
    """Counts, logs and reports refused messages, one report per (principal, type) per interval.

    The metric's labels are bounded: types outside the contract are `other`, and after
    MAX_PRINCIPAL_LABELS distinct principals any new one is `other` (RabbitMQ validates user ids,
    but a broker with many users must not make a series each).
    """

    service: str
    registry: CollectorRegistry
    interval_seconds: float = 600.0
    report: Report | None = None
    clock: Callable[[], float] = time.monotonic
    _windows: dict[tuple[str, str], _Window] = field(default_factory=dict)
    _principals: set[str] = field(default_factory=set)
    _reported: dict[str, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rejected = Counter(
            "lapse_messages_rejected_total",
            "Messages refused because their publisher may not produce their type, by queue, type and"
            " principal (bounded: unknown types and principals beyond a cap are `other`).",
            ["queue", "type", "principal"],
            registry=self.registry,
        )

    def type_label(self, message_type: str) -> str:
        return message_type if message_type in KNOWN_TYPES else "other"

    def principal_label(self, principal: str | None) -> str:
        if not principal:
            return "none"
        if principal in self._principals or len(self._principals) < MAX_PRINCIPAL_LABELS:
            self._principals.add(principal)
            return principal
        return "other"

    def reported_principal_label(self, publisher: str | None, principal: str) -> str:
        """The label of a principal named in another service's report, bounded per publishing
        user and kept apart from this process's own labels: a report's principal is the
        reporter's word (a compromised service can make up any), so it must never take the place
        of a principal this process saw itself, in its metric or in its own reports."""
        seen = self._reported.setdefault(publisher or "none", set())
        if principal in seen or len(seen) < MAX_PRINCIPAL_LABELS:
            seen.add(principal)
            return principal
        return "other"

    def due(self, principal: str, message_type: str) -> int | None:
        """The suppressed count to report now, or None while this key's interval is running."""
        now = self.clock()
        window = self._windows.get((principal, message_type))
        if window is None or now - window.started >= self.interval_seconds:
            suppressed = window.suppressed if window is not None else 0
            self._windows[(principal, message_type)] = _Window(now)
            return suppressed
        window.suppressed += 1
        return None

    async def rejected_message(
        self,
        *,
        queue: str,
        message_type: str,
        user_id: str | None,
        reason: str,
        message_id: str | None,
    ) -> None:
        type_label = self.type_label(message_type)
        principal = self.principal_label(user_id)
        self.rejected.labels(queue, type_label, principal).inc()
        log.error(
            "message rejected: its publisher may not produce it; parked in the dead-letter queue",
            queue=queue,
            message_type=message_type[:200],
            principal=user_id,
            reason=reason[:500],
            message_id=message_id,
        )
        suppressed = self.due(principal, type_label)
        if suppressed is None or self.report is None:
            return
        event = security_event(
            service=self.service,
            queue=queue,
            message_type=type_label,
            # The publisher itself, as RabbitMQ validated it: the label may be `other` (a bounded
            # metric), but the audit trail must say who it was.
            principal=(user_id or "none")[:200],
            reason=reason[:500],
            message_id=(message_id or None) and message_id[:100],
            suppressed=suppressed,
        )
        try:
            await self.report(event)
        except Exception as exc:  # noqa: BLE001 - the refusal stands even if its report is lost
            log.warning("could not report the rejected message to the audit trail", error=str(exc))


def security_event(
    *,
    service: str,
    queue: str,
    message_type: str,
    principal: str,
    reason: str,
    message_id: str | None,
    suppressed: int,
) -> SecurityMessageRejected:
    correlation = uuid.uuid4()
    return SecurityMessageRejected(
        source=f"lapse/{service}",
        subject="security",
        correlation_id=correlation,
        data=SecurityMessageRejectedData(
            service=service,
            queue=queue,
            message_type=message_type,
            principal=principal,
            reason=reason,
            message_id=message_id,
            suppressed=suppressed,
        ),
    )


def authenticating(producers: Producers, rejections: RejectionLog) -> type[BaseMiddleware]:
    """FastStream middleware: a message from a principal not allowed to produce its type (or
    relabelled) never reaches its handler; it is counted, logged, reported and dead-lettered."""

    class Authenticate(BaseMiddleware):
        async def consume_scope(
            self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]
        ) -> Any:
            raw = msg.raw_message
            user_id = getattr(raw, "user_id", None)
            message_type, refused = refusal(
                producers,
                user_id=user_id,
                property_type=getattr(raw, "type", None),
                routing_key=getattr(raw, "routing_key", None),
                body=msg.body,
            )
            if refused is None:
                return await call_next(msg)
            subscriber = self.context.get_local("handler_")
            queue = getattr(getattr(subscriber, "queue", None), "name", None) or "unknown"
            await rejections.rejected_message(
                queue=queue,
                message_type=message_type,
                user_id=user_id,
                reason=refused,
                message_id=msg.message_id,
            )
            raise RejectMessage()

    return Authenticate
