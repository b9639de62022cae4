"""Security events: what a service refused, for the audit trail."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from lapse_shared.events.envelope import Contract, Event


class SecurityMessageRejectedData(Contract):
    service: str = Field(description="The service that refused the message, e.g. `grant`.")
    queue: str = Field(description="The queue it arrived on (`lapse.audit.events` for the audit).")
    message_type: str = Field(
        description="Its type, or `other` when it is not a type of the contract (bounded, so an"
        " attacker cannot make entries without limit by inventing types)."
    )
    principal: str = Field(
        description="The AMQP `user_id` that published it (validated by RabbitMQ), `none` when unset."
    )
    reason: str = Field(description="Why it was refused.")
    message_id: str | None = Field(None, description="Its AMQP message id, as sent (not trusted).")
    suppressed: int = Field(
        0,
        ge=0,
        description="Rejections of the same (service, principal, type) since the previous entry that"
        " were counted but not reported: one entry per interval, whatever the rate.",
    )


class SecurityMessageRejected(Event):
    """A message was refused because its publisher may not produce its type (or it was relabelled).

    Rate-limited: at most one per (service, principal, type) per interval, with the count of the
    ones suppressed, so a flood of forged messages cannot grow the audit chain without bound.
    `subject` is `security`, `correlation_id` a fresh id.
    """

    TYPE: ClassVar[str] = "security.message_rejected"
    type: Literal["security.message_rejected"] = "security.message_rejected"
    data: SecurityMessageRejectedData
