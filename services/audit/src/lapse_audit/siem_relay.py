"""Publishes the chain to the SIEM stream as OCSF records: the log itself is the outbox.

Every committed entry has a seq; `audit.siem_cursor` holds the last seq the stream has confirmed.
The relay reads entries after the cursor, publishes their OCSF records in seq order with publisher
confirms, and only then moves the cursor. So no committed entry is ever skipped (a crash before
the cursor moves republishes, never loses: SIEMs dedup on `metadata.uid`), and ingest pays
nothing per event for it: no outbox row to write, no row to mark sent.

One relay publishes at a time (a session advisory lock: with several replicas the others stand
by), woken by the NOTIFY the append transaction sends, with polling as the fallback.

Records travel `records_per_message` to an AMQP message, one OCSF record per line (JSON lines),
in chain order. One record per message cost a syscall and three frames per record here, and the
relay could not keep up with ingest on two cores; with 100 per message it costs next to nothing.
A consumer splits the body into lines; `records_per_message=1` sends one record per message,
routed `ocsf.<class_uid>`, for a SIEM that needs that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime
from typing import Any

import aiormq
import asyncpg
import structlog
from pamqp.commands import Basic

from lapse_audit import repository
from lapse_audit.ocsf import to_ocsf
from lapse_shared.messaging.publisher import amqp_username

log = structlog.get_logger("lapse.audit.siem")

_LEADER_LOCK = 0x51E4  # one publishing relay per database


class SiemRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        database_url: str,
        amqp_url: str,
        exchange: str,
        stream: str,
        *,
        batch_size: int = 1000,
        poll_seconds: float = 1.0,
        records_per_message: int = 100,
    ) -> None:
        self._pool = pool
        self._database_url = database_url
        self._amqp_url = amqp_url
        self._exchange = exchange
        self._stream = stream
        self._batch = batch_size
        self._poll = poll_seconds
        self._per_message = max(1, records_per_message)
        self._wake = asyncio.Event()
        self._amqp: aiormq.abc.AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None

    async def run(self) -> None:
        """Relay forever; broker or database faults are logged and retried."""
        try:
            await self._run()
        finally:
            await self._close_amqp()

    async def _run(self) -> None:
        while True:
            listener: asyncpg.Connection | None = None
            try:
                listener = await asyncpg.connect(self._database_url)
                if not await listener.fetchval("SELECT pg_try_advisory_lock($1)", _LEADER_LOCK):
                    await listener.close()
                    await asyncio.sleep(self._poll * 5)  # another replica publishes
                    continue
                await listener.add_listener(repository.APPENDED_CHANNEL, lambda *_: self._wake.set())
                await self._relay_until_failure()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the relay must outlive any fault
                log.warning("SIEM relay failed, retrying", error=str(exc))
                await self._close_amqp()
                await asyncio.sleep(self._poll)
            finally:
                if listener is not None and not listener.is_closed():
                    await listener.close()  # also releases the leader lock

    async def _relay_until_failure(self) -> None:
        while True:
            self._wake.clear()
            while await self.publish_batch() == self._batch:
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll)

    async def publish_batch(self) -> int:
        """Publish the next entries after the cursor; returns how many."""
        async with self._pool.acquire() as conn:
            cursor = await repository.siem_cursor(conn, self._stream)
            rows = await repository.entries_after(conn, cursor, self._batch)
            if not rows:
                return 0
            entries = [json.loads(r["entry"]) for r in rows]
            owners = await repository.principals_for_failures(conn, [e["event"] for e in entries])
            channel = await self._ensure_channel()
            step = self._per_message
            chunks = [entries[i : i + step] for i in range(0, len(entries), step)]
            confirms = await asyncio.gather(*(self._publish(channel, chunk, owners) for chunk in chunks))
            if not all(isinstance(c, Basic.Ack) for c in confirms):
                # The cursor stays: the next attempt publishes these entries again.
                raise RuntimeError("the broker did not confirm every SIEM record (nack)")
            await repository.move_siem_cursor(conn, self._stream, rows[-1]["seq"])
        return len(rows)

    async def _publish(
        self, channel: aiormq.abc.AbstractChannel, entries: list[dict[str, Any]], owners: dict[str, str]
    ) -> object:
        records = [
            to_ocsf(e["seq"], e["recorded_at"], e["event"], owners.get(str(e["event"]["correlation_id"])))
            for e in entries
        ]
        body = "\n".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in records) + "\n"
        first, last = entries[0], entries[-1]
        single = len(records) == 1
        kind = f"ocsf.{records[0]['class_uid']}" if single else "ocsf.records"
        # mandatory: a stream gone missing makes the publish fail instead of vanishing unrouted.
        return await channel.basic_publish(
            body.encode(),
            exchange=self._exchange,
            routing_key=kind,
            properties=Basic.Properties(
                content_type="application/x-ndjson",
                delivery_mode=2,
                message_id=str(first["event"]["id"])
                if single
                else f"lapse-audit:{first['seq']}-{last['seq']}",
                correlation_id=str(first["event"]["correlation_id"]) if single else None,
                message_type=kind,
                timestamp=datetime.fromisoformat(last["recorded_at"]),
                app_id="lapse/audit",
                # RabbitMQ checks it against the connection: a reader tells the relay's records
                # from anything another user with write on the exchange put on the stream.
                user_id=amqp_username(self._amqp_url),
                headers={
                    "lapse-first-seq": first["seq"],
                    "lapse-last-seq": last["seq"],
                    "lapse-records": len(records),
                },
            ),
            mandatory=True,
        )

    async def _ensure_channel(self) -> aiormq.abc.AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            await self._close_amqp()
            self._amqp = await aiormq.connect(
                self._amqp_url, client_properties={"connection_name": "lapse-audit-siem"}
            )
            self._channel = await self._amqp.channel(publisher_confirms=True)
        return self._channel

    async def _close_amqp(self) -> None:
        if self._amqp is not None:
            with contextlib.suppress(Exception):
                await self._amqp.close()
        self._amqp, self._channel = None, None
