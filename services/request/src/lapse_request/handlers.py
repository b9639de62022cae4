"""Use cases of the request service: each one transaction, state and outgoing events together."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import structlog
from pydantic import ValidationError

from lapse_request import domain, repository
from lapse_request.domain import SOURCE, AccessRequest, State, SubmissionRejected
from lapse_request.review import ReviewRefused, check_reviewer
from lapse_shared.catalogue import CatalogueSource
from lapse_shared.db import inbox, outbox
from lapse_shared.events import (
    GrantActivated,
    GrantExtended,
    GrantFailed,
    GrantRevoked,
    PolicyDecided,
    RequestExpire,
    RequestRejected,
    RequestRejectedData,
    RequestSubmit,
    ReviewVerdict,
    utcnow,
)
from lapse_shared.http.identity import Identity
from lapse_shared.messaging.topology import COMMANDS

log = structlog.get_logger("lapse.request")
SCHEMA = repository.SCHEMA
T = TypeVar("T")
# A delayed request.expire arriving this early is held until due; earlier, it goes round again.
HOLD_SECONDS = 3.0


@dataclass(frozen=True)
class WorkflowRules:
    """Settings of the workflow that the handlers enforce."""

    pending_ttl: timedelta = timedelta(hours=24)
    max_schedule_ahead: timedelta = timedelta(days=30)
    sweep_grace: timedelta = timedelta(seconds=5)


class RequestHandlers:
    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        catalogue: CatalogueSource,
        clock: Callable[[], datetime] = utcnow,
        rules: WorkflowRules | None = None,
    ) -> None:
        self._pool = pool
        self._catalogue = catalogue
        self._clock = clock
        self._rules = rules or WorkflowRules()

    async def _commit(self, conn: asyncpg.Connection, request: AccessRequest, *, new: bool = False) -> bool:
        if new:
            if not await repository.insert(conn, request):
                return False
        else:
            await repository.save(conn, request)
        for event in request.events:
            await outbox.add(conn, SCHEMA, event)
        for command, due_at in request.commands:
            await outbox.add(conn, SCHEMA, command, exchange=COMMANDS, due_at=due_at)
        request.events.clear()
        request.commands.clear()
        return True

    def _submit(self, **fields: Any) -> AccessRequest:
        return domain.submit(
            self._catalogue.current(time.monotonic()),
            now=self._clock(),
            pending_ttl=self._rules.pending_ttl,
            max_schedule_ahead=self._rules.max_schedule_ahead,
            **fields,
        )

    async def submit_request(
        self,
        identity: Identity,
        *,
        resource: str,
        role: str,
        duration: timedelta,
        reason: str,
        ticket: str | None = None,
        break_glass: bool = False,
        start_at: datetime | None = None,
    ) -> AccessRequest:
        request = self._submit(
            requester=identity.subject,
            groups=sorted(identity.groups),
            resource=resource,
            role=role,
            duration=duration,
            reason=reason,
            ticket=ticket,
            break_glass=break_glass,
            attributes=dict(identity.attributes),
            start_at=start_at,
        )
        async with self._pool().acquire() as conn, conn.transaction():
            await self._commit(conn, request, new=True)
        log.info(
            "request submitted",
            request_id=str(request.id),
            requester=identity.subject,
            resource=resource,
            role=role,
            duration_seconds=request.duration_seconds,
        )
        return request

    async def get_request(self, request_id: uuid.UUID) -> AccessRequest | None:
        async with self._pool().acquire() as conn:
            return await repository.get(conn, request_id)

    async def search(
        self, query: repository.Query, viewer: Identity | None
    ) -> tuple[list[AccessRequest], str | None]:
        async with self._pool().acquire() as conn:
            found, cursor = await repository.search(conn, query)
        if query.awaiting_review_by is not None and viewer is not None:
            found = [r for r in found if may_review_now(r, viewer)]
        return found, cursor

    async def _change(
        self, request_id: uuid.UUID, change: Callable[[AccessRequest, datetime], T]
    ) -> tuple[AccessRequest, T] | None:
        """Read one request FOR UPDATE, change it, write it and its messages; None if unknown."""
        async with self._pool().acquire() as conn, conn.transaction():
            request = await repository.get(conn, request_id, for_update=True)
            if request is None:
                return None
            result = change(request, self._clock())
            await self._commit(conn, request)
        return request, result

    async def review(
        self, request_id: uuid.UUID, reviewer: Identity, verdict: ReviewVerdict, comment: str
    ) -> AccessRequest | None:
        changed = await self._change(
            request_id,
            lambda r, now: domain.review(r, reviewer=reviewer, verdict=verdict, comment=comment, now=now),
        )
        if changed is None:
            return None
        request, _ = changed
        log.info(
            "request reviewed",
            request_id=str(request_id),
            reviewer=reviewer.subject,
            verdict=verdict.value,
            state=request.state.value,
        )
        return request

    async def cancel(self, request_id: uuid.UUID, by: Identity) -> AccessRequest | None:
        changed = await self._change(request_id, lambda r, now: domain.cancel(r, by=by.subject, now=now))
        if changed:
            log.info("request cancelled", request_id=str(request_id), by=by.subject)
        return changed[0] if changed else None

    async def release(self, request_id: uuid.UUID, by: Identity, reason: str) -> AccessRequest | None:
        changed = await self._change(
            request_id, lambda r, now: domain.release(r, by=by.subject, reason=reason, now=now)
        )
        if changed:
            log.info("release asked", request_id=str(request_id), by=by.subject)
        return changed[0] if changed else None

    async def extend(
        self, original: AccessRequest, identity: Identity, *, duration: timedelta, reason: str
    ) -> AccessRequest:
        """A new request for more time on an active grant, decided by policy like any other."""
        if original.state is not State.ACTIVE or original.grant_id is None:
            raise domain.Conflict(
                f"The request is {original.state.value}; only an active grant can be extended."
            )
        request = self._submit(
            requester=identity.subject,
            groups=sorted(identity.groups),
            resource=original.resource,
            role=original.role,
            duration=duration,
            reason=reason,
            ticket=original.ticket,
            attributes=dict(identity.attributes),
            extends_grant_id=original.grant_id,
        )
        async with self._pool().acquire() as conn, conn.transaction():
            await self._commit(conn, request, new=True)
        log.info("extension requested", request_id=str(request.id), grant_id=str(original.grant_id))
        return request

    async def on_expire(self, command: RequestExpire) -> None:
        """The delayed pending-TTL command arrived: expire the request if it is still pending."""
        due = command.data.pending_until
        if not await outbox.hold_until_due(self._pool(), SCHEMA, command, due, self._clock(), HOLD_SECONDS):
            return
        async with self._pool().acquire() as conn, conn.transaction():
            if not await inbox.claim(conn, SCHEMA, command):
                return
            request = await repository.get(conn, command.data.request_id, for_update=True)
            if request is None or not domain.expire(request, command, self._clock()):
                return
            await self._commit(conn, request)
        log.info("pending request expired", request_id=str(request.id))

    async def sweep_expired(self, batch: int = 100) -> int:
        """Expire overdue pending requests: those the policy never decided (they have no delayed
        command) and any a delayed command missed."""
        expired = 0
        async with self._pool().acquire() as conn:
            due = await repository.overdue_pending(conn, self._clock() - self._rules.sweep_grace, batch)
        for request_id in due:
            changed = await self._change(request_id, lambda r, now: domain.expire(r, None, now))
            expired += bool(changed and changed[1])
        if expired:
            log.warning("pending requests expired by the sweeper", count=expired)
        return expired

    async def run_sweeper(self, interval_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.sweep_expired()
            except (OSError, asyncpg.PostgresError) as exc:
                # The database is away for a while: the next pass catches up.
                log.warning("pending-expiry sweep failed; retrying next pass", error=str(exc))

    async def on_submit_command(self, body: bytes, principal: str) -> str | None:
        """A `request.submit` command from another system; None if accepted, else why not.

        `principal` is the command's AMQP `user_id`, already checked against
        LAPSE_SUBMIT_PRINCIPALS by the producer check every consumer runs (`lapse_shared.messaging.auth`).

        A refused command is answered with `request.rejected` (committed here) and the caller
        dead-letters the message, so it is neither dropped nor retried.
        """
        try:
            command = RequestSubmit.model_validate_json(body)
        except ValidationError as exc:
            errors = [
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                for e in exc.errors(include_url=False, include_input=False)
            ]
            # Parsed a second time only when invalid: the rejection names the command if it can.
            return await self._reject(
                _command_id(body), principal, "the message is not a valid request.submit", errors
            )
        data = command.data
        try:
            duration = timedelta(seconds=data.duration_seconds)
        except OverflowError:  # not a ValueError: it would escape and be retried to the delivery limit
            message = f"{data.duration_seconds} seconds is too long to be a duration"
            return await self._reject(command.id, principal, message, [f"data.duration_seconds: {message}"])
        try:
            request = self._submit(
                request_id=command.id,
                requester=data.on_behalf_of or principal,
                # The submitter's word on the person's groups is not trusted: it is kept for the
                # audit trail only, so no group rule or approver exclusion ever reads it.
                groups=[],
                claimed_groups=sorted(set(data.groups)),
                resource=data.resource,
                role=data.role,
                duration=duration,
                reason=data.reason,
                ticket=data.ticket,
                start_at=data.start_at,
                kind="user" if data.on_behalf_of else "service",
                submitted_by=principal,
            )
        except SubmissionRejected as exc:
            return await self._reject(
                command.id, principal, exc.message, [f"data.{exc.field}: {exc.message}"]
            )
        async with self._pool().acquire() as conn, conn.transaction():
            if not await inbox.claim(conn, SCHEMA, command) or not await self._commit(
                conn, request, new=True
            ):
                log.info("duplicate request.submit skipped", command_id=str(command.id))
                return None
        log.info(
            "request submitted by command",
            request_id=str(request.id),
            principal=principal,
            requester=request.requester,
            resource=request.resource,
            role=request.role,
        )
        return None

    async def _reject(
        self,
        command_id: uuid.UUID | None,
        principal: str | None,
        reason: str,
        errors: list[str] | None = None,
    ) -> str:
        event = RequestRejected.create(
            source=SOURCE,
            request_id=command_id or uuid.uuid4(),
            data=RequestRejectedData(
                command_id=command_id,
                principal=principal,
                reason=reason,
                errors=errors or [],
                rejected_at=self._clock(),
            ),
        )
        async with self._pool().acquire() as conn, conn.transaction():
            await outbox.add(conn, SCHEMA, event)
        log.warning(
            "request.submit rejected; parked in the dead-letter queue",
            command_id=str(command_id) if command_id else None,
            principal=principal,
            reason=reason,
            errors=errors or [],
        )
        return reason

    async def on_policy_decided(self, event: PolicyDecided) -> None:
        await self._apply(
            event, event.data.request_id, lambda r, now: domain.apply_decision(r, event.data, event, now)
        )

    async def on_grant_event(
        self, event: GrantActivated | GrantRevoked | GrantFailed | GrantExtended
    ) -> None:
        if isinstance(event, GrantActivated):
            await self._apply(
                event, event.data.request_id, lambda r, now: domain.apply_grant_activated(r, event.data, now)
            )
        elif isinstance(event, GrantRevoked):
            await self._apply(
                event, event.data.request_id, lambda r, now: domain.apply_grant_revoked(r, event.data, now)
            )
        elif isinstance(event, GrantExtended):
            await self._apply(
                event,
                event.data.request_id,
                lambda r, now: domain.apply_grant_extended(r, event.data, now),
                also=event.data.extension_request_id,
            )
        else:
            await self._apply(
                event, event.data.request_id, lambda r, now: domain.apply_grant_failed(r, event.data, now)
            )

    async def _apply(
        self,
        event: PolicyDecided | GrantActivated | GrantRevoked | GrantFailed | GrantExtended,
        request_id: uuid.UUID,
        change: Callable[[AccessRequest, datetime], None],
        *,
        also: uuid.UUID | None = None,
    ) -> None:
        async with self._pool().acquire() as conn, conn.transaction():
            if not await inbox.claim(conn, SCHEMA, event):
                log.info("duplicate event skipped", event_id=str(event.id), type=event.type)
                return
            # In id order, so two events locking the same pair of requests cannot deadlock.
            ids = sorted({request_id} | ({also} if also else set()))
            requests = [r for i in ids if (r := await repository.get(conn, i, for_update=True)) is not None]
            if isinstance(event, GrantRevoked):
                # Extensions ride on the grant: they end with it.
                requests += await repository.active_extensions(conn, event.data.grant_id)
            if not requests:
                # Not ours (another deployment on the same broker?) - recorded in the inbox, ignored.
                log.warning(
                    "event for unknown request",
                    event_id=str(event.id),
                    type=event.type,
                    request_id=str(request_id),
                )
                return
            for request in requests:
                before = request.state
                change(request, self._clock())
                await self._commit(conn, request)
                log.info(
                    "request updated",
                    request_id=str(request.id),
                    event_type=event.type,
                    state_before=before.value,
                    state=request.state.value,
                )


def may_review_now(request: AccessRequest, identity: Identity) -> bool:
    """Whether `identity` could review `request` now: the review endpoint's own check."""
    requirement = request.requirement()
    if not request.awaiting_review or request.decision is None or requirement is None:
        return False
    try:
        check_reviewer(
            requirement,
            request.reviews,
            requester=request.requester,
            reviewer=identity,
            rule=request.decision.get("rule"),
        )
    except ReviewRefused:
        return False
    return True


def _command_id(body: bytes) -> uuid.UUID | None:
    """The `id` of a command, if it can be read even from an otherwise invalid message."""
    try:
        raw = json.loads(body)
        return uuid.UUID(str(raw["id"])) if isinstance(raw, dict) else None
    except (ValueError, KeyError, TypeError, RecursionError):  # nested too deep: unreadable
        return None
