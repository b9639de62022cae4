"""Events published by the policy service."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from lapse_shared.events.envelope import Contract, Event


class Outcome(StrEnum):
    APPROVE = "approve"
    DENY = "deny"
    REVIEW = "review"


class PolicyDecidedData(Contract):
    request_id: uuid.UUID
    outcome: Outcome = Field(description="approve at once, deny, or wait for reviews.")
    rule: str | None = Field(description="The deciding rule; null when nothing matched.")
    reasons: list[str] = Field(description="Human-readable explanation of the outcome.")
    effective_duration_seconds: int = Field(
        ge=0, description="Requested duration capped by the rule and the resource."
    )
    approvals_required: int = Field(0, ge=0, description="For review: distinct approvals needed.")
    approver_groups: list[str] = Field(
        default_factory=list, description="For review: groups approvers are drawn from."
    )
    policy_version: str = Field(description="Content hash of the policy files that decided.")


class PolicyDecided(Event):
    """The policy's decision on one submitted request."""

    TYPE: ClassVar[str] = "policy.decided"
    type: Literal["policy.decided"] = "policy.decided"
    data: PolicyDecidedData
