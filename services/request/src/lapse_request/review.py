"""Who may review a request, and where its review stands. Pure, no I/O.

The policy decides *what* approval a request needs (an `ApprovalRequirement`: stages in
order, each needing N distinct approvers from some groups, exclusions, self-approval); this
module enforces it, one review at a time, and explains every refusal in words.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lapse_shared.events import ApprovalRequirement, ApprovalStage, ReviewVerdict
from lapse_shared.http.identity import Identity


@dataclass(frozen=True)
class Review:
    reviewer: str
    verdict: ReviewVerdict
    comment: str
    stage: int
    reviewed_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "reviewer": self.reviewer,
            "verdict": self.verdict.value,
            "comment": self.comment,
            "stage": self.stage,
            "reviewed_at": self.reviewed_at.isoformat(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Review:
        return cls(
            reviewer=raw["reviewer"],
            verdict=ReviewVerdict(raw["verdict"]),
            comment=raw["comment"],
            stage=int(raw["stage"]),
            reviewed_at=datetime.fromisoformat(raw["reviewed_at"]),
        )


class ReviewRefused(Exception):
    """This reviewer may not review this request now; `status` is the HTTP status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def requirement_of(decision: dict[str, Any]) -> ApprovalRequirement:
    """The approval a review decision asks for; older decisions carry only a count and groups."""
    if decision.get("approval"):
        return ApprovalRequirement.model_validate(decision["approval"])
    return ApprovalRequirement(
        stages=[
            ApprovalStage(
                approvals=max(1, int(decision.get("approvals_required") or 1)),
                groups=list(decision.get("approver_groups") or []),
            )
        ]
    )


def eligible_groups(requirement: ApprovalRequirement, stage: int) -> list[str]:
    """The stage's approver groups, less the groups excluded because the requester is in them."""
    excluded = set(requirement.excluded_groups)
    return [g for g in requirement.stages[stage].groups if g not in excluded]


def approvals_in(reviews: list[Review], stage: int) -> list[str]:
    return [r.reviewer for r in reviews if r.stage == stage and r.verdict is ReviewVerdict.APPROVE]


def current_stage(requirement: ApprovalRequirement, reviews: list[Review]) -> int | None:
    """The first stage still short of approvals; None when every stage is complete."""
    for index, stage in enumerate(requirement.stages):
        if len(set(approvals_in(reviews, index))) < stage.approvals:
            return index
    return None


def stage_label(requirement: ApprovalRequirement, stage: int) -> str:
    name = requirement.stages[stage].name
    return f"stage {stage + 1} ('{name}')" if name else f"stage {stage + 1}"


def check_reviewer(
    requirement: ApprovalRequirement,
    reviews: list[Review],
    *,
    requester: str,
    reviewer: Identity,
    rule: str | None,
) -> int:
    """The stage this reviewer's review counts towards, or `ReviewRefused` saying why not."""
    stage = current_stage(requirement, reviews)
    if stage is None:  # pragma: no cover - a complete review has already approved the request
        raise ReviewRefused(409, "Every approval stage is already complete.")
    by_rule = f" (rule '{rule}')" if rule else ""
    if reviewer.subject == requester and not requirement.self_approval_allowed:
        raise ReviewRefused(
            403, f"You cannot review your own request: the policy{by_rule} does not allow self-approval."
        )
    if reviewer.subject in requirement.excluded_approvers and reviewer.subject != requester:
        raise ReviewRefused(403, f"The policy{by_rule} excludes you from approving this request.")
    earlier = next((r for r in reviews if r.reviewer == reviewer.subject), None)
    if earlier is not None:
        raise ReviewRefused(
            403,
            f"You already reviewed this request ({stage_label(requirement, earlier.stage)});"
            " approvals must come from distinct people.",
        )
    if not requirement.stages[stage].groups:
        return stage  # the policy names no approver groups for this stage: anyone else may approve
    groups = eligible_groups(requirement, stage)
    if not groups:
        raise ReviewRefused(
            403,
            f"Nobody may approve {stage_label(requirement, stage)}: all its approver groups are"
            " excluded because the requester is a member of them. Ask an administrator.",
        )
    if not reviewer.in_any(groups):
        excluded = sorted(set(requirement.stages[stage].groups) & set(requirement.excluded_groups))
        why = (
            f" ({', '.join(excluded)} excluded: the requester is a member)"
            if excluded and reviewer.in_any(excluded)
            else ""
        )
        raise ReviewRefused(
            403,
            f"{stage_label(requirement, stage).capitalize()} is reviewed by members of"
            f" {', '.join(groups)}; you are not a member of any{why}.",
        )
    return stage


ANYONE = "*"
"""Stands for "any authenticated caller" in the stored list of groups that may review now."""


def may_review_groups(requirement: ApprovalRequirement, reviews: list[Review]) -> list[str]:
    """Groups whose members may review the request now (for listing what awaits whom)."""
    stage = current_stage(requirement, reviews)
    if stage is None:
        return []
    return eligible_groups(requirement, stage) if requirement.stages[stage].groups else [ANYONE]
