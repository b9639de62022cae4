"""Events published by the request service."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from lapse_shared.events.envelope import Contract, Event


class Requester(Contract):
    subject: str = Field(description="Who asks: a person's or a service principal's id.")
    groups: list[str] = Field(default_factory=list, description="Groups of the requester.")
    kind: Literal["user", "service"] = Field(
        "user", description="A person, or a service principal (another system asking)."
    )
    attributes: dict[str, str] = Field(
        default_factory=dict, description="Identity attributes (e.g. department) that policies may test."
    )


class RequestSubmittedData(Contract):
    request_id: uuid.UUID
    requester: Requester
    resource: str = Field(description="Catalogue name of the resource.", examples=["orders-db"])
    role: str = Field(description="Role or action asked for.", examples=["app_readonly"])
    duration_seconds: int = Field(gt=0, description="Requested length of the access window.")
    reason: str = Field(description="The requester's justification.")
    submitted_at: datetime
    ticket: str | None = Field(None, description="Change or incident ticket reference, e.g. `INC-1234`.")
    start_at: datetime | None = Field(None, description="Scheduled start; none means at approval.")
    break_glass: bool = Field(False, description="The requester invokes emergency (break-glass) access.")


class RequestSubmitted(Event):
    """An access request was accepted for decision."""

    TYPE: ClassVar[str] = "request.submitted"
    type: Literal["request.submitted"] = "request.submitted"
    data: RequestSubmittedData


class RequestApprovedData(Contract):
    request_id: uuid.UUID
    requester: str = Field(description="Subject that receives the access.")
    resource: str
    role: str
    duration_seconds: int = Field(gt=0, description="Effective window, counted from activation.")
    approved_at: datetime
    rule: str | None = Field(description="Policy rule that approved it.")
    policy_version: str
    break_glass: bool = Field(
        False, description="Emergency access approved at once; an after-the-fact review is due."
    )


class RequestApproved(Event):
    """The request may be provisioned: the grant service acts on this."""

    TYPE: ClassVar[str] = "request.approved"
    type: Literal["request.approved"] = "request.approved"
    data: RequestApprovedData


class RequestDeniedData(Contract):
    request_id: uuid.UUID
    requester: str
    resource: str
    role: str
    reasons: list[str] = Field(description="Why, in words shown to the requester.")
    rule: str | None
    policy_version: str


class RequestDenied(Event):
    """The request was denied and ends here."""

    TYPE: ClassVar[str] = "request.denied"
    type: Literal["request.denied"] = "request.denied"
    data: RequestDeniedData
