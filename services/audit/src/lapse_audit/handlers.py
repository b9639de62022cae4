"""Use cases of the audit service: record events, read and export the trail, sign and verify."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from lapse_audit import report, repository
from lapse_audit.chain import Verdict
from lapse_audit.checkpoints import Checkpoint, CheckpointSigner
from lapse_audit.repository import Filters
from lapse_audit.verification import Report, Verifier
from lapse_shared.db import outbox
from lapse_shared.events import AuditCheckpoint, AuditCheckpointData, Event, utcnow

log = structlog.get_logger("lapse.audit")

CHAIN_ID = uuid.UUID("5a0d1e7c-9b1f-4c3e-8d6a-2f4b7c9e1a30")
"""Subject and correlation id of checkpoint events: they are about the chain, not a request."""


class AuditHandlers:
    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        clock: Callable[[], datetime] = utcnow,
        *,
        signer: CheckpointSigner | None = None,
    ) -> None:
        self._pool = pool
        self._clock = clock
        self.signer = signer

    async def record(self, event: Event, published_by: str | None = None) -> int | None:
        """Append the event to the chain; a redelivered event is not appended twice."""
        seq = (await self.record_batch([event.model_dump(mode="json")], [published_by]))[0]
        if seq is None:
            log.info("duplicate event skipped", event_id=str(event.id), type=event.type)
        return seq

    async def record_batch(
        self, events: Sequence[dict[str, Any]], published_by: Sequence[str | None] | None = None
    ) -> list[int | None]:
        """Append events (JSON form) in order, in one transaction; None for each duplicate.

        `published_by`: the AMQP user that published each event, chained inside its entry.
        """
        async with self._pool().acquire() as conn, conn.transaction():
            seqs = await repository.append_batch(conn, events, self._clock(), published_by)
        duplicates = seqs.count(None)
        if duplicates:
            log.info("duplicate events skipped", count=duplicates)
        return seqs

    async def trail(self, request_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        async with self._pool().acquire() as conn:
            rows = await repository.for_request(conn, request_id, limit)
        return [{**json.loads(r["entry"]), "hash": r["hash"]} for r in rows]

    async def requester_of(self, request_id: str) -> str | None:
        async with self._pool().acquire() as conn:
            return await repository.requester_of(conn, request_id)

    async def query(self, filters: Filters, limit: int) -> list[dict[str, Any]]:
        async with self._pool().acquire() as conn:
            rows = await repository.query(conn, filters, limit)
        return [{**json.loads(r["entry"]), "hash": r["hash"]} for r in rows]

    async def export(self, after_seq: int) -> AsyncIterator[dict[str, Any]]:
        """Entries after the cursor, each followed by the checkpoints signed at its seq.

        One repeatable-read snapshot, so a long export is consistent however fast the chain grows.
        """
        async with (
            self._pool().acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            pending = {cp.seq: cp for cp in await repository.checkpoints(conn, after_seq)}
            async for entry in repository.all_entries(conn, after_seq=after_seq):
                yield {
                    "kind": "entry",
                    "cursor": str(entry.seq),
                    "seq": entry.seq,
                    "prev_hash": entry.prev_hash,
                    "hash": entry.hash,
                    "entry": json.loads(entry.entry),
                }
                if entry.seq in pending:
                    yield {"kind": "checkpoint", **pending.pop(entry.seq).as_dict()}

    async def verify_all(self, keys: list[Ed25519PublicKey] | None = None) -> Report:
        """The chain and every stored checkpoint, against `keys` (default: our own public key)."""
        trusted = keys if keys is not None else ([self.signer.public_key] if self.signer else [])
        async with (
            self._pool().acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            verifier = Verifier(await repository.checkpoints(conn), trusted)
            async for entry in repository.all_entries(conn):
                if not verifier.feed(entry):
                    break
        return verifier.report()

    async def verify(self) -> Verdict:
        """The hash chain alone (see verify_all for the checkpoints too)."""
        return (await self.verify_all()).chain

    async def checkpoint(self) -> Checkpoint | None:
        """Sign the current head, store it and publish it; None if nothing new since the last one."""
        if self.signer is None:
            return None
        async with self._pool().acquire() as conn, conn.transaction():
            await repository.lock_chain(conn)  # the head cannot move while it is signed
            seq, head_hash = await repository.head(conn)
            last = await repository.last_checkpoint_seq(conn)
            if seq == 0 or (last is not None and last >= seq):
                return None
            cp = self.signer.sign(seq, head_hash, self._clock())
            await repository.add_checkpoint(conn, cp)
            event = AuditCheckpoint.create(
                source="lapse/audit",
                request_id=CHAIN_ID,
                data=AuditCheckpointData.model_validate(cp.as_dict()),
            )
            await outbox.add(conn, repository.SCHEMA, event)
        log.info("checkpoint signed", seq=cp.seq, head_hash=cp.head_hash, key_id=cp.key_id)
        return cp

    async def checkpoints(self, after_seq: int = -1) -> list[Checkpoint]:
        async with self._pool().acquire() as conn:
            return await repository.checkpoints(conn, after_seq)

    async def access_report(self, start: datetime, end: datetime) -> list[report.GrantRow]:
        async with (
            self._pool().acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            events = [e async for e in repository.grant_request_events(conn, end)]
        return report.build(events, start, end)
