"""Deciding one request: deterministic, explainable, default deny."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import structlog
from pydantic import ValidationError

from lapse_policy.model import PolicyDocument, Rule
from lapse_shared.catalogue import (
    Catalogue,
    PolicyDirectory,
    PolicyDirError,
    format_validation_error,
)
from lapse_shared.events import Outcome, PolicyDecidedData, RequestSubmittedData

log = structlog.get_logger("lapse.policy")


@dataclass(frozen=True)
class Policy:
    catalogue: Catalogue
    rules: tuple[Rule, ...]
    version: str

    @classmethod
    def load(cls, path: Path) -> Policy:
        """Load and validate a directory; raises PolicyDirError naming the file at fault."""
        directory = PolicyDirectory.load(path)
        rules: list[Rule] = []
        origin: dict[str, str] = {}
        for file in directory.files:
            try:
                document = PolicyDocument.model_validate(file.content)
            except ValidationError as exc:
                raise PolicyDirError(format_validation_error(file.name, exc)) from None
            for rule in document.rules:
                if rule.name in origin:
                    raise PolicyDirError(
                        f"{file.name}: rule name '{rule.name}' is already used in {origin[rule.name]};"
                        " rule names must be unique"
                    )
                origin[rule.name] = file.name
            rules.extend(document.rules)
        return cls(Catalogue.from_directory(directory), tuple(rules), directory.version)

    def decide(self, request: RequestSubmittedData) -> PolicyDecidedData:
        """Explicit deny wins; otherwise the first matching rule (files by name, rules in order).

        Nothing matching means deny. The duration is capped by the rule and the resource.
        """
        subject, groups = request.requester.subject, set(request.requester.groups)
        resource = self.catalogue.get(request.resource)
        requested = timedelta(seconds=request.duration_seconds)

        def decided(
            outcome: Outcome, rule: Rule | None, reasons: list[str], seconds: int = 0
        ) -> PolicyDecidedData:
            return PolicyDecidedData(
                request_id=request.request_id,
                outcome=outcome,
                rule=rule.name if rule else None,
                reasons=reasons,
                effective_duration_seconds=seconds,
                approvals_required=rule.approvals if rule else 0,
                approver_groups=list(rule.approver_groups) if rule else [],
                policy_version=self.version,
            )

        if resource is None:
            return decided(Outcome.DENY, None, [f"resource '{request.resource}' is not in the catalogue"])
        if request.role not in resource.roles:
            return decided(Outcome.DENY, None, [f"resource '{resource.name}' has no role '{request.role}'"])

        matching = [r for r in self.rules if r.matches(subject, groups, resource.name, request.role)]
        deny = next((r for r in matching if r.outcome is Outcome.DENY), None)
        if deny is not None:
            return decided(Outcome.DENY, deny, [deny.message or f"denied by rule '{deny.name}'"])
        if not matching:
            return decided(
                Outcome.DENY,
                None,
                [f"no rule lets '{subject}' have '{request.role}' on '{resource.name}' (default deny)"],
            )
        rule = matching[0]
        caps = [c for c in (rule.cap(), resource.max_duration) if c is not None]
        effective = min([requested, *caps])
        reasons = [f"matched rule '{rule.name}'"]
        if effective < requested:
            reasons.append(f"duration capped to {int(effective.total_seconds())}s")
        if rule.outcome is Outcome.REVIEW:
            reasons.append(f"needs {rule.approvals} approval(s)")
        return decided(rule.outcome, rule, reasons, int(effective.total_seconds()))


class PolicySource:
    """The policy in force: re-read when files change; a broken change keeps the last good one."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fingerprint = PolicyDirectory.fingerprint(path)
        self._policy = Policy.load(path)
        self._checked = 0.0

    def current(self, now: float) -> Policy:
        if now - self._checked < 1.0:
            return self._policy
        self._checked = now
        fingerprint = PolicyDirectory.fingerprint(self._path)
        if fingerprint != self._fingerprint:
            self._fingerprint = fingerprint
            try:
                self._policy = Policy.load(self._path)
                log.info("policy reloaded", version=self._policy.version)
            except PolicyDirError as exc:
                log.error(
                    "policy change rejected; the last good version stays in force",
                    error=str(exc),
                    version=self._policy.version,
                )
        return self._policy
