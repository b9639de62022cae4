"""The audit service on a real broker and database: batched ingest, the SIEM stream, checkpoints,
the query/export/report API, and verification that pinpoints a superuser's edit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from ocsf.v1_7_0.events import ApiActivity, UserAccess
from typer.testing import CliRunner

from lapse_audit.app import build
from lapse_audit.checkpoints import private_key_pem, public_key_b64
from lapse_audit.config import AuditSettings
from lapse_audit.handlers import AuditHandlers
from lapse_cli.main import app as cli
from lapse_shared.messaging.auth import OWNER_BY_PREFIX, security_event
from lapse_shared.messaging.broker_setup import Grants
from lapse_shared.messaging.topology import EVENTS
from services.audit.tests.events import T0, lifecycle
from tests.infra import Principals

pytestmark = pytest.mark.integration

AUDITOR, DEVELOPER = "auditor-token-0000000001", "developer-token-00000001"
STREAM = "lapse.siem.ocsf"


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
async def audit(
    tmp_path: Path, principals: Principals, database_url: str, signing_key: Ed25519PrivateKey
) -> AsyncIterator[FastAPI]:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        yaml.safe_dump(
            {
                "tokens": [
                    {"token": AUDITOR, "subject": "audrey", "groups": ["auditors"]},
                    {"token": DEVELOPER, "subject": "alice", "groups": ["developers"]},
                ]
            }
        )
    )
    key_file = tmp_path / "checkpoint.pem"
    key_file.write_text(private_key_pem(signing_key))
    settings = AuditSettings(
        amqp_url=principals.url("audit"),
        broker_users=principals.broker_users,
        database_url=database_url,
        token_file=tokens,
        checkpoint_key_file=key_file,
        checkpoint_interval_seconds=3600,
        outbox_poll_seconds=0.2,
    )
    app = build(settings)
    app.state.test_principals = principals
    async with app.router.lifespan_context(app):
        yield app


def handlers(app: FastAPI) -> AuditHandlers:
    h: AuditHandlers = app.state.handlers
    return h


async def publish(audit: FastAPI, bodies: list[bytes], routing: list[str]) -> None:
    """Publish each body, in order, as the broker user of the service that produces its type."""
    principals: Principals = audit.state.test_principals
    owners = [OWNER_BY_PREFIX[key.split(".", 1)[0]] for key in routing]
    async with contextlib.AsyncExitStack() as stack:
        exchanges = {}
        for service in set(owners):
            connection = await aio_pika.connect_robust(principals.url(service))
            await stack.enter_async_context(connection)
            channel = await connection.channel(publisher_confirms=True)
            exchanges[service] = await channel.get_exchange(EVENTS)
        for body, key, service in zip(bodies, routing, owners, strict=True):
            message = aio_pika.Message(
                body, message_id=str(uuid.uuid4()), user_id=principals.broker_users[service]
            )
            await exchanges[service].publish(message, routing_key=key)


def encode(events: list[dict[str, Any]]) -> tuple[list[bytes], list[str]]:
    return [json.dumps(e).encode() for e in events], [e["type"] for e in events]


async def chain_length(app: FastAPI, at_least: int, within: float = 15) -> int:
    pool = app.state.host.pool
    for _ in range(int(within / 0.1)):
        count: int = await pool.fetchval("SELECT count(*) FROM audit.log")
        if count >= at_least:
            return count
        await asyncio.sleep(0.1)
    raise AssertionError(f"chain has {count} entries, expected {at_least}")


async def read_stream(
    amqp_url: str, count: int, offset: Any = "first", within: float = 15, until: str | None = None
) -> list[dict[str, Any]]:
    """`count` records from `offset` on, or (with `until`) every record up to that event id."""
    connection = await aio_pika.connect_robust(amqp_url)
    records: list[dict[str, Any]] = []
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=100)
        queue = await channel.declare_queue(STREAM, passive=True)
        try:
            async with asyncio.timeout(within), queue.iterator(arguments={"x-stream-offset": offset}) as it:
                async for message in it:
                    # JSON lines: one OCSF record a line, several records a message.
                    records += [json.loads(line) for line in message.body.splitlines()]
                    await message.ack()
                    done = (
                        records and records[-1]["metadata"]["uid"] == until
                        if until
                        else len(records) >= count
                    )
                    if done:
                        break
        except TimeoutError:
            pass
    return records


async def test_events_are_chained_once_in_order_and_malformed_ones_are_dead_lettered(
    audit: FastAPI, amqp_url: str
) -> None:
    events = lifecycle() + lifecycle(requester="bob")
    bodies, keys = encode(events)
    # A redelivered duplicate, a non-JSON body and a contract violation among the good ones.
    bodies += [bodies[2], b"not json", b'{"type": "request.submitted", "data": {}}']
    keys += [keys[2], "request.submitted", "request.submitted"]
    await publish(audit, bodies, keys)
    await chain_length(audit, len(events))
    await asyncio.sleep(0.3)
    pool = audit.state.host.pool
    rows = await pool.fetch("SELECT event_id::text AS id FROM audit.log ORDER BY seq")
    assert [r["id"] for r in rows] == [e["id"] for e in events]
    assert (await handlers(audit).verify()).ok

    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        dlq = await channel.declare_queue("lapse.audit.events.dlq", passive=True)
        parked = []
        for _ in range(50):
            message = await dlq.get(fail=False)
            if message is not None:
                parked.append(message)
                await message.ack()
            if len(parked) == 2:
                break
            await asyncio.sleep(0.1)
    assert sorted(m.body for m in parked) == sorted(
        [b"not json", b'{"type": "request.submitted", "data": {}}']
    )
    assert all(m.headers["x-first-death-reason"] == "rejected" for m in parked)


async def test_every_entry_reaches_the_stream_as_valid_ocsf_and_replays_from_an_offset(
    audit: FastAPI, amqp_url: str
) -> None:
    events = lifecycle(reviewers=("carol",))
    await publish(audit, *encode(events))
    records = await read_stream(amqp_url, len(events))
    assert [r["metadata"]["uid"] for r in records] == [e["id"] for e in events]
    for record in records:
        model = {3005: UserAccess, 6003: ApiActivity}[record["class_uid"]]
        model.model_validate(record)
        assert record["metadata"]["correlation_uid"] == events[0]["correlation_id"]
    assert [r["class_uid"] for r in records] == [6003, 6003, 6003, 6003, 3005, 3005]
    assert [r["metadata"]["sequence"] for r in records] == list(range(1, len(events) + 1))

    later = lifecycle(requester="dave")
    await publish(audit, *encode(later))
    everything = await read_stream(amqp_url, len(events) + len(later))
    assert len(everything) == len(events) + len(later)
    # A SIEM that stored the offset after the first message resumes with only what came next
    # (each service publishes on its own connection, so a message may hold part of a lifecycle).
    replay = [r["metadata"]["uid"] for r in await read_stream(amqp_url, 0, offset=1, until=later[-1]["id"])]
    ids = [r["metadata"]["uid"] for r in everything]
    assert 0 < len(replay) < len(ids)
    assert replay == ids[len(ids) - len(replay) :]
    assert set(replay) >= {e["id"] for e in later}


async def test_checkpoints_are_signed_stored_and_published(
    audit: FastAPI, amqp_url: str, signing_key: Ed25519PrivateKey
) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        probe = await channel.declare_queue("checkpoint-probe", exclusive=True)
        await probe.bind(await channel.get_exchange(EVENTS), routing_key="audit.checkpoint")
        events = lifecycle()
        await publish(audit, *encode(events))
        await chain_length(audit, len(events))
        cp = await handlers(audit).checkpoint()
        assert cp is not None
        assert cp.seq == len(events)
        assert await handlers(audit).checkpoint() is None, "signed again without new entries"
        message = None
        for _ in range(50):
            message = await probe.get(fail=False)
            if message:
                break
            await asyncio.sleep(0.1)
        assert message is not None, "checkpoint not published"
        published = json.loads(message.body)
    assert published["data"]["head_hash"] == cp.head_hash
    assert published["data"]["public_key"] == public_key_b64(signing_key.public_key())
    await asyncio.sleep(0.5)  # our own checkpoint comes back on `#`: it must not be chained
    assert await chain_length(audit, len(events)) == len(events)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(audit), base_url="http://audit") as client:
        verify = (await client.get("/v1/audit/verify", headers={"Authorization": f"Bearer {AUDITOR}"})).json()
        key = (await client.get("/v1/audit/public-key")).json()
    assert verify["ok"] is True
    assert (verify["checkpoints"], verify["checkpoints_valid"]) == (1, 1)
    assert key["public_key"] == public_key_b64(signing_key.public_key())


async def test_query_filters_paginate_and_export_resumes_from_its_cursor(
    audit: FastAPI, amqp_url: str
) -> None:
    alice = lifecycle(requester="alice")
    bob = lifecycle(requester="bob", start=T0 + timedelta(hours=2))
    await publish(audit, *encode(alice + bob))
    await chain_length(audit, len(alice + bob))
    auth = {"Authorization": f"Bearer {AUDITOR}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(audit), base_url="http://audit") as client:

        async def ids(**params: Any) -> list[str]:
            response = await client.get("/v1/audit", params=params, headers=auth)
            assert response.status_code == 200, response.text
            return [e["event_id"] for e in response.json()["entries"]]

        assert await ids(subject="bob") == [e["id"] for e in bob], "a person's filter returns whole requests"
        assert await ids(request_id=alice[0]["subject"]) == [e["id"] for e in alice]
        assert await ids(correlation_id=bob[0]["correlation_id"]) == [e["id"] for e in bob]
        assert await ids(resource="orders-db", type="grant.*") == [e["id"] for e in alice[-2:] + bob[-2:]]
        window = {
            "from": (T0 + timedelta(hours=1)).isoformat(),
            "to": (T0 + timedelta(hours=2, minutes=10)).isoformat(),
        }
        assert await ids(**window) == [e["id"] for e in bob[:-1]]
        assert await ids(subject="nobody") == []

        first = (await client.get("/v1/audit", params={"limit": 5}, headers=auth)).json()
        assert first["next_cursor"] == "5"
        second = (await client.get("/v1/audit", params={"limit": 5, "cursor": 5}, headers=auth)).json()
        assert [e["seq"] for e in second["entries"]] == [6, 7, 8, 9, 10]

        forbidden = await client.get("/v1/audit", headers={"Authorization": f"Bearer {DEVELOPER}"})
        assert forbidden.status_code == 403

        # A requester (not an auditor) reads her own request's events, and nobody else's.
        developer = {"Authorization": f"Bearer {DEVELOPER}"}
        own = await client.get("/v1/audit", params={"request_id": alice[0]["subject"]}, headers=developer)
        assert own.status_code == 200, own.text
        assert [e["event_id"] for e in own.json()["entries"]] == [e["id"] for e in alice]
        others = await client.get("/v1/audit", params={"request_id": bob[0]["subject"]}, headers=developer)
        assert others.status_code == 403
        assert "their own request" in others.json()["detail"]
        unknown = await client.get("/v1/audit", params={"request_id": str(uuid.uuid4())}, headers=developer)
        assert unknown.status_code == 403
        by_person = await client.get("/v1/audit", params={"subject": "alice"}, headers=developer)
        assert by_person.status_code == 403

        await handlers(audit).checkpoint()
        lines = [
            json.loads(x) for x in (await client.get("/v1/audit/export", headers=auth)).text.splitlines()
        ]
        entries = [x for x in lines if x["kind"] == "entry"]
        assert [x["seq"] for x in entries] == list(range(1, 11))
        assert lines[-1]["kind"] == "checkpoint"
        assert lines[-1]["seq"] == 10
        resumed = (await client.get("/v1/audit/export", params={"since": 8}, headers=auth)).text.splitlines()
        assert [json.loads(x).get("cursor") for x in resumed][:2] == ["9", "10"]

        report = (
            await client.get(
                "/v1/audit/report",
                headers=auth,
                params={"from": T0.isoformat(), "to": (T0 + timedelta(days=1)).isoformat()},
            )
        ).json()
        assert [g["requester"] for g in report["grants"]] == ["alice", "bob"]
        assert report["grants"][0]["reason"] == "INC-1234: stuck orders"
        csv_text = (
            await client.get(
                "/v1/audit/report",
                headers=auth,
                params={"from": T0.isoformat(), "to": (T0 + timedelta(days=1)).isoformat(), "format": "csv"},
            )
        ).text
        assert csv_text.splitlines()[0].startswith("request_id,grant_id,requester")
        assert len(csv_text.splitlines()) == 3


async def test_cli_verify_pinpoints_a_superuser_edit_in_the_database_and_in_an_export(
    audit: FastAPI, amqp_url: str, database_url: str, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    events = lifecycle() + lifecycle(requester="bob")
    await publish(audit, *encode(events))
    await chain_length(audit, len(events))
    await handlers(audit).checkpoint()
    key = public_key_b64(signing_key.public_key())
    runner = CliRunner()
    ok = await asyncio.to_thread(
        runner.invoke, cli, ["audit", "verify", "--database-url", database_url, "-k", key]
    )
    assert ok.exit_code == 0, ok.output
    assert "verdict: OK" in ok.output

    async with httpx.AsyncClient(transport=httpx.ASGITransport(audit), base_url="http://audit") as client:
        exported = (await client.get("/v1/audit/export", headers={"Authorization": f"Bearer {AUDITOR}"})).text
    good_file = tmp_path / "export.jsonl"
    good_file.write_text(exported)

    conn = await asyncpg.connect(database_url)
    try:  # what a superuser could do: lift the trigger and rewrite history
        await conn.execute("ALTER TABLE audit.log DISABLE TRIGGER log_append_only")
        await conn.execute(
            "UPDATE audit.log SET entry = replace(entry, '\"bob\"', '\"mallory\"') WHERE seq = 8"
        )
    finally:
        await conn.close()
    broken = await asyncio.to_thread(
        runner.invoke, cli, ["audit", "verify", "--database-url", database_url, "-k", key]
    )
    assert broken.exit_code == 1
    assert "chain: BROKEN at seq 8: entry content does not match its hash (edited?)" in broken.output
    assert "checkpoint seq 10" in broken.output

    offline = await asyncio.to_thread(
        runner.invoke, cli, ["audit", "verify", "--file", str(good_file), "-k", key]
    )
    assert offline.exit_code == 0, offline.output
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text(exported.replace('"reason":"INC-1234: stuck orders"', '"reason":"routine"', 1))
    result = await asyncio.to_thread(
        runner.invoke, cli, ["audit", "verify", "--file", str(tampered), "-k", key]
    )
    assert result.exit_code == 1
    assert "chain: BROKEN at seq 1:" in result.output


async def test_cli_tail_follows_the_stream_from_an_offset(audit: FastAPI, amqp_url: str) -> None:
    events = lifecycle(requester="erin")
    await publish(audit, *encode(events))
    await read_stream(amqp_url, len(events))  # they are on the stream
    runner = CliRunner(env={"LAPSE_BROKER_USERS": json.dumps(audit.state.test_principals.broker_users)})
    args = ["audit", "tail", "--offset", "first", "--count", str(len(events)), "--amqp-url", amqp_url]
    raw = await asyncio.to_thread(runner.invoke, cli, [*args, "--json"])
    assert raw.exit_code == 0, raw.output
    lines = [json.loads(line) for line in raw.output.splitlines()]
    assert [x["record"]["metadata"]["uid"] for x in lines] == [e["id"] for e in events]
    assert {x["offset"] for x in lines} == {0}
    text = await asyncio.to_thread(runner.invoke, cli, args)
    assert text.exit_code == 0, text.output
    rows = [line.split("\t") for line in text.output.splitlines()]
    assert [r[4] for r in rows] == [e["type"] for e in events]
    assert rows[3][3] == "User Access Management: Assign Privileges"
    assert rows[3][5] == "erin"


async def test_a_deeply_nested_body_is_dead_lettered_alone_and_its_neighbours_are_chained(
    audit: FastAPI, amqp_url: str
) -> None:
    # Attack: JSON nested thousands deep made the publisher check's json.loads raise
    # RecursionError; the whole batch was nacked with it, again and again, until the delivery
    # limit dead-lettered the good events around it: one message erased real events from the trail.
    events = lifecycle()
    bodies, keys = encode(events)
    nested = b'{"type": "request.submitted", "data": {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    bodies = [bodies[0], nested, *bodies[1:]]
    keys = [keys[0], "request.submitted", *keys[1:]]
    await publish(audit, bodies, keys)
    await chain_length(audit, len(events))
    rows = await audit.state.host.pool.fetch("SELECT event_id::text AS id FROM audit.log ORDER BY seq")
    assert [r["id"] for r in rows] == [e["id"] for e in events]

    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        dlq = await channel.declare_queue("lapse.audit.events.dlq", passive=True)
        for _ in range(100):
            parked = await dlq.get(fail=False)
            if parked is not None:
                break
            await asyncio.sleep(0.1)
        assert parked is not None, "the nested message was not dead-lettered"
        await parked.ack()
        assert parked.body == nested
        assert parked.headers["x-first-death-reason"] == "rejected", "it looped until the delivery limit"


async def test_forged_reports_from_a_lapse_service_cannot_hide_who_forged_a_message(
    audit: FastAPI, amqp_url: str
) -> None:
    # Attack: a compromised notifier (any Lapse service user may publish security reports) sent
    # reports naming 70 made-up principals. The audit put each one into its bounded set of
    # principal labels; once the 64 were taken, the audit's own report of a real forgery named
    # its publisher `other`: the trail no longer said who forged the approval.
    principals: Principals = audit.state.test_principals
    connection = await aio_pika.connect_robust(principals.url("notifier"))
    async with connection:
        exchange = await (await connection.channel(publisher_confirms=True)).get_exchange(EVENTS)
        for n in range(70):
            report = security_event(
                service="notifier",
                queue="lapse.notifier.events",
                message_type="request.approved",
                principal=f"made-up-{n}",
                reason="forged report",
                message_id=None,
                suppressed=0,
            )
            body = report.model_dump_json().encode()
            await exchange.publish(
                aio_pika.Message(body, user_id=principals.broker_users["notifier"]), report.TYPE
            )
    await chain_length(audit, 1)

    mallory_url = principals.add_user("mallory", Grants(".*", ".*", ".*"))
    mallory = f"{principals.prefix}-mallory"
    forged = lifecycle()[2]
    connection = await aio_pika.connect_robust(mallory_url)
    async with connection:
        exchange = await (await connection.channel(publisher_confirms=True)).get_exchange(EVENTS)
        await exchange.publish(aio_pika.Message(json.dumps(forged).encode(), user_id=mallory), forged["type"])

    pool = audit.state.host.pool
    for _ in range(150):
        rows = await pool.fetch(
            "SELECT entry FROM audit.log WHERE type = 'security.message_rejected' AND published_by = $1",
            principals.broker_users["audit"],
        )
        if rows:
            break
        await asyncio.sleep(0.1)
    assert rows, "the audit did not report the forged event"
    [report_entry] = [json.loads(r["entry"]) for r in rows]
    assert report_entry["event"]["data"]["principal"] == mallory


async def test_a_record_forged_onto_the_siem_stream_is_told_apart_and_not_shown_by_tail(
    audit: FastAPI, amqp_url: str
) -> None:
    # Attack: a broker user with write on the SIEM exchange (what the attacker has)
    # published a made-up OCSF record onto the stream. The relay's own records carried no
    # user_id, so nothing told them apart: a SIEM, and `lapse audit tail`, took the forgery for
    # an audit record.
    principals: Principals = audit.state.test_principals
    mallory_url = principals.add_user("siem-forger", Grants(".*", ".*", ".*"))
    mallory = f"{principals.prefix}-siem-forger"
    events = lifecycle(requester="frank")
    await publish(audit, *encode(events[:2]))
    await read_stream(amqp_url, 2)
    fake = {"metadata": {"uid": "forged-record", "sequence": 0}, "type_name": "forged", "time": 0}
    connection = await aio_pika.connect_robust(mallory_url)
    async with connection:
        exchange = await (await connection.channel(publisher_confirms=True)).get_exchange("lapse.siem")
        await exchange.publish(aio_pika.Message(json.dumps(fake).encode(), user_id=mallory), "ocsf.3005")
    await publish(audit, *encode(events[2:]))
    await read_stream(amqp_url, len(events) + 1)

    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=100)
        queue = await channel.declare_queue(STREAM, passive=True)
        publishers = set()
        async with asyncio.timeout(15), queue.iterator(arguments={"x-stream-offset": "first"}) as it:
            async for message in it:
                publishers.add(message.user_id)
                await message.ack()
                if len(publishers) == 2:
                    break
    assert publishers == {principals.broker_users["audit"], mallory}, "the relay's records name no publisher"

    runner = CliRunner()
    args = [
        "audit",
        "tail",
        "--offset",
        "first",
        "--count",
        str(len(events)),
        "--json",
        "--amqp-url",
        amqp_url,
    ]
    env = {"LAPSE_BROKER_USERS": json.dumps(principals.broker_users)}
    out = await asyncio.to_thread(runner.invoke, cli, args, env=env)
    assert out.exit_code == 0, out.output
    uids = [json.loads(line)["record"]["metadata"]["uid"] for line in out.stdout.splitlines()]
    assert uids == [e["id"] for e in events], "tail showed the forged record"
