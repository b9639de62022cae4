"""`lapse audit ...` commands: verify the chain (database or exported file), export, tail, report."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TextIO

import httpx
import typer

from lapse_audit.chain import StoredEntry, canonical
from lapse_audit.checkpoints import (
    Checkpoint,
    load_public_key,
    private_key_pem,
    public_key_b64,
    public_key_pem,
)
from lapse_audit.verification import Report, Verifier
from lapse_shared.messaging.auth import DEFAULT_BROKER_USERS

app = typer.Typer(help="Audit commands: verify, export, tail, report, keygen.", no_args_is_help=True)

UrlOption = Annotated[str, typer.Option(envvar="LAPSE_AUDIT_URL", help="Audit service base URL.")]
TokenOption = Annotated[str, typer.Option(envvar="LAPSE_TOKEN", help="Bearer token of an auditor.")]
DEFAULT_URL = "http://127.0.0.1:8083"
_DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


# ---------------------------------------------------------------- verify


def _read_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise _fail(f"{path}:{number}: not JSON ({exc.msg})") from exc


def _as_checkpoint(item: dict[str, Any]) -> Checkpoint:
    """A checkpoint line of an export, or an `audit.checkpoint` event as captured from the broker."""
    if item.get("type") == "audit.checkpoint" and isinstance(item.get("data"), dict):
        item = item["data"]
    return Checkpoint.from_dict(item)


def _external_checkpoints(paths: list[Path]) -> list[Checkpoint]:
    found: list[Checkpoint] = []
    for path in paths:
        for number, item in _read_lines(path):
            try:
                found.append(_as_checkpoint(item))
            except (KeyError, ValueError) as exc:
                raise _fail(f"{path}:{number}: not a checkpoint ({exc})") from exc
    return found


def _keys(public_keys: list[str], checkpoints: list[Checkpoint]) -> tuple[list[Any], bool]:
    """Trusted keys from --public-key (text, or @file); else those the checkpoints name (weak)."""
    if public_keys:
        keys = []
        for value in public_keys:
            text = Path(value[1:]).read_text() if value.startswith("@") else value
            try:
                keys.append(load_public_key(text))
            except ValueError as exc:
                raise _fail(f"--public-key {value[:20]}…: {exc}") from exc
        return keys, True
    return [load_public_key(k) for k in sorted({cp.public_key for cp in checkpoints})], False


def _verify_file(path: Path, extra: list[Checkpoint], public_keys: list[str]) -> Report:
    checkpoints = list(extra)
    entries: list[StoredEntry] = []
    for number, item in _read_lines(path):
        kind = item.get("kind")
        if kind == "checkpoint":
            checkpoints.append(_as_checkpoint(item))
        elif kind == "entry":
            body = item["entry"]
            entries.append(
                StoredEntry(
                    item["seq"], str(body.get("event_id")), canonical(body), item["prev_hash"], item["hash"]
                )
            )
        else:
            raise _fail(
                f"{path}:{number}: unknown line kind {kind!r}; expected an export of /v1/audit/export"
            )
    keys, trusted = _keys(public_keys, checkpoints)
    verifier = Verifier(checkpoints, keys)
    for entry in entries:
        if not verifier.feed(entry):
            break
    return _note_trust(verifier.report(), trusted)


async def _verify_database(database_url: str, extra: list[Checkpoint], public_keys: list[str]) -> Report:
    import asyncpg

    from lapse_audit import repository

    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            checkpoints = [*await repository.checkpoints(conn), *extra]
            keys, trusted = _keys(public_keys, checkpoints)
            verifier = Verifier(checkpoints, keys)
            async for entry in repository.all_entries(conn):
                if not verifier.feed(entry):
                    break
    finally:
        await conn.close()
    return _note_trust(verifier.report(), trusted)


_UNTRUSTED = "no --public-key given: checkpoints were checked against the keys they name themselves"


def _note_trust(report: Report, trusted: bool) -> Report:
    if not trusted and report.checkpoints_checked:
        typer.echo(
            f"warning: {_UNTRUSTED}, which proves nothing against whoever holds the database", err=True
        )
    return report


def _print_report(report: Report, out: TextIO) -> None:
    chain = report.chain
    if chain.ok:
        print(f"chain: ok, {chain.entries} entries, head {chain.head_hash}", file=out)
    else:
        print(f"chain: BROKEN at seq {chain.broken_at}: {chain.problem}", file=out)
        print(f"  {chain.entries} entries intact before it; last intact hash {chain.head_hash}", file=out)
    print(
        f"checkpoints: {report.checkpoints_checked} checked, {report.checkpoints_valid} valid"
        + (
            f", latest valid at seq {report.latest_valid_checkpoint}"
            if report.latest_valid_checkpoint
            else ""
        ),
        file=out,
    )
    for finding in report.findings:
        print(f"  checkpoint seq {finding.seq} (signed {finding.signed_at}): {finding.problem}", file=out)
    print("verdict: OK" if report.ok else "verdict: FAILED", file=out)


@app.command()
def verify(
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Verify an export (`lapse audit export`) offline.")
    ] = None,
    database_url: Annotated[
        str, typer.Option(envvar="LAPSE_DATABASE_URL", help="Verify the audit schema of this database.")
    ] = "postgresql://postgres@127.0.0.1:5432/lapse",
    public_key: Annotated[
        list[str] | None,
        typer.Option(
            "--public-key", "-k", help="Trusted Ed25519 public key (base64, PEM, or @file); repeatable."
        ),
    ] = None,
    checkpoints: Annotated[
        list[Path] | None,
        typer.Option("--checkpoints", "-c", help="Checkpoints kept outside Lapse (JSON lines); repeatable."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check the hash chain and the signed checkpoints; say exactly where it breaks. Exit 1 if it does."""
    extra = _external_checkpoints(checkpoints or [])
    if file is not None:
        if not file.exists():
            raise _fail(f"{file}: no such file")
        report = _verify_file(file, extra, public_key or [])
    else:
        try:
            report = asyncio.run(_verify_database(database_url, extra, public_key or []))
        except OSError as exc:
            raise _fail(f"cannot reach the database ({exc}); pass --database-url or verify a --file") from exc
    if as_json:
        chain = report.chain
        typer.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "entries": chain.entries,
                    "head_hash": chain.head_hash,
                    "broken_at": chain.broken_at,
                    "problem": chain.problem,
                    "checkpoints": report.checkpoints_checked,
                    "checkpoints_valid": report.checkpoints_valid,
                    "checkpoint_problems": [vars(f) for f in report.findings],
                },
                indent=2,
            )
        )
    else:
        _print_report(report, sys.stdout)
    if not report.ok:
        raise typer.Exit(1)


# ---------------------------------------------------------------- HTTP commands


def _get(url: str, token: str, path: str, params: dict[str, Any]) -> httpx.Response:
    try:
        response = httpx.get(
            f"{url}{path}", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=120
        )
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach the audit service at {url} ({exc})") from exc
    if response.status_code != 200:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise _fail(f"{response.status_code}: {detail}")
    return response


@app.command()
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write (JSON lines).")],
    since: Annotated[int, typer.Option(help="Cursor to resume after; 0 exports the whole chain.")] = 0,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
) -> None:
    """Export the chain and its checkpoints to a file (verify it later with `verify --file`)."""
    headers = {"Authorization": f"Bearer {token}"}
    count, cursor = 0, None
    try:
        with (
            httpx.stream(
                "GET",
                f"{url}/v1/audit/export",
                params={"since": since},
                headers=headers,
                timeout=httpx.Timeout(30.0, read=600.0),
            ) as response,
            output.open("w", encoding="utf-8") as out,
        ):
            if response.status_code != 200:
                response.read()
                raise _fail(f"{response.status_code}: {response.text}")
            for line in response.iter_lines():
                if line:
                    out.write(line + "\n")
                    item = json.loads(line)
                    if item.get("kind") == "entry":
                        count, cursor = count + 1, item["cursor"]
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach the audit service at {url} ({exc})") from exc
    typer.echo(f"exported {count} entries to {output}; resume with --since {cursor or since}")


@app.command()
def report(
    start: Annotated[
        datetime,
        typer.Option("--from", formats=_DATE_FORMATS, help="Period start (ISO 8601, UTC if no offset)."),
    ],
    end: Annotated[datetime, typer.Option("--to", formats=_DATE_FORMATS, help="Period end, exclusive.")],
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File (default: stdout).")] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
) -> None:
    """Every grant in a period: requester, resource, role, reason, ticket, approvers, times, lateness."""
    if fmt not in ("csv", "json"):
        raise _fail("--format must be csv or json")
    params = {"from": _aware(start).isoformat(), "to": _aware(end).isoformat(), "format": fmt}
    response = _get(url, token, "/v1/audit/report", params)
    text = response.text if fmt == "csv" else json.dumps(response.json(), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)


# ---------------------------------------------------------------- tail


def _offset(value: str) -> Any:
    """`first`, `last`, `next`, a numeric stream offset, or an ISO time (records since then)."""
    if value in ("first", "last", "next"):
        return value
    if value.isdigit():
        return int(value)
    try:
        return _aware(datetime.fromisoformat(value))
    except ValueError as exc:
        raise _fail(f"--offset {value!r}: use first, last, next, a number or an ISO 8601 time") from exc


async def _tail(
    amqp_url: str, stream: str, offset: Any, count: int | None, raw: bool, publisher: str
) -> None:
    import aio_pika

    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=200)  # streams need a prefetch over AMQP 0.9.1
        queue = await channel.declare_queue(stream, passive=True)
        seen = 0
        async with queue.iterator(arguments={"x-stream-offset": offset}) as messages:
            async for message in messages:
                header = (message.headers or {}).get("x-stream-offset")
                position = header.decode() if isinstance(header, bytes) else header
                if message.user_id != publisher:
                    # Anyone with write on the SIEM exchange can put a message on the stream; only
                    # the audit service's user (RabbitMQ checks user_id) publishes its records.
                    typer.echo(
                        f"offset {position}: skipped a message published by {message.user_id!r},"
                        f" not by the audit service ({publisher!r})",
                        err=True,
                    )
                    await message.ack()
                    continue
                for line in message.body.splitlines():  # JSON lines: several records a message
                    _print_record(position, json.loads(line), raw)
                    seen += 1
                await message.ack()
                if count is not None and seen >= count:
                    return


def _print_record(position: Any, record: dict[str, Any], raw: bool) -> None:
    if raw:
        print(json.dumps({"offset": position, "record": record}), flush=True)
        return
    meta = record.get("metadata", {})
    when = datetime.fromtimestamp(record.get("time", 0) / 1000).astimezone().isoformat(timespec="seconds")
    user = (record.get("user") or record.get("actor", {}).get("user") or {}).get("name", "-")
    print(
        f"{position}\t{meta.get('sequence')}\t{when}\t{record.get('type_name')}\t{meta.get('event_code')}"
        f"\t{user}\t{meta.get('correlation_uid')}",
        flush=True,
    )


@app.command()
def tail(
    offset: Annotated[str, typer.Option(help="first, last, next, a stream offset, or an ISO time.")] = "next",
    count: Annotated[int | None, typer.Option(help="Stop after this many records.")] = None,
    raw: Annotated[bool, typer.Option("--json", help="Print whole OCSF records as JSON lines.")] = False,
    amqp_url: Annotated[str, typer.Option(envvar="LAPSE_AMQP_URL", help="Broker URL.")] = (
        "amqp://guest:guest@127.0.0.1:5672/"
    ),
    stream: Annotated[
        str, typer.Option(envvar="LAPSE_SIEM_STREAM", help="Stream queue.")
    ] = "lapse.siem.ocsf",
    broker_users: Annotated[
        str,
        typer.Option(
            envvar="LAPSE_BROKER_USERS",
            help="The services' broker users (JSON); only records the audit's user published are shown.",
        ),
    ] = "{}",
) -> None:
    """Follow the SIEM stream live (OCSF records), from any offset."""
    try:
        publisher = json.loads(broker_users).get("audit") or DEFAULT_BROKER_USERS["audit"]
    except (ValueError, AttributeError) as exc:
        raise _fail(f"LAPSE_BROKER_USERS is not a JSON object of service to user ({exc})") from exc
    try:
        asyncio.run(_tail(amqp_url, stream, _offset(offset), count, raw, publisher))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise _fail(f"cannot reach the broker ({exc})") from exc


# ---------------------------------------------------------------- keygen


@app.command()
def keygen(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the private key (PEM).")],
) -> None:
    """Create an Ed25519 checkpoint signing key (for LAPSE_CHECKPOINT_KEY_FILE); print its public key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if output.exists():
        raise _fail(f"{output} exists; not overwriting a key")
    key = Ed25519PrivateKey.generate()
    output.touch(mode=0o600)
    output.write_text(private_key_pem(key))
    typer.echo(f"private key written to {output} (mode 600); keep it out of the database host's backups")
    typer.echo(f"public key (base64): {public_key_b64(key.public_key())}")
    typer.echo(public_key_pem(key.public_key()), nl=False)
