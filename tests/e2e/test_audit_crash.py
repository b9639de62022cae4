"""kill -9 of the audit service mid-burst loses and duplicates nothing, in the chain or the stream."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lapse_audit.checkpoints import private_key_pem
from lapse_shared.messaging.auth import SERVICES
from lapse_shared.messaging.topology import EVENTS
from services.audit.tests.events import lifecycle
from tests.processes import ServiceProcesses

pytestmark = pytest.mark.e2e

AUDITOR = "auditor-e2e-token-00000"
BURST = 6000


async def _count(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        exists = await conn.fetchval("SELECT to_regclass('audit.log') IS NOT NULL")
        return int(await conn.fetchval("SELECT count(*) FROM audit.log")) if exists else 0
    finally:
        await conn.close()


async def _publish(amqp_url: str, events: list[dict[str, Any]]) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EVENTS)
        for start in range(0, len(events), 100):
            # Sent in order on one channel; confirms awaited per chunk of 100.
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(json.dumps(e).encode(), message_id=e["id"], user_id="guest"),
                        e["type"],
                    )
                    for e in events[start : start + 100]
                )
            )


async def _stream_ids(amqp_url: str, expected: int, within: float = 60) -> list[str]:
    connection = await aio_pika.connect_robust(amqp_url)
    ids: list[str] = []
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=500)
        queue = await channel.declare_queue("lapse.siem.ocsf", passive=True)
        try:
            async with asyncio.timeout(within), queue.iterator(arguments={"x-stream-offset": "first"}) as it:
                async for message in it:
                    ids += [json.loads(line)["metadata"]["uid"] for line in message.body.splitlines()]
                    await message.ack()
                    if len(set(ids)) >= expected:
                        break
        except TimeoutError:
            pass
    return ids


async def test_audit_service_killed_mid_burst_chains_every_event_once_in_order(
    tmp_path: Path, amqp_url: str, database_url: str
) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        yaml.safe_dump({"tokens": [{"token": AUDITOR, "subject": "audrey", "groups": ["auditors"]}]})
    )
    key = tmp_path / "checkpoint.pem"
    key.write_text(private_key_pem(Ed25519PrivateKey.generate()))
    procs = ServiceProcesses(
        env={
            "LAPSE_AMQP_URL": amqp_url,
            "LAPSE_DATABASE_URL": database_url,
            "LAPSE_TOKEN_FILE": str(tokens),
            "LAPSE_CHECKPOINT_KEY_FILE": str(key),
            "LAPSE_CHECKPOINT_INTERVAL_SECONDS": "0.5",
            # One publisher for every type: the burst must be one ordered stream from one channel,
            # and who may publish what is not what this test is about (tests/security is).
            "LAPSE_BROKER_USERS": json.dumps({service: "guest" for service in SERVICES}),
        },
        log_dir=tmp_path,
    )
    events = [e for _ in range(BURST // 5) for e in lifecycle(uuid.uuid4())]
    try:
        procs.start("audit")
        procs.wait_healthy("audit")
        burst = asyncio.create_task(_publish(amqp_url, events))
        for _ in range(3000):
            if (chained := await _count(database_url)) >= BURST // 5:
                break
            await asyncio.sleep(0.02)
        procs.kill("audit")
        killed_at = await _count(database_url)
        assert killed_at < BURST, "the burst was over before the kill: nothing was tested"
        await burst
        procs.start("audit")
        procs.wait_healthy("audit")
        for _ in range(600):
            if await _count(database_url) >= BURST:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)  # anything redelivered late would show up as an extra row

        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT seq, event_id::text AS id FROM audit.log ORDER BY seq")
        finally:
            await conn.close()
        assert len(rows) == BURST, f"{len(rows)} entries for {BURST} events (killed at {killed_at})"
        assert [r["id"] for r in rows] == [e["id"] for e in events], "not exactly once in consumption order"
        assert [r["seq"] for r in rows] == list(range(1, BURST + 1))

        async with httpx.AsyncClient(timeout=30) as client:
            verify = (
                await client.get(
                    procs.url("audit") + "/v1/audit/verify", headers={"Authorization": f"Bearer {AUDITOR}"}
                )
            ).json()
        assert verify["ok"] is True, verify
        assert verify["entries"] == BURST
        assert verify["checkpoints_valid"] >= 1

        streamed = await _stream_ids(amqp_url, BURST)
        assert set(streamed) == {e["id"] for e in events}, "OCSF records lost on the way to the stream"
        # At-least-once: only a relay killed between publishing and marking sent repeats records.
        assert len(streamed) - BURST <= 500
    finally:
        procs.stop_all()
    assert "Traceback" not in procs.logs("audit")
    assert chained > 0
