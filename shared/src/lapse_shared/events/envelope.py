"""The event envelope: CloudEvents attribute names, frozen pydantic models, one class per type."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field

# Deterministic ids for events derived from another event (so a redelivery makes the same id).
_DERIVED_NS = uuid.UUID("6c0f6b5e-3d2a-4f59-9a51-7c1c8a3f0e11")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Contract(BaseModel):
    """Base of every payload: immutable, and unknown fields are kept out (additive-only versions)."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Event(Contract):
    """Envelope of every message on `lapse.events` and `lapse.commands`.

    A type is versioned by its name: `request.submitted` v1 only ever gains optional fields;
    a breaking change is published as a new type beside the old one.
    """

    TYPE: ClassVar[str] = ""

    specversion: str = Field("1.0", description="CloudEvents spec version.")
    id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Unique event id; the inbox key.")
    type: str = Field(description="Event type; also the routing key.")
    source: str = Field(description="Producing service, e.g. `lapse/request`.")
    time: datetime = Field(default_factory=utcnow, description="When the event happened (UTC).")
    subject: str = Field(description="Id of the access request this event is about.")
    correlation_id: uuid.UUID = Field(
        description="Id shared by every event of one access request (the request id)."
    )
    causation_id: uuid.UUID | None = Field(
        None, description="Id of the event or command that caused this one."
    )
    data: Any

    @classmethod
    def create(
        cls,
        *,
        source: str,
        request_id: uuid.UUID,
        data: Any,
        cause: Event | None = None,
        derived: bool = False,
    ) -> Self:
        """Build an event for one request; `derived` gives it an id fixed by its cause."""
        event_id = uuid.uuid5(_DERIVED_NS, f"{cls.TYPE}:{cause.id}") if derived and cause else uuid.uuid4()
        return cls(
            id=event_id,
            type=cls.TYPE,
            source=source,
            subject=str(request_id),
            correlation_id=request_id,
            causation_id=cause.id if cause else None,
            data=data,
        )
