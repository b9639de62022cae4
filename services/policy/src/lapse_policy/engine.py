"""Deciding one request: deterministic, explainable, default deny.

Evaluation order (documented in docs/readme/issue-3.md):
1. An unknown resource or role is a deny.
2. Every rule is matched: delegation, who, resource and role patterns, label selectors,
   break-glass, then the CEL condition. A delegated request (a principal submitted it on someone's
   behalf) is matched only by rules naming that submitter (`submitted_by`) or saying
   `delegated: true`, and by deny rules; the groups a submitter claims are never used. Matching
   rules are ranked by specificity, ties by position (files by name, rules in file order).
3. A matching `deny` wins, whatever its rank or position.
4. Nothing matching is a deny.
5. When the request invokes break-glass and a break-glass rule matches, the most specific one
   decides; otherwise the most specific matching rule decides.
6. The deciding rule's justification and ticket requirements must hold, else deny.
7. The duration is capped by the resource and by every matching rule's `max_duration`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import structlog
from pydantic import BaseModel, Field

from lapse_policy.conditions import ConditionError, Facts
from lapse_policy.documents import Problem, read_directory
from lapse_policy.matching import Candidate, CompiledRule, RuleMatch, candidates
from lapse_policy.model import Review, Rule
from lapse_shared.catalogue import Catalogue, PolicyDirectory, PolicyDirError, Resource
from lapse_shared.events import (
    ApprovalRequirement,
    ApprovalStage,
    Outcome,
    PolicyDecidedData,
    RequestSubmittedData,
    utcnow,
)
from lapse_shared.events import RuleMatch as MatchedRule

log = structlog.get_logger("lapse.policy")


@dataclass(frozen=True)
class Ask:
    """A request as the policy sees it (a submitted one, or a dry run)."""

    subject: str
    groups: frozenset[str]
    resource: str
    role: str
    duration: timedelta
    reason: str
    ticket: str | None = None
    start: datetime | None = None
    break_glass: bool = False
    kind: str = "user"
    attributes: tuple[tuple[str, str], ...] = ()
    submitted_by: str | None = None
    extension: bool = False

    @property
    def delegated(self) -> bool:
        """A principal submitted it on someone else's behalf (a `request.submit` with `on_behalf_of`)."""
        return self.submitted_by is not None and (self.kind == "user" or self.submitted_by != self.subject)

    @property
    def submitter(self) -> str | None:
        """The submitting principal of a delegated request; None for a direct one."""
        return self.submitted_by if self.delegated else None

    @property
    def trusted_groups(self) -> frozenset[str]:
        """The groups the policy may use: an identity provider's, never a submitter's claim."""
        return frozenset() if self.delegated else self.groups

    @classmethod
    def of(cls, request: RequestSubmittedData) -> Ask:
        return cls(
            subject=request.requester.subject,
            groups=frozenset(request.requester.groups),
            resource=request.resource,
            role=request.role,
            duration=timedelta(seconds=request.duration_seconds),
            reason=request.reason,
            ticket=request.ticket,
            start=request.start_at,
            break_glass=request.break_glass,
            kind=request.requester.kind,
            attributes=tuple(sorted(request.requester.attributes.items())),
            submitted_by=request.submitted_by,
            extension=request.extends_grant_id is not None,
        )


class Decision(BaseModel):
    """The full explanation of one evaluation; `policy.decided` carries it with the request id."""

    outcome: Outcome
    rule: str | None = Field(description="The deciding rule; null when nothing matched.")
    reasons: list[str]
    effective_duration_seconds: int = Field(ge=0)
    approvals_required: int = 0
    approver_groups: list[str] = Field(default_factory=list)
    approval: ApprovalRequirement | None = None
    break_glass: bool = False
    review_after: ApprovalRequirement | None = None
    matched_rules: list[MatchedRule] = Field(default_factory=list)
    policy_version: str

    def for_request(self, request_id: uuid.UUID) -> PolicyDecidedData:
        return PolicyDecidedData.model_validate({"request_id": request_id, **self.model_dump()})


def _requirement(review: Review, ask: Ask) -> tuple[ApprovalRequirement, list[str]]:
    """The approval requirement for this requester, and the problems that make it unsatisfiable."""
    excluded_groups: set[str] = set()
    stages: list[ApprovalStage] = []
    problems: list[str] = []
    for index, stage in enumerate(review.stages):
        groups = list(stage.groups)
        if review.exclude_requester_groups:
            own = [g for g in groups if g in ask.trusted_groups]
            excluded_groups.update(own)
            groups = [g for g in groups if g not in ask.trusted_groups]
            if own and not groups:
                label = stage.name or f"stage {index + 1}"
                problems.append(
                    f"{label}: every approver group ({', '.join(own)}) is the requester's own,"
                    " and the rule excludes the requester's groups"
                )
        stages.append(ApprovalStage(name=stage.name, approvals=stage.approvals, groups=groups))
    requirement = ApprovalRequirement(
        stages=stages,
        self_approval_allowed=review.allow_self_approval,
        excluded_approvers=[] if review.allow_self_approval else [ask.subject],
        excluded_groups=sorted(excluded_groups),
    )
    return requirement, problems


def _unmet_requirements(rule: Rule, compiled: CompiledRule, ask: Ask) -> list[str]:
    unmet = []
    reason = ask.reason.strip()
    if rule.justification is not None:
        if len(reason) < rule.justification.min_length:
            unmet.append(f"the reason must be at least {rule.justification.min_length} characters")
        if compiled.justification is not None and compiled.justification.search(reason) is None:
            unmet.append(f"the reason must match /{rule.justification.pattern}/")
    if rule.ticket is not None:
        ticket = (ask.ticket or "").strip()
        if not ticket:
            if rule.ticket.required:
                hint = f" matching /{rule.ticket.pattern}/" if rule.ticket.pattern else ""
                unmet.append(f"a ticket reference{hint} is required")
        elif compiled.ticket is not None and compiled.ticket.fullmatch(ticket) is None:
            unmet.append(f"ticket '{ticket}' does not match /{rule.ticket.pattern}/")
    return unmet


def _index(
    catalogue: Catalogue, compiled: tuple[CompiledRule, ...]
) -> dict[tuple[str, str], tuple[Candidate, ...]]:
    index: dict[tuple[str, str], tuple[Candidate, ...]] = {}
    for resource in catalogue.resources.values():
        for role, found in candidates(compiled, resource.name, resource.labels, resource.roles).items():
            index[resource.name, role] = found
    return index


@dataclass(frozen=True)
class Policy:
    catalogue: Catalogue
    rules: tuple[Rule, ...]
    version: str
    compiled: tuple[CompiledRule, ...] = ()
    index: dict[tuple[str, str], tuple[Candidate, ...]] = field(default_factory=dict, repr=False)
    """(resource, role) -> rules that can apply; built once per policy version."""

    @classmethod
    def build(
        cls, catalogue: Catalogue, rules: tuple[Rule, ...], version: str, compiled: tuple[CompiledRule, ...]
    ) -> Policy:
        return cls(catalogue, rules, version, compiled, _index(catalogue, compiled))

    @classmethod
    def load(cls, path: Path) -> Policy:
        """Load and validate a directory; raises PolicyDirError listing every problem (file:line)."""
        policy, problems = cls.check(path)
        if policy is None:
            raise PolicyDirError("\n".join(str(p) for p in problems))
        return policy

    @classmethod
    def check(cls, path: Path) -> tuple[Policy | None, list[Problem]]:
        """Every problem of a directory, with file and line; the policy when there are none."""
        sources = read_directory(path)
        problems = list(sources.problems)
        resources: dict[str, tuple[str, Resource]] = {}
        rules: list[tuple[str, Rule]] = []
        compiled: list[CompiledRule] = []
        seen: dict[str, str] = {}
        for file in sources.files:
            for index, resource in enumerate(file.document.resources):
                if resource.name in resources:
                    problems.append(
                        Problem(
                            file.name,
                            file.line_of("resources", index, "name"),
                            f"resource '{resource.name}' is already defined in {resources[resource.name][0]}",
                        )
                    )
                resources[resource.name] = (file.name, resource)
            for index, rule in enumerate(file.document.rules):
                if rule.name in seen:
                    problems.append(
                        Problem(
                            file.name,
                            file.line_of("rules", index, "name"),
                            f"rule name '{rule.name}' is already used in {seen[rule.name]};"
                            " rule names must be unique",
                        )
                    )
                seen.setdefault(rule.name, file.name)
                try:
                    compiled.append(CompiledRule.of(rule, file.name, len(rules)))
                except ConditionError as exc:
                    where = "condition" if rule.condition else "timezone"
                    problems.append(
                        Problem(
                            file.name,
                            file.line_of("rules", index, where),
                            f"rule '{rule.name}': {where} {exc}",
                        )
                    )
                rules.append((file.name, rule))
        if problems:
            return None, problems
        catalogue = Catalogue([r for _, r in resources.values()])
        return cls.build(catalogue, tuple(r for _, r in rules), sources.version, tuple(compiled)), []

    @classmethod
    def of(cls, resources: list[Resource], rules: list[Rule], version: str = "test") -> Policy:
        """A policy from models (tests, benchmarks); raises ConditionError on a bad condition."""
        compiled = tuple(CompiledRule.of(rule, "<memory>", i) for i, rule in enumerate(rules))
        return cls.build(Catalogue(resources), tuple(rules), version, compiled)

    def decide(self, request: RequestSubmittedData, now: datetime | None = None) -> PolicyDecidedData:
        return self.evaluate(Ask.of(request), now or utcnow()).for_request(request.request_id)

    def evaluate(self, ask: Ask, now: datetime) -> Decision:
        version = self.version

        def deny(
            reasons: list[str], rule: str | None = None, matched: list[MatchedRule] | None = None
        ) -> Decision:
            return Decision(
                outcome=Outcome.DENY,
                rule=rule,
                reasons=reasons,
                effective_duration_seconds=0,
                matched_rules=matched or [],
                policy_version=version,
            )

        resource = self.catalogue.get(ask.resource)
        if resource is None:
            return deny([f"resource '{ask.resource}' is not in the catalogue"])
        if ask.role not in resource.roles:
            return deny([f"resource '{resource.name}' has no role '{ask.role}'"])

        facts = Facts(
            resource=resource.name,
            role=ask.role,
            duration=ask.duration,
            reason=ask.reason,
            ticket=ask.ticket or "",
            start=ask.start or now,
            break_glass=ask.break_glass,
            subject=ask.subject,
            groups=tuple(sorted(ask.trusted_groups)),
            attributes=dict(ask.attributes),
            kind=ask.kind,
            provider=resource.provider,
            labels=dict(resource.labels),
            now=now,
            submitted_by=ask.submitted_by or "",
            extension=ask.extension,
        )
        variables: dict[str | None, object] = {}
        found: list[tuple[CompiledRule, RuleMatch]] = []
        notes: list[str] = []
        for candidate in self.index.get((resource.name, ask.role), ()):
            match = candidate.rule.match(
                candidate,
                subject=ask.subject,
                kind=ask.kind,
                groups=ask.trusted_groups,
                facts=facts,
                variables=variables,
                submitter=ask.submitter,
            )
            if match is None:
                continue
            if match.skipped is not None:
                name = candidate.rule.name
                notes.append(f"rule '{name}' skipped: its condition could not be evaluated ({match.skipped})")
            else:
                found.append((candidate.rule, match))
        # Most specific first; ties keep their position (files by name, rules in file order).
        found.sort(key=lambda rm: (tuple(-s for s in rm[1].specificity), rm[0].order))
        matched = [
            MatchedRule(
                rule=r.name,
                file=r.file,
                outcome=r.rule.outcome,
                specificity=list(m.specificity),
                why=m.why,
                max_duration_seconds=int(r.cap.total_seconds()) if r.cap else None,
            )
            for r, m in found
        ]

        denying = next((r for r, _ in found if r.rule.outcome is Outcome.DENY), None)
        if denying is not None:
            return deny(
                [denying.rule.message or f"denied by rule '{denying.name}'", *notes], denying.name, matched
            )
        if not found:
            return deny(
                [
                    f"no rule lets '{ask.subject}' have '{ask.role}' on '{resource.name}' (default deny)",
                    *self._delegation_notes(ask),
                    *notes,
                ]
            )
        deciding = found[0][0]
        if ask.break_glass:
            deciding = next((r for r, _ in found if r.rule.break_glass is not None), deciding)
        rule = deciding.rule
        unmet = _unmet_requirements(rule, deciding, ask)
        if unmet:
            return deny([f"rule '{rule.name}' requires: {'; '.join(unmet)}", *notes], rule.name, matched)

        caps = [(resource.max_duration, f"resource '{resource.name}'")]
        caps += [(r.cap, f"rule '{r.name}'") for r, _ in found if r.cap is not None]
        effective = ask.duration
        capped_by = ""
        for cap, source in caps:
            if cap < effective:
                effective, capped_by = cap, source
        seconds = int(effective.total_seconds())
        reasons = [f"matched rule '{rule.name}'"]
        if capped_by:
            # Kept in this exact form: the request service and its users already read it.
            reasons.append(f"duration capped to {seconds}s")
            reasons.append(f"the cap comes from {capped_by}")

        approval = review_after = None
        approvals_required, approver_groups = 0, []
        review = rule.review_requirement()
        if review is not None:
            approval, problems = _requirement(review, ask)
            if problems:
                return deny(
                    [f"rule '{rule.name}' cannot be satisfied: {'; '.join(problems)}", *notes],
                    rule.name,
                    matched,
                )
            approvals_required = sum(s.approvals for s in approval.stages)
            approver_groups = list(dict.fromkeys(g for s in approval.stages for g in s.groups))
            reasons.append(f"needs {approvals_required} approval(s)")
            if not approval.self_approval_allowed:
                reasons.append(f"'{ask.subject}' may not approve their own request")
        if rule.break_glass is not None:
            reasons.append("break-glass: approved at once and flagged for an after-the-fact review")
            after = rule.break_glass_review()
            if after is not None:
                review_after, problems = _requirement(after, ask)
                if problems:
                    notes.append(f"the after-the-fact review cannot be fully staffed: {'; '.join(problems)}")
        return Decision(
            outcome=rule.outcome,
            rule=rule.name,
            reasons=[*reasons, *notes],
            effective_duration_seconds=seconds,
            approvals_required=approvals_required,
            approver_groups=approver_groups,
            approval=approval,
            break_glass=rule.break_glass is not None,
            review_after=review_after,
            matched_rules=matched,
            policy_version=version,
        )

    def _delegation_notes(self, ask: Ask) -> list[str]:
        """Why a delegated request found no rule: the explanation a submitter's operator needs."""
        submitter = ask.submitter
        if submitter is None:
            return []
        if not any(c.rule.admits_submitter(submitter) for c in self.index.get((ask.resource, ask.role), ())):
            return [
                f"delegated request by '{submitter}' on behalf of '{ask.subject}': no rule names this"
                f" submitter (a rule needs `submitted_by: [{submitter}]` or `delegated: true`)"
            ]
        return [
            f"delegated request by '{submitter}' on behalf of '{ask.subject}': the rules for this"
            " submitter do not apply to this requester (a submitter's claimed groups are not used)"
        ]


class PolicySource:
    """The policy in force: re-read when files change; a broken change keeps the last good one."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fingerprint = PolicyDirectory.fingerprint(path)
        self._policy = Policy.load(path)
        self._checked = 0.0
        self.last_error: str | None = None

    def current(self, now: float | None = None) -> Policy:
        now = time.monotonic() if now is None else now
        if now - self._checked < 1.0:
            return self._policy
        self._checked = now
        fingerprint = PolicyDirectory.fingerprint(self._path)
        if fingerprint != self._fingerprint:
            self._fingerprint = fingerprint
            try:
                self._policy = Policy.load(self._path)
                self.last_error = None
                log.info("policy reloaded", version=self._policy.version)
            except PolicyDirError as exc:
                self.last_error = str(exc)
                log.error(
                    "policy change rejected; the last good version stays in force",
                    error=str(exc),
                    version=self._policy.version,
                )
        return self._policy
