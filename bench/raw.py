"""This machine's raw limits, measured the way Lapse uses the broker and the database, so the
lifecycle's figures can be read as a share of what the box can do at that moment."""

from __future__ import annotations

import asyncio
import math
import os
import time
import uuid

import aio_pika
import asyncpg

# About the size of a Lapse event (JSON envelope with a request's data).
BODY = b"x" * 700


async def broker_confirmed_rate(amqp_url: str, seconds: float, in_flight: int = 64) -> dict[str, float]:
    """Persistent messages published with confirms into a quorum queue and consumed with one
    ack each: messages/s through the whole path (publish, confirm, deliver, ack), and the
    broker's CPU per message. With `in_flight` 1 the broker batches nothing, as when a
    lifecycle's messages trickle through one at a time."""
    connection = await aio_pika.connect(amqp_url)
    try:
        publishing = await connection.channel(publisher_confirms=True)
        consuming = await connection.channel()
        await consuming.set_qos(prefetch_count=256)
        name = f"bench.raw.{uuid.uuid4().hex[:8]}"
        queue = await consuming.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        consumed = 0
        counting = False

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal consumed
            await message.ack()
            if counting:
                consumed += 1

        tag = await queue.consume(on_message)
        deadline = time.monotonic() + 1.0 + seconds  # one second of warm-up, not counted

        async def publisher() -> None:
            while time.monotonic() < deadline:
                await publishing.default_exchange.publish(
                    aio_pika.Message(BODY, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=name
                )

        tasks = [asyncio.create_task(publisher()) for _ in range(in_flight)]
        await asyncio.sleep(1.0)
        counting, started = True, time.monotonic()
        broker_cpu = infrastructure_cpu_seconds()["broker"]
        await asyncio.gather(*tasks)
        rate = consumed / (time.monotonic() - started)
        broker_cpu = infrastructure_cpu_seconds()["broker"] - broker_cpu
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
        return {
            "confirmed_publish_consume_ack_per_s": round(rate, 1),
            "in_flight": in_flight,
            "broker_cpu_ms_per_message": round(1000 * broker_cpu / consumed, 3) if consumed else math.nan,
        }
    finally:
        await connection.close()


async def database_commit_rate(database_url: str, seconds: float, connections: int = 4) -> dict[str, float]:
    """Durable single-row INSERT commits/s (each its own transaction, synchronous_commit as
    configured) from a few connections."""
    conns = [await asyncpg.connect(database_url) for _ in range(connections)]
    table = f"bench_raw_{uuid.uuid4().hex[:8]}"
    try:
        await conns[0].execute(f"CREATE TABLE {table} (id uuid PRIMARY KEY, body text NOT NULL)")
        sync = await conns[0].fetchval("SHOW synchronous_commit")
        deadline = time.monotonic() + seconds
        done = 0

        async def writer(conn: asyncpg.Connection) -> None:
            nonlocal done
            while time.monotonic() < deadline:
                await conn.execute(f"INSERT INTO {table} VALUES ($1, $2)", uuid.uuid4(), "x" * 300)
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(writer(c) for c in conns))
        rate = done / (time.monotonic() - started)
        await conns[0].execute(f"DROP TABLE {table}")
        return {
            "single_row_commits_per_s": round(rate, 1),
            "connections": connections,
            "synchronous_commit": sync,
        }
    finally:
        for c in conns:
            await c.close()


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _stat_fields(pid: str) -> tuple[str, list[str]] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:  # the process ended between listing and reading
        return None
    head, _, tail = raw.rpartition(")")
    return head.partition("(")[2], tail.split()


def infrastructure_cpu_seconds() -> dict[str, float]:
    """CPU so far of the broker (`beam.smp`) and of the database (every `postgres` process),
    each including its reaped children, so backends that ended still count; and the machine's
    busy and total CPU seconds from /proc/stat. Differences over a step say where the CPU went.
    """
    out = {"broker": 0.0, "database": 0.0}
    names = {"beam.smp": "broker", "postgres": "database"}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        stat = _stat_fields(pid)
        if stat is None or stat[0] not in names:
            continue
        fields = stat[1]
        # utime, stime, cutime, cstime (fields 14-17): children's time counts once reaped.
        out[names[stat[0]]] += sum(int(x) for x in fields[11:15]) / CLOCK_TICKS
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    idle = cpu[3] + cpu[4]  # idle + iowait
    out["machine_total"] = sum(cpu[:8]) / CLOCK_TICKS
    out["machine_busy"] = (sum(cpu[:8]) - idle) / CLOCK_TICKS
    return out


def memory_mib(pid: int) -> dict[str, float]:
    """Current and peak resident set (VmRSS, VmHWM) in MiB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    return {"rss_mib": out.get("VmRSS", float("nan")), "peak_rss_mib": out.get("VmHWM", float("nan"))}


def load_average() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


async def confirm_latency(amqp_url: str, count: int = 200) -> dict[str, float]:
    """One publish at a time, awaiting its confirm: milliseconds p50/p99 into a quorum queue,
    and into the delay cascade as the outbox relays a 24 h `request.expire` (the cascade's
    exchanges exist once the services have started; the message stays in a level queue until
    the vhost is deleted)."""
    from lapse_shared.messaging import delay

    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        name = f"bench.latency.{uuid.uuid4().hex[:8]}"
        queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        cascade = await channel.get_exchange(delay.entry_exchange(86_400), ensure=True)
        out: dict[str, float] = {}
        for label, exchange, key in (
            ("quorum_queue", channel.default_exchange, name),
            ("delay_cascade_24h", cascade, delay.routing_key(86_400, "bench.probe")),
        ):
            times = []
            for _ in range(count):
                started = time.monotonic()
                await exchange.publish(
                    aio_pika.Message(BODY, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=key
                )
                times.append((time.monotonic() - started) * 1000)
            times.sort()
            out[f"{label}_p50_ms"] = round(times[len(times) // 2], 2)
            out[f"{label}_p99_ms"] = round(times[min(len(times) - 1, int(len(times) * 0.99))], 2)
        await queue.delete(if_unused=False, if_empty=False)
        return out
    finally:
        await connection.close()
