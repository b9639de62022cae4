"""Events published by the request service."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field

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
    request_id: uuid.UUID = Field(description="The access request.")
    requester: Requester = Field(
        description="Who asks, as the identity provider or the submitting system knows them."
    )
    resource: str = Field(description="Catalogue name of the resource.", examples=["orders-db"])
    role: str = Field(description="Role or action asked for.", examples=["app_readonly"])
    duration_seconds: int = Field(gt=0, description="Requested length of the access window.")
    reason: str = Field(description="The requester's justification.")
    submitted_at: datetime = Field(description="When the request was accepted.")
    ticket: str | None = Field(None, description="Change or incident ticket reference, e.g. `INC-1234`.")
    start_at: datetime | None = Field(None, description="Scheduled start; none means at approval.")
    break_glass: bool = Field(False, description="The requester invokes emergency (break-glass) access.")
    extends_grant_id: uuid.UUID | None = Field(
        None, description="An extension: the active grant whose window this request would lengthen."
    )
    submitted_by: str | None = Field(
        None,
        description="The service principal (AMQP `user_id`) that submitted a `request.submit` command;"
        " none for requests made over HTTP. With a `user` requester, the request is delegated: the"
        " policy grants it only by a rule that names this submitter or allows delegated requests.",
    )
    claimed_groups: list[str] = Field(
        default_factory=list,
        description="The groups a delegated request's submitter said the requester has (the command's"
        " `groups`), recorded for the audit trail only: not verified, never used by the policy, and"
        " not the requester's `groups` (which stay empty for a delegated request).",
    )


class RequestSubmitted(Event):
    """An access request was accepted for decision."""

    TYPE: ClassVar[str] = "request.submitted"
    type: Literal["request.submitted"] = "request.submitted"
    data: RequestSubmittedData


class RequestApprovedData(Contract):
    request_id: uuid.UUID = Field(description="The access request.")
    requester: str = Field(description="Subject that receives the access.")
    resource: str = Field(description="Catalogue name of the resource, e.g. `orders-db`.")
    role: str = Field(description="Role on the resource, e.g. `orders_readwrite`.")
    duration_seconds: int = Field(
        gt=0, description="Effective window, counted from `start_at` when given, else from `approved_at`."
    )
    approved_at: datetime = Field(description="When the last approval (or the policy) approved it.")
    rule: str | None = Field(description="Policy rule that approved it.")
    policy_version: str = Field(description="Content hash of the policy files that decided.")
    break_glass: bool = Field(
        False, description="Emergency access approved at once; an after-the-fact review is due."
    )
    start_at: datetime | None = Field(
        None, description="Scheduled start: provision then, not at once. None: provision now."
    )
    extends_grant_id: uuid.UUID | None = Field(
        None,
        description="An approved extension: lengthen this active grant to `approved_at + duration`"
        " instead of provisioning a new one.",
    )
    approvers: list[str] = Field(
        default_factory=list, description="Who approved it, in order; empty when the policy approved at once."
    )


class RequestApproved(Event):
    """The request may be provisioned: the grant service acts on this."""

    TYPE: ClassVar[str] = "request.approved"
    type: Literal["request.approved"] = "request.approved"
    data: RequestApprovedData


class RequestDeniedData(Contract):
    request_id: uuid.UUID = Field(description="The access request.")
    requester: str = Field(description="Subject who asked and would receive the access.")
    resource: str = Field(description="Catalogue name of the resource, e.g. `orders-db`.")
    role: str = Field(description="Role on the resource, e.g. `orders_readwrite`.")
    reasons: list[str] = Field(description="Why, in words shown to the requester.")
    rule: str | None = Field(description="The deciding rule; null when no rule matched (default deny).")
    policy_version: str = Field(description="Content hash of the policy files that decided.")


class RequestDenied(Event):
    """The request was denied and ends here."""

    TYPE: ClassVar[str] = "request.denied"
    type: Literal["request.denied"] = "request.denied"
    data: RequestDeniedData


class ReviewVerdict(StrEnum):
    APPROVE = "approve"
    DENY = "deny"


class RequestAwaitingReviewData(Contract):
    request_id: uuid.UUID = Field(description="The access request.")
    requester: str = Field(description="Subject who asked and would receive the access.")
    resource: str = Field(description="Catalogue name of the resource, e.g. `orders-db`.")
    role: str = Field(description="Role on the resource, e.g. `orders_readwrite`.")
    duration_seconds: int = Field(description="Requested length of the access window.")
    reason: str = Field(description="The requester's justification, shown to approvers.")
    ticket: str | None = Field(None, description="Change or incident ticket reference, if given.")
    stage: int = Field(ge=0, description="Index of the stage now collecting approvals (0 = first).")
    stage_name: str | None = Field(None, description="The stage's name, e.g. `team lead`.")
    approvals_needed: int = Field(ge=1, description="Distinct approvals still needed in this stage.")
    approver_groups: list[str] = Field(description="Who may approve in this stage (after exclusions).")
    pending_until: datetime = Field(
        description="The request lapses (`request.expired`) if not decided by then."
    )


class RequestAwaitingReview(Event):
    """A review stage started: its approvers are asked (the notifier tells them)."""

    TYPE: ClassVar[str] = "request.awaiting_review"
    type: Literal["request.awaiting_review"] = "request.awaiting_review"
    data: RequestAwaitingReviewData


class RequestReviewedData(Contract):
    request_id: uuid.UUID = Field(description="The access request.")
    requester: str = Field(description="Subject who asked and would receive the access.")
    reviewer: str = Field(description="Who reviewed.")
    verdict: ReviewVerdict = Field(description="`approve` or `deny`; one deny ends the request.")
    comment: str = Field(description="The reviewer's comment (may be empty).")
    stage: int = Field(ge=0, description="Stage the review counted towards.")
    stage_name: str | None = Field(None, description="The stage's name, e.g. `DBA`.")
    approvals_in_stage: int = Field(ge=0, description="Distinct approvals in this stage, this one included.")
    approvals_needed: int = Field(ge=1, description="Approvals this stage needs.")
    reviewed_at: datetime = Field(description="When the review was recorded.")


class RequestReviewed(Event):
    """An eligible approver approved or denied; the request may now be approved, denied, or wait on."""

    TYPE: ClassVar[str] = "request.reviewed"
    type: Literal["request.reviewed"] = "request.reviewed"
    data: RequestReviewedData


class RequestCancelledData(Contract):
    request_id: uuid.UUID = Field(description="The access request.")
    requester: str = Field(description="Subject who asked and would receive the access.")
    resource: str = Field(description="Catalogue name of the resource, e.g. `orders-db`.")
    role: str = Field(description="Role on the resource, e.g. `orders_readwrite`.")
    cancelled_by: str = Field(description="Who withdrew it.")
    cancelled_at: datetime = Field(description="When it was withdrawn.")


class RequestCancelled(Event):
    """The requester withdrew a pending request."""

    TYPE: ClassVar[str] = "request.cancelled"
    type: Literal["request.cancelled"] = "request.cancelled"
    data: RequestCancelledData


class RequestExpiredData(Contract):
    request_id: uuid.UUID = Field(description="The access request.")
    requester: str = Field(description="Subject who asked and would receive the access.")
    resource: str = Field(description="Catalogue name of the resource, e.g. `orders-db`.")
    role: str = Field(description="Role on the resource, e.g. `orders_readwrite`.")
    pending_since: datetime = Field(description="When the request started waiting for a decision.")
    expired_at: datetime = Field(description="When it lapsed.")


class RequestExpired(Event):
    """A pending request was not decided in time and lapsed."""

    TYPE: ClassVar[str] = "request.expired"
    type: Literal["request.expired"] = "request.expired"
    data: RequestExpiredData


class RequestExpireData(Contract):
    request_id: uuid.UUID = Field(description="The access request.")
    pending_until: datetime = Field(
        description="The deadline: expire the request if it is still pending then."
    )


class RequestExpire(Event):
    """Command, delivered late through the delay cascade: expire this request if still pending.

    Queued when the policy sends a request to review (a request decided at once needs none).
    """

    TYPE: ClassVar[str] = "request.expire"
    type: Literal["request.expire"] = "request.expire"
    data: RequestExpireData


class RequestSubmitData(Contract):
    """What another system asks for; who asks is the message's AMQP `user_id`, not a field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resource: str = Field(
        min_length=1, max_length=200, examples=["orders-db"], description="Catalogue name of the resource."
    )
    role: str = Field(
        min_length=1, max_length=200, examples=["app_readonly"], description="Role or action asked for."
    )
    duration_seconds: int = Field(gt=0, description="Requested window.", examples=[1800])
    reason: str = Field(
        min_length=1,
        max_length=2000,
        description="Justification, shown to approvers and kept in the audit trail.",
    )
    on_behalf_of: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="The person (or principal) who receives the access; none: the publishing principal."
        " Given, the request is delegated: only a policy rule naming the publishing principal"
        " (`submitted_by`) or allowing delegated requests (`delegated: true`) grants it.",
    )
    groups: list[str] = Field(
        default_factory=list,
        description="Informational only: groups of `on_behalf_of` as the publishing system knows them."
        " They are not trusted: recorded as `claimed_groups` in `request.submitted`, never matched by"
        " policy rules (a rule must name the submitter in `submitted_by`, or say `delegated: true`).",
    )
    ticket: str | None = Field(
        None,
        max_length=200,
        description="Change or incident ticket reference, e.g. `CHG-77`; a rule may require one.",
    )
    start_at: datetime | None = Field(None, description="Scheduled start; none: at approval.")


class RequestSubmit(Event):
    """Command on `lapse.commands`: another system asks for an access.

    Publish with the AMQP `user_id` property set to the connection's user (RabbitMQ checks it);
    that user is the principal. The request's id is the command's `id`; `subject` and
    `correlation_id` may be any id the publisher wants echoed (use the command id).
    """

    TYPE: ClassVar[str] = "request.submit"
    type: Literal["request.submit"] = "request.submit"
    data: RequestSubmitData


class RequestRejectedData(Contract):
    command_id: uuid.UUID | None = Field(description="The rejected command's `id`, when it could be read.")
    principal: str | None = Field(description="The AMQP `user_id` of the publisher, when it had one.")
    reason: str = Field(description="What was wrong, in words a developer can act on.")
    errors: list[str] = Field(default_factory=list, description="Each field error, `path: message`.")
    rejected_at: datetime = Field(description="When the command was refused.")


class RequestRejected(Event):
    """A `request.submit` command was malformed or not allowed; the message is dead-lettered."""

    TYPE: ClassVar[str] = "request.rejected"
    type: Literal["request.rejected"] = "request.rejected"
    data: RequestRejectedData
