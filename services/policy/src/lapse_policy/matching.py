"""A rule compiled for matching: patterns, selectors and condition prepared once at load.

Specificity, compared as a tuple (higher is more specific):
resource (exact name 2, glob 1, `*` 0), role (same), who (named subject or service principal 2,
group 1, anyone 0), selectors (number of label selectors, plus 1 for a condition, plus 1 for
naming the submitter in `submitted_by`).

A delegated request (submitted by a principal on someone's behalf) is matched only by rules that
say so (`submitted_by` naming the principal, or `delegated: true`), and by deny rules; a rule for
delegated requests never matches a direct one. The submitter's claimed groups are never matched.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from datetime import timedelta

import cel

from lapse_policy.conditions import Condition, ConditionError, Facts, compile_condition
from lapse_policy.model import Rule
from lapse_shared.events import Outcome

Specificity = tuple[int, int, int, int]


@dataclass(frozen=True)
class Pattern:
    text: str
    specificity: int
    regex: re.Pattern[str] | None  # None: an exact name

    @classmethod
    def of(cls, text: str) -> Pattern:
        if text == "*":
            return cls(text, 0, None)
        if any(c in text for c in "*?["):
            return cls(text, 1, re.compile(fnmatch.translate(text)))
        return cls(text, 2, None)

    def matches(self, value: str) -> bool:
        if self.specificity == 0:
            return True
        if self.regex is None:
            return value == self.text
        return self.regex.match(value) is not None


def _best(patterns: tuple[Pattern, ...], value: str) -> Pattern | None:
    """The most specific pattern that matches, so the rule is ranked by what actually matched."""
    found: Pattern | None = None
    for pattern in patterns:
        if pattern.matches(value) and (found is None or pattern.specificity > found.specificity):
            found = pattern
    return found


@dataclass(frozen=True)
class RuleMatch:
    specificity: Specificity
    why: list[str]
    skipped: str | None = None
    """Set when a non-deny rule was passed over because its condition could not be evaluated."""


@dataclass(frozen=True)
class CompiledRule:
    rule: Rule
    file: str
    order: int
    subjects: frozenset[str]
    groups: frozenset[str]
    principals: frozenset[str]
    submitters: frozenset[str]
    resources: tuple[Pattern, ...]
    roles: tuple[Pattern, ...]
    labels: tuple[tuple[str, frozenset[str]], ...]
    condition: Condition | None
    justification: re.Pattern[str] | None
    ticket: re.Pattern[str] | None
    cap: timedelta | None

    @classmethod
    def of(cls, rule: Rule, file: str, order: int) -> CompiledRule:
        """Raises ConditionError when the condition does not compile or check."""
        labels = tuple(
            (key, frozenset([value] if isinstance(value, str) else value))
            for key, value in sorted(rule.resource_labels.items())
        )
        return cls(
            rule=rule,
            file=file,
            order=order,
            subjects=frozenset(rule.subjects),
            groups=frozenset(rule.groups),
            principals=frozenset(rule.service_principals),
            submitters=frozenset(rule.submitted_by),
            resources=tuple(Pattern.of(p) for p in rule.resources),
            roles=tuple(Pattern.of(p) for p in rule.roles),
            labels=labels,
            condition=compile_condition(rule.condition, rule.timezone) if rule.condition else None,
            justification=re.compile(rule.justification.pattern)
            if rule.justification and rule.justification.pattern
            else None,
            ticket=re.compile(rule.ticket.pattern) if rule.ticket and rule.ticket.pattern else None,
            cap=rule.max_duration,
        )

    @property
    def name(self) -> str:
        return self.rule.name

    def _who(self, subject: str, kind: str, groups: frozenset[str]) -> tuple[int, str] | None:
        if kind == "service":
            # Service principals are only ever matched by name: a rule for "anyone" means people.
            return (2, f"service principal '{subject}'") if subject in self.principals else None
        if subject in self.subjects:
            return 2, f"subject '{subject}'"
        shared = groups & self.groups
        if shared:
            return 1, f"group {', '.join(sorted(shared))}"
        if not (self.subjects or self.groups or self.principals):
            return 0, "anyone"
        return None

    def admits_submitter(self, submitter: str) -> bool:
        """The rule grants requests this principal submits on someone's behalf, if it applies."""
        return self.rule.delegated or submitter in self.submitters

    def _delegation(self, submitter: str | None) -> str | None:
        """Why the rule may look at this request as far as delegation goes; None: it may not."""
        if submitter is None:
            return None if self.rule.for_delegated else ""
        if self.rule.for_delegated:
            if submitter in self.submitters:
                return f"submitted by '{submitter}' (named in submitted_by)"
            if self.rule.delegated:
                return f"submitted by '{submitter}' (the rule allows delegated requests)"
            return None
        # A deny applies whoever submitted: delegation must never be a way around one.
        if self.rule.outcome is Outcome.DENY:
            return f"submitted by '{submitter}' (a deny applies to delegated requests)"
        return None

    def match(
        self,
        candidate: Candidate,
        *,
        subject: str,
        kind: str,
        groups: frozenset[str],
        facts: Facts,
        variables: dict[str | None, object],
        submitter: str | None = None,
    ) -> RuleMatch | None:
        """None when the rule does not apply. Resource, role and labels were matched at load
        (see `candidates`); here delegation, the requester, break-glass, and the condition last.

        `submitter` is the principal of a delegated request (None for a direct one); `groups`
        are the requester's trusted groups (none for a delegated request).
        """
        delegation = self._delegation(submitter)
        if delegation is None:
            return None
        who = self._who(subject, kind, groups)
        if who is None:
            return None
        if self.rule.break_glass is not None and not facts.break_glass:
            return None
        why = [f"who: {who[1]}", *([f"delegation: {delegation}"] if delegation else []), *candidate.why]
        if self.condition is not None:
            tz = self.rule.timezone
            if tz not in variables:
                variables[tz] = _context(facts, tz)
            try:
                if not self.condition.holds(variables[tz]):
                    return None
                why.append(f"condition holds: {self.condition.source}")
            except ConditionError as exc:
                # Fail closed: an undecidable condition never grants, and a deny applies.
                if self.rule.outcome is not Outcome.DENY:
                    return RuleMatch((0, 0, 0, 0), why, skipped=str(exc))
                why.append(f"condition could not be evaluated ({exc}); a deny applies when in doubt")
        if self.rule.break_glass is not None:
            why.append("the request invokes break-glass")
        specificity = (
            candidate.resource_specificity,
            candidate.role_specificity,
            who[0],
            len(self.labels) + (1 if self.condition else 0) + (1 if submitter in self.submitters else 0),
        )
        return RuleMatch(specificity, why)


@dataclass(frozen=True)
class Candidate:
    """A rule whose resource pattern, role pattern and label selectors fit one (resource, role)."""

    rule: CompiledRule
    resource_specificity: int
    role_specificity: int
    why: tuple[str, ...]


def candidates(
    rules: tuple[CompiledRule, ...], resource: str, labels: dict[str, str], roles: list[str]
) -> dict[str, tuple[Candidate, ...]]:
    """Per role of one catalogue resource, the rules that can apply, in policy order.

    Resource names, roles and labels are known at load, so this work is done once per policy
    version instead of once per request: a request then looks only at its few candidates.
    """
    by_role: dict[str, list[Candidate]] = {role: [] for role in roles}
    for rule in rules:
        resource_pattern = _best(rule.resources, resource)
        if resource_pattern is None:
            continue
        if any(labels.get(key) not in allowed for key, allowed in rule.labels):
            continue
        for role in roles:
            role_pattern = _best(rule.roles, role)
            if role_pattern is None:
                continue
            why = [
                f"resource '{resource}' matches '{resource_pattern.text}'",
                f"role '{role}' matches '{role_pattern.text}'",
            ]
            if rule.labels:
                why.append("labels: " + ", ".join(f"{k}={labels[k]}" for k, _ in rule.labels))
            by_role[role].append(
                Candidate(rule, resource_pattern.specificity, role_pattern.specificity, tuple(why))
            )
    return {role: tuple(found) for role, found in by_role.items()}


def _context(facts: Facts, tz: str | None) -> object:
    # A Context converts the variables once and is reused by every condition of this decision.
    return cel.Context(facts.variables(tz))
