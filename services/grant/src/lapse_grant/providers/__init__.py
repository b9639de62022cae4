"""Grant providers: plugins that turn a grant into real access in a target, and back.

A provider is registered under the `lapse.providers` entry point group with its kind as the
name (`postgres-role = "lapse_grant.providers.postgres_role:PostgresRoleProvider"`), so a
third-party package can ship one. Every operation must be idempotent: Lapse repeats them after
crashes, redeliveries and failed attempts.
"""

from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)


class ProviderError(Exception):
    """A target refused or failed; `transient` says whether trying again may help.

    The message must never carry secrets: it reaches events and the audit trail.
    """

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Access:
    """What one grant gives: `subject` holds `role` until `expires_at`."""

    grant_id: uuid.UUID
    subject: str
    role: str
    expires_at: datetime


@dataclass(frozen=True)
class Provisioned:
    """The result of a grant; `credentials` are delivered once to the requester, never logged."""

    credentials: dict[str, str] | None = None


class Provider(Protocol):
    """Idempotent operations on one kind of target; `target` is the resource's settings."""

    settings_model: ClassVar[type[BaseModel]]
    """Validates a resource's `target:` settings for this provider."""
    shared_access: ClassVar[bool]
    """True when two grants of the same subject and role share one access in the target (a role
    membership), so it may only be removed when the last of them ends; False when every grant
    gets an access of its own (an ephemeral login)."""

    async def grant(self, target: dict[str, Any], access: Access) -> Provisioned: ...

    async def revoke(self, target: dict[str, Any], access: Access) -> None: ...

    async def verify(self, target: dict[str, Any], access: Access) -> bool:
        """True when the access is present in the target."""
        ...

    async def close(self) -> None: ...

    # Optional: `def access_problem(target, access) -> str | None` says why this target cannot
    # take `access` as named (a subject too long for the target's names, characters it would
    # mangle), checked before any call reaches the target. Without it, a generic rule applies
    # (`generic_subject_problem`).
    #
    # Optional: `async def extend(target, access)` moves an expiry the target enforces itself
    # (e.g. a login's VALID UNTIL) to `access.expires_at` when a grant is extended. Providers
    # whose access lasts until Lapse revokes it need none.


async def revoke_all(provider: Provider, target: dict[str, Any], accesses: list[Access]) -> set[uuid.UUID]:
    """Revoke every access on one target, then return the grant ids whose access is still present.

    Uses the provider's `revoke_many` / `present_among` when it has them (one round trip for a
    whole batch), one call per access otherwise.
    """
    revoke_many = getattr(provider, "revoke_many", None)
    if revoke_many is not None and getattr(provider, "present_among", None) is not None:
        await revoke_many(target, accesses)
        return await present_among(provider, target, accesses)
    still = set()
    for access in accesses:
        await provider.revoke(target, access)
        if await provider.verify(target, access):
            still.add(access.grant_id)
    return still


async def present_among(provider: Provider, target: dict[str, Any], accesses: list[Access]) -> set[uuid.UUID]:
    """The grant ids whose access is present: one query with the provider's `present_among`,
    one `verify` per access otherwise."""
    batch = getattr(provider, "present_among", None)
    if batch is not None:
        present: set[uuid.UUID] = await batch(target, accesses)
        return present
    return {a.grant_id for a in accesses if await provider.verify(target, a)}


def access_problem(provider: Provider, target: dict[str, Any], access: Access) -> str | None:
    """Why `access` is malformed for this provider's target, or None (the provider's own rule)."""
    rule = getattr(provider, "access_problem", None)
    if rule is not None:
        problem: str | None = rule(target, access)
        return problem
    return generic_subject_problem(access.subject)


SUBJECT_MAX_CHARS = 256
"""The bound for subjects of providers that state no rule of their own."""


def generic_subject_problem(subject: str, max_chars: int = SUBJECT_MAX_CHARS) -> str | None:
    """The rule for any target: a bounded, printable name (no control characters, no NUL)."""
    if not subject:
        return "the subject is empty"
    if len(subject) > max_chars:
        return f"the subject is {len(subject)} characters long; at most {max_chars} are allowed"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in subject):
        return "the subject contains control characters"
    return None


def parse_settings(model: type[T], kind: str, target: dict[str, Any]) -> T:
    """A provider's settings, or a permanent ProviderError that says what is wrong (no values)."""
    try:
        return model.model_validate(target)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise ProviderError(f"invalid {kind} target settings: {problems}", transient=False) from None


def load_providers() -> dict[str, Provider]:
    """Instantiate every installed provider plugin, by kind."""
    return {ep.name: ep.load()() for ep in entry_points(group="lapse.providers")}
