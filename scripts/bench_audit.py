"""Measure the audit service: ingest rate into the chain, and how far the SIEM stream lags it.

Starts its own audit service process on a fresh vhost and database (nothing else is touched),
stops it, queues a burst of events on `lapse.events` (a backlog, so the load generator's own
publishing speed does not cap the figure), starts the service again and prints:

- ingest: events chained per second while it works through the burst, from the first entry's
  `recorded_at` to the last one's (the database's clock, startup excluded);
- stream lag: for every OCSF record, arrival on the stream (read by a consumer attached before
  the restart) minus its entry's `recorded_at`, p50 / p99 / max.

Usage: python scripts/bench_audit.py [--events 20000]
Broker and database as in the tests: LAPSE_TEST_AMQP_URL / LAPSE_TEST_DATABASE_URL, else local.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lapse_shared.messaging.topology import EVENTS  # noqa: E402
from tests.infra import start_infra  # noqa: E402
from tests.processes import ServiceProcesses  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def make_events(count: int) -> list[bytes]:
    bodies = []
    for i in range(count):
        request_id = str(uuid.uuid4())
        bodies.append(
            json.dumps(
                {
                    "specversion": "1.0",
                    "id": str(uuid.uuid4()),
                    "type": "request.submitted",
                    "source": "bench",
                    "time": "2026-01-01T00:00:00+00:00",
                    "subject": request_id,
                    "correlation_id": request_id,
                    "causation_id": None,
                    "data": {
                        "request_id": request_id,
                        "requester": {"subject": f"user{i % 50}", "groups": []},
                        "resource": "orders-db",
                        "role": "orders_readonly",
                        "duration_seconds": 60,
                        "reason": f"benchmark {i}",
                        "submitted_at": "2026-01-01T00:00:00+00:00",
                    },
                }
            ).encode()
        )
    return bodies


async def publish(amqp_url: str, bodies: list[bytes]) -> float:
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EVENTS)
        started = time.monotonic()
        for start in range(0, len(bodies), 500):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(b, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        "request.submitted",
                    )
                    for b in bodies[start : start + 500]
                )
            )
        return time.monotonic() - started


async def read_stream(amqp_url: str, count: int, lags: list[float], ready: asyncio.Event) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        queue = await channel.declare_queue("lapse.siem.ocsf", passive=True)
        async with queue.iterator(arguments={"x-stream-offset": "next"}) as messages:
            ready.set()
            async for message in messages:
                now = time.time() * 1000
                for line in message.body.splitlines():  # JSON lines: up to 100 records a message
                    record: dict[str, Any] = json.loads(line)
                    lags.append(now - record["metadata"]["logged_time"])
                await message.ack()
                if len(lags) >= count:
                    return


async def chained(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM audit.log"))
    finally:
        await conn.close()


async def chain_seconds(database_url: str) -> float:
    conn = await asyncpg.connect(database_url)
    try:
        span = await conn.fetchval(
            "SELECT extract(epoch FROM max(recorded_at) - min(recorded_at)) FROM audit.log"
        )
        return float(span)
    finally:
        await conn.close()


async def run(count: int, amqp_url: str, database_url: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        procs = ServiceProcesses(
            env={
                "LAPSE_AMQP_URL": amqp_url,
                "LAPSE_DATABASE_URL": database_url,
                "LAPSE_TOKEN_FILE": str(ROOT / "examples" / "tokens.yaml"),
                "LAPSE_LOG_LEVEL": "WARNING",
                **{k: v for k, v in os.environ.items() if k.startswith("LAPSE_INGEST_")},
            },
            log_dir=Path(tmp),
        )
        try:
            procs.start("audit")  # declares its queue and the stream
            procs.wait_healthy("audit")
            procs.stop_all()
            publish_seconds = await publish(amqp_url, make_events(count))
            lags: list[float] = []
            ready = asyncio.Event()
            reader = asyncio.create_task(read_stream(amqp_url, count, lags, ready))
            await ready.wait()
            procs.start("audit")
            for _ in range(6000):  # bounded: 5 minutes at most
                if await chained(database_url) >= count:
                    break
                await asyncio.sleep(0.05)
            else:
                raise TimeoutError("the burst was not chained within 5 minutes")
            ingest_seconds = await chain_seconds(database_url)
            await asyncio.wait_for(reader, timeout=120)
        finally:
            procs.stop_all()
    print(f"events: {count}, queued in {publish_seconds:.2f}s ({count / publish_seconds:.0f}/s)")
    print(
        f"ingest: {count / ingest_seconds:.0f} events/s into the chain ({ingest_seconds:.2f}s for the burst)"
    )
    print(
        f"stream lag (ms): p50 {statistics.median(lags):.0f}, p99 {percentile(lags, 99):.0f},"
        f" max {max(lags):.0f} over {len(lags)} records"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20000)
    count = parser.parse_args().events
    infra = start_infra()  # its set-up runs its own event loops: outside ours
    vhost, amqp_url = infra.create_vhost()
    db_name, database_url = infra.create_database()
    try:
        asyncio.run(run(count, amqp_url, database_url))
    finally:
        infra.drop_database(db_name)
        infra.delete_vhost(vhost)


if __name__ == "__main__":
    main()
