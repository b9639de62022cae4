"""The policy language: rules in YAML, validated by these models."""

from __future__ import annotations

import fnmatch
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lapse_shared.durations import Duration
from lapse_shared.events import Outcome


class Rule(BaseModel):
    """Who may have what, for how long, and with which outcome.

    A rule matches when the requester is in one of `groups` or is one of `subjects` (both
    empty: anyone), and the resource and role match one of the glob patterns.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Unique name; decisions cite it.")
    description: str = ""
    subjects: list[str] = Field(default_factory=list, description="Requester ids it applies to.")
    groups: list[str] = Field(default_factory=list, description="Requester groups it applies to.")
    resources: list[str] = Field(default=["*"], min_length=1, description="Resource glob patterns.")
    roles: list[str] = Field(default=["*"], min_length=1, description="Role glob patterns.")
    max_duration: Duration | None = Field(None, description="Cap on the granted duration.")
    outcome: Outcome
    approvals: int = Field(0, ge=0, description="For `review`: distinct approvals needed.")
    approver_groups: list[str] = Field(default_factory=list, description="For `review`: who may approve.")
    message: str | None = Field(None, description="For `deny`: shown to the requester.")

    @model_validator(mode="after")
    def _outcome_fields(self) -> Rule:
        if self.outcome is Outcome.REVIEW and self.approvals < 1:
            raise ValueError("a `review` rule needs `approvals` of at least 1")
        if self.outcome is not Outcome.REVIEW and (self.approvals or self.approver_groups):
            raise ValueError("`approvals` and `approver_groups` only apply to `review` rules")
        return self

    def matches(self, subject: str, groups: set[str], resource: str, role: str) -> bool:
        who = (
            (not self.subjects and not self.groups)
            or subject in self.subjects
            or bool(groups.intersection(self.groups))
        )
        return (
            who
            and any(fnmatch.fnmatchcase(resource, p) for p in self.resources)
            and any(fnmatch.fnmatchcase(role, p) for p in self.roles)
        )

    def cap(self) -> timedelta | None:
        return self.max_duration


class PolicyDocument(BaseModel):
    """One YAML file of the policy directory; a file may hold resources, rules, or both."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    resources: list[dict[str, object]] = Field(
        default_factory=list, description="Resource catalogue entries (validated as resources)."
    )
    rules: list[Rule] = Field(default_factory=list)
