"""Operations: the `migrate` command under concurrency, readiness gated on migrations, trace ids."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest

from lapse_shared import tracing
from lapse_shared.db.migrations import expected_versions, pending_versions
from tests.processes import ServiceProcesses


async def _migrate(service: str, database_url: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"lapse_{service}",
        "migrate",
        env={**os.environ, "LAPSE_DATABASE_URL": database_url, "LAPSE_LOG_JSON": "true"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def test_two_concurrent_migrate_runs_both_succeed_and_apply_each_file_once(database_url: str) -> None:
    # A database that does not exist yet: both runs race to create it, then to migrate it.
    fresh = database_url + "_fresh"
    try:
        results = await asyncio.gather(_migrate("grant", fresh), _migrate("grant", fresh))
        for code, output in results:
            assert code == 0, output
        conn = await asyncpg.connect(fresh)
        try:
            rows = await conn.fetch('SELECT version FROM "grant".schema_migrations ORDER BY version')
            versions = [r["version"] for r in rows]
            assert sorted(versions) == sorted(expected_versions("lapse_grant.migrations"))
            assert len(versions) == len(set(versions))
            assert await pending_versions(conn, "grant", "lapse_grant.migrations") == []
            # The outbox of the grant schema has the trace column of the shared migration.
            assert await conn.fetchval(
                "SELECT count(*) FROM information_schema.columns"
                " WHERE table_schema = 'grant' AND table_name = 'outbox' AND column_name = 'traceparent'"
            )
        finally:
            await conn.close()
        # A service without a database has nothing to migrate, and says so with success.
        code, output = await _migrate("policy", fresh)
        assert code == 0, output
        assert "nothing to migrate" in output, output
    finally:
        admin = await asyncpg.connect(database_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{fresh.rsplit("/", 1)[1]}" WITH (FORCE)')
        finally:
            await admin.close()


async def test_readyz_waits_for_the_migrate_job_when_migrations_do_not_run_on_start(
    tmp_path: Path, amqp_url: str, database_url: str
) -> None:
    token_file = tmp_path / "tokens.yaml"
    token_file.write_text("tokens: []\n")
    procs = ServiceProcesses(
        env={
            "LAPSE_TOKEN_FILE": str(token_file),
            "LAPSE_AMQP_URL": amqp_url,
            "LAPSE_DATABASE_URL": database_url,
            "LAPSE_MIGRATE_ON_START": "false",
        },
        log_dir=tmp_path,
    )
    try:
        procs.start("audit")
        procs.wait_healthy("audit", probe="/healthz")  # alive at once
        async with httpx.AsyncClient(timeout=5) as client:
            ready = await client.get(procs.url("audit") + "/readyz")
            assert ready.status_code == 503, ready.text
            assert ready.headers["content-type"].startswith("application/problem+json")
            body = ready.json()
            assert body["checks"]["broker"] == "ok"
            assert body["checks"]["database"] == "ok"
            assert body["checks"]["migrations"].startswith("pending: shared-0001_outbox_inbox.sql")
            assert "migrations" in body["detail"]

            code, output = await _migrate("audit", database_url)
            assert code == 0, output
            ready = await client.get(procs.url("audit") + "/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"broker": "ok", "database": "ok", "migrations": "ok"}
            # Every HTTP answer names its span; a caller's trace id is continued, not replaced.
            caller = tracing.new_traceparent()
            answer = await client.get(procs.url("audit") + "/healthz", headers={"traceparent": caller})
            assert tracing.trace_id(answer.headers["traceparent"]) == tracing.trace_id(caller)
            assert answer.headers["traceparent"] != caller
    finally:
        procs.stop_all()


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", True),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", False),
        ("garbage", False),
        (None, False),
    ],
)
def test_traceparent_is_continued_only_when_well_formed(value: str | None, valid: bool) -> None:
    child = tracing.continue_or_start(value)
    assert tracing.trace_id(child) is not None
    assert (tracing.trace_id(child) == tracing.trace_id(value)) is valid
