"""asyncpg SQL for revocation orders: what a kill switch or a release covered, kept for good so
that an approval given before the order but arriving after it is refused, never provisioned."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from lapse_grant.domain import Grant
from lapse_shared.events import RevokeCause


@dataclass(frozen=True)
class RevocationOrder:
    """One kill switch or release: which grants it covers (as in the command), who, why, when."""

    id: uuid.UUID
    cause: RevokeCause
    actor: str
    reason: str
    issued_at: datetime
    grant_id: uuid.UUID | None = None
    request_id: uuid.UUID | None = None
    subject: str | None = None
    resource: str | None = None

    @property
    def names_something(self) -> bool:
        return any(x is not None for x in (self.grant_id, self.request_id, self.subject, self.resource))


async def record(conn: asyncpg.Connection, order: RevocationOrder) -> None:
    await conn.execute(
        'INSERT INTO "grant".revocation_orders (id, subject, resource, request_id, grant_id, cause,'
        " actor, reason, issued_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        order.id,
        order.subject,
        order.resource,
        order.request_id,
        order.grant_id,
        order.cause.value,
        order.actor,
        order.reason,
        order.issued_at,
    )


_ORDERS = 'SELECT * FROM "grant".revocation_orders WHERE '
_BROAD = " AND grant_id IS NULL AND request_id IS NULL AND ($5::timestamptz IS NULL OR issued_at >= $5)"
# One branch per index (grant, request, subject, resource alone), not one OR across columns:
# orders are never deleted, and an OR that no index answers scanned every order ever made, before
# every grant call.
_COVERING = (
    f"{_ORDERS}grant_id = $1"
    f" UNION ALL {_ORDERS}request_id = $2"
    f" UNION ALL {_ORDERS}subject = $3 AND (resource IS NULL OR resource = $4){_BROAD}"
    f" UNION ALL {_ORDERS}subject IS NULL AND resource = $4{_BROAD}"
    " ORDER BY issued_at LIMIT 1"
)


async def covering(conn: asyncpg.Connection, grant: Grant) -> RevocationOrder | None:
    """The first order that covers `grant`, if any.

    An order naming the grant or its request covers it whenever it came; one naming a subject
    and/or a resource covers approvals given at or before it (a later approval is a new decision).
    """
    row = await conn.fetchrow(
        _COVERING,
        grant.id,
        grant.request_id,
        grant.subject,
        grant.resource,
        grant.approved_at,
    )
    if row is None:
        return None
    return RevocationOrder(
        id=row["id"],
        cause=RevokeCause(row["cause"]),
        actor=row["actor"],
        reason=row["reason"],
        issued_at=row["issued_at"],
        grant_id=row["grant_id"],
        request_id=row["request_id"],
        subject=row["subject"],
        resource=row["resource"],
    )


async def covered_ids(
    conn: asyncpg.Connection, order: RevocationOrder, states: tuple[str, ...]
) -> list[tuple[uuid.UUID, str]]:
    """The grants in `states` that `order` names, with their state, in id order."""
    rows = await conn.fetch(
        'SELECT id, state FROM "grant".grants WHERE state = ANY($5::text[])'
        " AND ($1::uuid IS NULL OR id = $1) AND ($2::uuid IS NULL OR request_id = $2)"
        " AND ($3::text IS NULL OR subject = $3) AND ($4::text IS NULL OR resource = $4) ORDER BY id",
        order.grant_id,
        order.request_id,
        order.subject,
        order.resource,
        list(states),
    )
    return [(r["id"], r["state"]) for r in rows]
