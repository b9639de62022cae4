"""Benchmark: N grants expiring within one minute against the postgres-role provider.

Starts the grant service as its own process on a vhost and database of its own, creates N
member roles in the target, publishes N `request.approved` events, waits until every grant is
revoked, then prints revocation lateness p50/p99/max and the grant service's peak RSS.

Usage: python scripts/bench_expiry.py [--grants 10000] [--base 120] [--spread 45] [--csv out.csv]
All N approvals carry one approval time, and a window counts from approval, so expiry i falls at
approval + base + i/N * spread seconds: within `spread` seconds, whatever the machine's speed
(`base` must leave time to activate them all first; the script prints the real window).
Needs the local RabbitMQ and PostgreSQL (LAPSE_TEST_AMQP_URL / LAPSE_TEST_DATABASE_URL override
them), and `rabbitmqctl`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import asyncpg
import yaml

from lapse_shared.events import RequestApproved, RequestApprovedData, utcnow
from lapse_shared.messaging.publisher import to_message
from lapse_shared.messaging.topology import EVENTS, declare_exchanges

AMQP = os.environ.get("LAPSE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
ADMIN_DB = os.environ.get("LAPSE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def url_with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + path))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grants", type=int, default=10_000)
    parser.add_argument(
        "--base", type=float, default=120.0, help="seconds from the approval to the first expiry"
    )
    parser.add_argument(
        "--spread",
        type=float,
        default=45.0,
        help="seconds added across the grants, from 0 for the first to this for the last: the window",
    )
    parser.add_argument(
        "--csv", type=Path, help="write each grant's expires_at, revoked_at, lateness and cause here"
    )
    args = parser.parse_args()
    n, tag = args.grants, f"b{uuid.uuid4().hex[:6]}"
    vhost, database = f"lapse-bench-{tag}", f"lapse_bench_{tag}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
    subprocess.run(
        [
            "rabbitmqctl",
            "-q",
            "set_permissions",
            "-p",
            vhost,
            urlsplit(AMQP).username or "guest",
            ".*",
            ".*",
            ".*",
        ],
        check=True,
    )
    admin = await asyncpg.connect(ADMIN_DB)
    await admin.execute(f'CREATE DATABASE "{database}"')
    db_url = url_with_path(ADMIN_DB, database)
    provisioner, reader = f"{tag}_provisioner", f"{tag}_reader"
    print(f"creating {n} member roles ...", flush=True)
    await admin.execute(f'CREATE ROLE "{provisioner}" LOGIN CREATEROLE; CREATE ROLE "{reader}" NOLOGIN')
    loop = f"DO $$ BEGIN FOR i IN 1..{n} LOOP EXECUTE format('{{}}', '{tag}_u' || i); END LOOP; END $$"
    await admin.execute(loop.format("CREATE ROLE %I LOGIN"))
    workdir = Path(tempfile.mkdtemp(prefix="lapse-bench-"))
    parts = urlsplit(db_url)
    if parts.hostname:
        provisioner_dsn = urlunsplit(
            parts._replace(netloc=f"{provisioner}@{parts.hostname}:{parts.port or 5432}")
        )
    else:  # a Unix-socket URL: postgresql://user@/db?host=/var/run/postgresql
        provisioner_dsn = urlunsplit(parts._replace(netloc=f"{provisioner}@"))
    (workdir / "policies").mkdir()
    (workdir / "policies" / "resources.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [
                    {
                        "name": "bench-db",
                        "provider": "postgres-role",
                        "roles": [reader],
                        "max_duration": "1h",
                        "target": {"dsn": provisioner_dsn, "member_format": f"{tag}_{{subject}}"},
                    }
                ]
            }
        )
    )
    (workdir / "tokens.yaml").write_text(
        yaml.safe_dump({"tokens": [{"token": uuid.uuid4().hex, "subject": "bench", "groups": []}]})
    )
    amqp_url = urlunsplit(urlsplit(AMQP)._replace(path="/" + quote(vhost, safe="")))
    env = {
        **os.environ,
        "LAPSE_AMQP_URL": amqp_url,
        "LAPSE_DATABASE_URL": db_url,
        "LAPSE_HTTP_PORT": "0",
        "LAPSE_POLICY_DIR": str(workdir / "policies"),
        "LAPSE_TOKEN_FILE": str(workdir / "tokens.yaml"),
        "LAPSE_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "LAPSE_LOG_JSON": "true",
        "LAPSE_DB_POOL_MAX": "20",
    }
    log = (workdir / "grant.log").open("wb")
    grant = subprocess.Popen(
        [sys.executable, "-m", "lapse_grant"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
        assert pool is not None
        connection = await aio_pika.connect_robust(amqp_url)
        channel = await connection.channel(publisher_confirms=True)
        while True:  # publish only once the service's queue is bound, or the first events are lost
            try:
                probe = await connection.channel()
                await probe.declare_queue("lapse.grant.approved", passive=True)
                await probe.close()
                break
            except aio_pika.exceptions.ChannelClosed:
                await asyncio.sleep(0.2)
        await declare_exchanges(channel)
        events = await channel.get_exchange(EVENTS)
        started = time.monotonic()
        # One approval time for all: a window counts from approval, so expiry i falls exactly at
        # approved + base + spread * i / n, however long publishing and activation take.
        approved = utcnow()
        for i in range(n):
            request_id = uuid.uuid4()
            event = RequestApproved.create(
                source="bench",
                request_id=request_id,
                data=RequestApprovedData(
                    request_id=request_id,
                    requester=f"u{i + 1}",
                    resource="bench-db",
                    role=reader,
                    duration_seconds=round(args.base + args.spread * i / n),
                    approved_at=approved,
                    rule="bench",
                    policy_version="bench",
                ),
            )
            await events.publish(to_message(event), routing_key=event.type)
        print(f"published {n} approvals in {time.monotonic() - started:.1f}s", flush=True)
        await connection.close()
        while (
            active := await pool.fetchval(
                "SELECT count(*) FROM \"grant\".grants WHERE state <> 'provisioning'"
            )
        ) < n:
            await asyncio.sleep(1)
        window = await pool.fetchrow(
            "SELECT min(granted_at) AS a0, max(granted_at) AS a1, min(expires_at) AS e0,"
            ' max(expires_at) AS e1 FROM "grant".grants'
        )
        print(
            f"{active} grants active after {time.monotonic() - started:.1f}s "
            f"(activations spread over {(window['a1'] - window['a0']).total_seconds():.1f}s; "
            f"expiries spread over {(window['e1'] - window['e0']).total_seconds():.1f}s)",
            flush=True,
        )
        deadline = time.monotonic() + args.base + args.spread + 600
        while await pool.fetchval("SELECT count(*) FROM \"grant\".grants WHERE state = 'active'") and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(1)
        rss = peak_rss_mib(grant.pid)
        rows = await pool.fetch(
            'SELECT id, expires_at, revoked_at, lateness_ms, revoke_cause, state FROM "grant".grants'
            " ORDER BY expires_at"
        )
        if args.csv:
            with args.csv.open("w", newline="") as out:
                writer = csv.writer(out)
                writer.writerow(["id", "expires_at", "revoked_at", "lateness_ms", "revoke_cause"])
                writer.writerows(
                    (
                        r["id"],
                        r["expires_at"].isoformat(),
                        r["revoked_at"] and r["revoked_at"].isoformat(),
                        r["lateness_ms"],
                        r["revoke_cause"],
                    )
                    for r in rows
                )
        left = await admin.fetchval(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid WHERE r.rolname = $1",
            reader,
        )
        await pool.close()
    finally:
        print(f"grant service log: {workdir / 'grant.log'}")
        grant.terminate()
        grant.wait(timeout=30)
    lateness = [float(r["lateness_ms"]) for r in rows if r["state"] == "revoked"]
    causes = {c: sum(1 for r in rows if r["revoke_cause"] == c) for c in ("expired", "swept")}
    print(
        f"revoked {len(lateness)}/{n} ({causes['expired']} by their expiry message, {causes['swept']} swept);"
        f" memberships left in the target: {left}"
    )
    if lateness:
        print(
            f"lateness ms: p50 {statistics.median(lateness):.0f}  p99 {percentile(lateness, 99):.0f}"
            f"  max {max(lateness):.0f}"
        )
    print(f"grant service peak RSS: {rss:.0f} MiB")
    await admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
    await admin.execute(
        f"DO $$ BEGIN FOR i IN 1..{n} LOOP EXECUTE format('DROP ROLE %I', '{tag}_u' || i); END LOOP; END $$"
    )
    await admin.execute(f'DROP ROLE "{reader}"; DROP ROLE "{provisioner}"')
    await admin.close()
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=True)


if __name__ == "__main__":
    asyncio.run(main())
