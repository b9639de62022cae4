"""The grant service's own check of an approval: nothing on the wire is trusted.

A `request.approved` says who gets which role on which resource for how long; whoever can
publish on the events exchange can write one. So before anything touches a target (when the
approval arrives, and again right before each grant call, since the catalogue may have changed
and a scheduled grant starts days later) the grant is checked against the current catalogue and
this service's own limits. Pure functions: they return what is wrong, or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from lapse_grant.domain import Grant
from lapse_shared.catalogue import Catalogue, reserved_role_problem

CLOCK_SKEW = timedelta(minutes=1)
"""How far ahead of this service's clock an approval time may be (the services' clocks differ a little)."""


@dataclass(frozen=True)
class Limits:
    """This service's own limits, from its settings (not from the request service's word)."""

    max_schedule_ahead: timedelta = timedelta(days=30)


def grant_problem(grant: Grant, catalogue: Catalogue, now: datetime, limits: Limits) -> str | None:
    """What makes `grant` one nobody may have approved, or None.

    The resource must be in the catalogue and still served by the grant's provider, the role one
    it offers (never a reserved one), the window within its `max_duration`, the start within the
    schedule limit and the approval not in the future (a window counted from a future approval
    time would be longer than the one checked).
    """
    offered = offer_problem(grant, catalogue)
    if offered is not None:
        return offered
    resource = catalogue.get(grant.resource)
    assert resource is not None
    if grant.approved_at is not None and grant.approved_at > now + CLOCK_SKEW:
        return f"the approval time {grant.approved_at.isoformat()} is in the future"
    if grant.start_at is not None and grant.start_at > now + limits.max_schedule_ahead:
        return (
            f"the start {grant.start_at.isoformat()} is more than"
            f" {_seconds(limits.max_schedule_ahead)}s ahead (LAPSE_MAX_SCHEDULE_AHEAD)"
        )
    window_start = grant.start_at or grant.approved_at
    window = timedelta(seconds=grant.duration_seconds)
    if grant.expires_at is not None and window_start is not None:  # None: recorded before 0003
        window = max(window, grant.expires_at - window_start)
    if window > resource.max_duration:
        return (
            f"a window of {_seconds(window)}s is over the {_seconds(resource.max_duration)}s maximum"
            f" of resource '{grant.resource}'"
        )
    return None


def offer_problem(grant: Grant, catalogue: Catalogue) -> str | None:
    """Why the current catalogue does not offer `grant`'s role on its resource (through its
    provider), or None. Every grant call checks this, a drift repair of an active grant too: a
    role withdrawn from the catalogue is never granted again, whenever it was approved."""
    resource = catalogue.get(grant.resource)
    if resource is None:
        return f"resource '{_shown(grant.resource)}' is not in the catalogue"
    if resource.provider != grant.provider:
        return (
            f"resource '{grant.resource}' is now served by '{resource.provider}', not by"
            f" '{grant.provider}' as when it was approved"
        )
    reserved = reserved_role_problem(resource.provider, grant.role)
    if reserved is not None:
        return reserved
    if grant.role not in resource.roles:
        return (
            f"resource '{grant.resource}' does not offer role '{_shown(grant.role)}'; it offers:"
            f" {', '.join(resource.roles)}"
        )
    return None


def extension_limit_problem(
    catalogue: Catalogue,
    resource: str,
    role: str,
    approved_at: datetime,
    duration_seconds: int,
    now: datetime,
) -> str | None:
    """What makes an approved extension (`approved_at + duration`) one nobody may have approved."""
    entry = catalogue.get(resource)
    if entry is None:
        return f"resource '{_shown(resource)}' is not in the catalogue"
    if role not in entry.roles:
        return f"resource '{resource}' does not offer role '{_shown(role)}'"
    if approved_at > now + CLOCK_SKEW:
        return f"the approval time {approved_at.isoformat()} is in the future"
    if duration_seconds > entry.max_duration.total_seconds():
        limit = _seconds(entry.max_duration)
        return f"{duration_seconds}s is over the {limit}s maximum of resource '{resource}'"
    return None


def _shown(name: str) -> str:
    """A name from the wire, cut short: reasons go into events and the permanent audit trail."""
    return name if len(name) <= 80 else name[:80] + "…"


def _seconds(delta: timedelta) -> int:
    return int(delta.total_seconds())
