"""The policy language: YAML documents validated by these models (JSON Schema in docs/schemas)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lapse_shared.catalogue import DurationText, Resource
from lapse_shared.events import Outcome


def _valid_regex(pattern: str | None) -> str | None:
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
    return pattern


class Justification(BaseModel):
    """What the requester's reason must look like (a reason is always required)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: str | None = Field(
        None,
        description="Regular expression the reason must contain a match of (Python `re.search`).",
        examples=["(?i)\\b(INC|CHG)-\\d+"],
    )
    min_length: int = Field(1, ge=1, description="Minimum length of the reason, in characters.")

    _check = field_validator("pattern")(_valid_regex)


class TicketRequirement(BaseModel):
    """A ticket reference the request must carry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    required: bool = Field(True, description="Refuse the rule's outcome when no ticket is given.")
    pattern: str | None = Field(
        None,
        description="Regular expression the whole ticket must match (Python `re.fullmatch`).",
        examples=["(INC|CHG)-\\d+"],
    )

    _check = field_validator("pattern")(_valid_regex)


class Stage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, description="Shown to approvers, e.g. `team lead`.")
    approvals: int = Field(1, ge=1, description="Distinct approvers needed in this stage.")
    groups: list[str] = Field(
        default_factory=list, description="Approvers are members of one of these groups; empty: anyone."
    )


class Review(BaseModel):
    """The approval requirement of a `review` rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stages: list[Stage] = Field(
        min_length=1,
        description="In order: a later stage starts when the one before is complete. One approver"
        " counts in one stage only, so approvers are distinct across the whole review.",
    )
    allow_self_approval: bool = Field(
        False, description="Let the requester approve their own request (separation of duties: keep off)."
    )
    exclude_requester_groups: bool = Field(
        False,
        description="Remove the requester's own groups from the approver groups, so a team cannot"
        " approve itself; a stage left without groups makes the request a deny.",
    )


class BreakGlass(BaseModel):
    """Emergency access: approved at once, flagged in the decision and the audit trail."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    review_after: Review | None = Field(
        None, description="The after-the-fact review that must follow (recorded in the decision)."
    )


LabelSelector = dict[str, str | list[str]]


class Rule(BaseModel):
    """Who may have what, for how long, under which conditions, and with which outcome."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Unique across the directory; decisions cite it.")
    description: str = ""
    # --- who: any of these; none at all means any person (never a service principal).
    subjects: list[str] = Field(default_factory=list, description="Person ids the rule applies to.")
    groups: list[str] = Field(default_factory=list, description="Requester groups the rule applies to.")
    service_principals: list[str] = Field(
        default_factory=list,
        description="Service principals (other systems) the rule applies to; they are only ever"
        " matched by name here, never by a rule that names nobody.",
    )
    # --- delegation: a request a principal submitted on someone else's behalf (`request.submit`
    # with `on_behalf_of`). Only rules that say so explicitly grant such a request.
    submitted_by: list[str] = Field(
        default_factory=list,
        description="Submitting principals (AMQP users) whose requests on someone's behalf the rule"
        " applies to; exact names. The rule then applies to delegated requests only.",
        examples=[["ci-bot"]],
    )
    delegated: bool = Field(
        False,
        description="The rule applies to delegated requests from any accepted submitter (and to"
        " nothing else). Without this or `submitted_by`, an `approve` or `review` rule never grants"
        " a delegated request; a `deny` rule applies to both.",
    )
    # --- what
    resources: list[str] = Field(
        default=["*"], min_length=1, description="Resource name glob patterns (`*`, `?`, `[...]`)."
    )
    roles: list[str] = Field(default=["*"], min_length=1, description="Role glob patterns.")
    resource_labels: LabelSelector = Field(
        default_factory=dict,
        description="Label selector: every key must be present with the value (or one of the values).",
        examples=[{"environment": ["prod", "staging"]}],
    )
    condition: str | None = Field(
        None,
        description="CEL expression over `request`, `requester`, `resource` and `now`; the rule"
        " applies only when it is true. Checked when the policy loads.",
        examples=["request.duration <= duration('1h') && now.getHours() >= 8"],
    )
    timezone: str | None = Field(
        None,
        description="IANA time zone `now` is read in by the condition (default UTC).",
        examples=["Europe/Berlin"],
    )
    # --- requirements and limits
    justification: Justification | None = Field(None, description="What the reason must look like.")
    ticket: TicketRequirement | None = Field(None, description="A ticket reference the request needs.")
    max_duration: DurationText | None = Field(
        None, description="Caps the granted duration (every matching rule's cap applies)."
    )
    # --- outcome
    outcome: Outcome = Field(description="`approve` at once, `review` by approvers, or `deny`.")
    review: Review | None = Field(None, description="For `review`: the approval requirement.")
    approvals: int = Field(0, ge=0, description="For `review`, short form: one stage of N approvals.")
    approver_groups: list[str] = Field(
        default_factory=list, description="For `review`, short form: the stage's approver groups."
    )
    message: str | None = Field(None, description="For `deny`: shown to the requester.")
    break_glass: BreakGlass | Literal[True] | None = Field(
        None,
        description="Emergency access: the rule applies only to requests that invoke break-glass,"
        " approves at once and flags the decision. `true` or a mapping with `review_after`.",
    )

    @property
    def for_delegated(self) -> bool:
        """The rule is for requests submitted on someone's behalf (and only for those)."""
        return self.delegated or bool(self.submitted_by)

    @model_validator(mode="after")
    def _delegation_fields(self) -> Rule:
        if not self.for_delegated:
            return self
        # A submitter's word on who the person is in groups is not trusted, and a delegated
        # request is always for a person: these selectors could never match, so say so at load.
        if self.groups:
            raise ValueError(
                "a delegated rule (`submitted_by` or `delegated: true`) cannot select `groups`:"
                " the groups a submitter claims are not trusted; name `subjects` instead"
            )
        if self.service_principals:
            raise ValueError(
                "a delegated rule (`submitted_by` or `delegated: true`) is for requests on a"
                " person's behalf; name the submitting principal in `submitted_by`, not"
                " `service_principals`"
            )
        if any(not name.strip() for name in self.submitted_by):
            raise ValueError("`submitted_by` names principals; an empty name matches nobody")
        return self

    @model_validator(mode="after")
    def _outcome_fields(self) -> Rule:
        if self.outcome is Outcome.REVIEW:
            if self.review is None and self.approvals < 1:
                raise ValueError("a `review` rule needs `review.stages`, or `approvals` of at least 1")
            if self.review is not None and (self.approvals or self.approver_groups):
                raise ValueError("give either `review` or the short form `approvals`/`approver_groups`")
        elif self.review is not None or self.approvals or self.approver_groups:
            raise ValueError("`review`, `approvals` and `approver_groups` only apply to `review` rules")
        if self.message is not None and self.outcome is not Outcome.DENY:
            raise ValueError("`message` only applies to `deny` rules")
        if self.break_glass is not None and self.outcome is not Outcome.APPROVE:
            raise ValueError("a `break_glass` rule approves at once: its outcome must be `approve`")
        return self

    def review_requirement(self) -> Review | None:
        """The requirement in its long form, whichever form the file used."""
        if self.outcome is not Outcome.REVIEW:
            return None
        if self.review is not None:
            return self.review
        return Review(stages=[Stage(approvals=self.approvals, groups=self.approver_groups)])

    def break_glass_review(self) -> Review | None:
        return self.break_glass.review_after if isinstance(self.break_glass, BreakGlass) else None


class PolicyDocument(BaseModel):
    """One YAML file of the policy directory; a file may hold resources, rules, or both."""

    model_config = ConfigDict(
        extra="forbid",
        title="Lapse policy file",
        json_schema_extra={"$id": "https://lapse.dev/schemas/policy.json"},
    )

    version: Literal[1] = Field(1, description="Version of the policy language.")
    resources: list[Resource] = Field(default_factory=list, description="Resource catalogue entries.")
    rules: list[Rule] = Field(default_factory=list, description="Rules; order matters only for ties.")
