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


class ApprovalStage(Contract):
    name: str | None = Field(None, description="Shown to approvers, e.g. `team lead`.")
    approvals: int = Field(ge=1, description="Distinct approvers needed in this stage.")
    groups: list[str] = Field(
        default_factory=list, description="Approvers are drawn from these groups (after exclusions)."
    )


class ApprovalRequirement(Contract):
    """What the review flow must collect before the request is approved."""

    stages: list[ApprovalStage] = Field(
        description="Stages in order; a later stage starts only when the one before is complete."
    )
    self_approval_allowed: bool = Field(
        False, description="Whether the requester may approve their own request (off unless a rule says so)."
    )
    excluded_approvers: list[str] = Field(
        default_factory=list, description="Subjects who may not approve: the requester, unless allowed."
    )
    excluded_groups: list[str] = Field(
        default_factory=list,
        description="Groups of the requester removed from the approver groups (`exclude_requester_groups`).",
    )


class RuleMatch(Contract):
    """One rule that applied to the request, and why."""

    rule: str = Field(description="The rule's name.")
    file: str = Field(description="Policy file that holds the rule.")
    outcome: Outcome = Field(description="What the rule would decide on its own.")
    specificity: list[int] = Field(
        description="(resource, role, who, selectors): compared in order, higher is more specific."
    )
    why: list[str] = Field(description="What of the rule matched the request.")
    max_duration_seconds: int | None = Field(None, description="The rule's cap, if it has one.")


class PolicyDecidedData(Contract):
    request_id: uuid.UUID = Field(description="The access request.")
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
    approval: ApprovalRequirement | None = Field(
        None, description="For review: the full requirement (stages, self-approval, exclusions)."
    )
    break_glass: bool = Field(
        False, description="Emergency access: approved at once, flagged for an after-the-fact review."
    )
    review_after: ApprovalRequirement | None = Field(
        None, description="For break-glass: the review that must follow the access."
    )
    matched_rules: list[RuleMatch] = Field(
        default_factory=list, description="Every rule that matched, in evaluation order, and why."
    )


class PolicyDecided(Event):
    """The policy's decision on one submitted request."""

    TYPE: ClassVar[str] = "policy.decided"
    type: Literal["policy.decided"] = "policy.decided"
    data: PolicyDecidedData
