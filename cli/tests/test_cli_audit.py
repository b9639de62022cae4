"""`lapse audit verify --file` and `keygen`, offline: no broker, no database."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from lapse_audit.chain import GENESIS, canonical, entry_hash
from lapse_audit.checkpoints import CheckpointSigner, public_key_b64
from lapse_cli.main import app

runner = CliRunner()
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def export_lines(
    count: int, signer: CheckpointSigner, checkpoint_at: tuple[int, ...]
) -> list[dict[str, Any]]:
    """What GET /v1/audit/export writes: entries, each followed by the checkpoints at its seq."""
    lines: list[dict[str, Any]] = []
    prev = GENESIS
    for seq in range(1, count + 1):
        body = {
            "seq": seq,
            "event_id": f"id-{seq}",
            "recorded_at": NOW.isoformat(),
            "event": {"id": f"id-{seq}", "type": "request.submitted", "data": {"reason": f"INC-{seq}"}},
        }
        digest = entry_hash(prev, canonical(body))
        lines.append(
            {
                "kind": "entry",
                "cursor": str(seq),
                "seq": seq,
                "prev_hash": prev,
                "hash": digest,
                "entry": body,
            }
        )
        if seq in checkpoint_at:
            lines.append({"kind": "checkpoint", **signer.sign(seq, digest, NOW).as_dict()})
        prev = digest
    return lines


def write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_an_intact_export_verifies_offline_against_the_trusted_key(tmp_path: Path) -> None:
    signer = CheckpointSigner(Ed25519PrivateKey.generate())
    path = write(tmp_path / "export.jsonl", export_lines(6, signer, (3, 6)))
    result = runner.invoke(
        app, ["audit", "verify", "--file", str(path), "-k", public_key_b64(signer.public_key)]
    )
    assert result.exit_code == 0, result.output
    assert "chain: ok, 6 entries" in result.output
    assert "checkpoints: 2 checked, 2 valid, latest valid at seq 6" in result.output


def test_an_edited_export_is_pinpointed_with_exit_code_one(tmp_path: Path) -> None:
    signer = CheckpointSigner(Ed25519PrivateKey.generate())
    lines = export_lines(6, signer, (6,))
    lines[3]["entry"]["event"]["data"]["reason"] = (
        "nothing to see"  # entry seq 4 (line 3: no checkpoint before)
    )
    path = write(tmp_path / "export.jsonl", lines)
    result = runner.invoke(
        app, ["audit", "verify", "--file", str(path), "-k", public_key_b64(signer.public_key)]
    )
    assert result.exit_code == 1
    assert "chain: BROKEN at seq 4: entry content does not match its hash (edited?)" in result.output
    assert "3 entries intact before it" in result.output
    assert "verdict: FAILED" in result.output


def test_a_consistent_rewrite_is_caught_by_a_checkpoint_kept_outside(tmp_path: Path) -> None:
    signer = CheckpointSigner(Ed25519PrivateKey.generate())
    original = export_lines(4, signer, (4,))
    outside = write(tmp_path / "kept.jsonl", [{"type": "audit.checkpoint", "data": original[-1]}])
    forged = [line for line in export_lines(4, CheckpointSigner(Ed25519PrivateKey.generate()), ())]
    forged[0]["entry"]["event"]["data"]["reason"] = "forged"
    # Recompute the whole chain, as someone rewriting the table would.
    prev = GENESIS
    for line in forged:
        line["prev_hash"], line["hash"] = prev, entry_hash(prev, canonical(line["entry"]))
        prev = line["hash"]
    path = write(tmp_path / "forged.jsonl", forged)
    key = public_key_b64(signer.public_key)
    result = runner.invoke(app, ["audit", "verify", "--file", str(path), "-c", str(outside), "-k", key])
    assert result.exit_code == 1
    assert "chain: ok" in result.output
    assert "checkpoint seq 4" in result.output
    assert "rewritten" in result.output


def test_without_a_trusted_key_verify_warns_that_the_checkpoints_vouch_for_themselves(tmp_path: Path) -> None:
    signer = CheckpointSigner(Ed25519PrivateKey.generate())
    path = write(tmp_path / "export.jsonl", export_lines(2, signer, (2,)))
    result = runner.invoke(app, ["audit", "verify", "--file", str(path)])
    assert result.exit_code == 0
    assert "no --public-key given" in result.output


def test_a_file_that_is_not_an_export_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"hello": 1}\n')
    result = runner.invoke(app, ["audit", "verify", "--file", str(path)])
    assert result.exit_code == 2
    assert "unknown line kind" in result.output


def test_keygen_writes_a_private_key_only_its_owner_can_read(tmp_path: Path) -> None:
    key = tmp_path / "checkpoint.pem"
    result = runner.invoke(app, ["audit", "keygen", "--output", str(key)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "BEGIN PRIVATE KEY" in key.read_text()
    assert "PRIVATE" not in result.output, "the private key must never be printed"
    assert "public key (base64)" in result.output
    again = runner.invoke(app, ["audit", "keygen", "--output", str(key)])
    assert again.exit_code == 2


def test_report_asks_the_api_for_the_period_in_utc_and_writes_its_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_get(url: str, **kwargs: Any) -> httpx.Response:
        seen.update(url=url, **kwargs)
        return httpx.Response(200, text="request_id,grant_id\nr1,g1\n", request=httpx.Request("GET", url))

    monkeypatch.setattr(httpx, "get", fake_get)
    out = tmp_path / "report.csv"
    result = runner.invoke(
        app,
        [
            "audit",
            "report",
            "--from",
            "2026-11-01",
            "--to",
            "2026-12-01T00:00:00+00:00",
            "-o",
            str(out),
            "--url",
            "http://audit.test",
            "--token",
            "t0k",
        ],
    )
    assert result.exit_code == 0, result.output
    assert seen["url"] == "http://audit.test/v1/audit/report"
    assert seen["params"] == {
        "from": "2026-11-01T00:00:00+00:00",
        "to": "2026-12-01T00:00:00+00:00",
        "format": "csv",
    }
    assert seen["headers"] == {"Authorization": "Bearer t0k"}
    assert out.read_text() == "request_id,grant_id\nr1,g1\n"


def test_report_shows_the_api_problem_when_the_token_is_not_an_auditor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fake_get(url: str, **kwargs: Any) -> httpx.Response:
        return httpx.Response(
            403, json={"detail": "Reading the audit trail needs membership in an auditor group."}
        )

    monkeypatch.setattr(httpx, "get", fake_get)
    result = runner.invoke(app, ["audit", "report", "--from", "2026-11-01", "--to", "2026-12-01"])
    assert result.exit_code == 2
    assert "403: Reading the audit trail needs membership in an auditor group." in result.output
