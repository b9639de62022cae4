"""Use cases of the audit service: record an event, read a request's trail, verify the chain."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from lapse_audit import repository
from lapse_audit.chain import ChainVerifier, Verdict
from lapse_shared.events import Event, utcnow

log = structlog.get_logger("lapse.audit")


class AuditHandlers:
    def __init__(self, pool: Callable[[], asyncpg.Pool], clock: Callable[[], datetime] = utcnow) -> None:
        self._pool = pool
        self._clock = clock

    async def record(self, event: Event) -> int | None:
        """Append the event to the chain; a redelivered event is not appended twice."""
        body: dict[str, Any] = event.model_dump(mode="json")
        async with self._pool().acquire() as conn, conn.transaction():
            seq = await repository.append(conn, body, self._clock())
        if seq is None:
            log.info("duplicate event skipped", event_id=str(event.id), type=event.type)
        else:
            log.debug("event recorded", seq=seq, event_id=str(event.id), type=event.type)
        return seq

    async def trail(self, request_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        async with self._pool().acquire() as conn:
            rows = await repository.for_request(conn, request_id, limit)
        return [{**json.loads(r["entry"]), "hash": r["hash"]} for r in rows]

    async def verify(self) -> Verdict:
        verifier = ChainVerifier()
        async with self._pool().acquire() as conn, conn.transaction(isolation="repeatable_read"):
            async for entry in repository.all_entries(conn):
                if not verifier.feed(entry):
                    break
        return verifier.verdict()
