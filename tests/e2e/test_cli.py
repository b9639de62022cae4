"""The `lapse` command against the four running services: a requester and an approver at work,
and the exit codes scripts rely on."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from lapse_cli.main import app
from tests.e2e.conftest import REVIEW_ALICE as ALICE
from tests.e2e.conftest import REVIEW_BOB as BOB
from tests.e2e.conftest import REVIEW_SAM as SAM
from tests.processes import ServiceProcesses
from tests.targets import PgTarget

pytestmark = pytest.mark.e2e
LAPSE = str(Path(sys.executable).parent / "lapse")


class Person:
    """One user of the CLI: their own config directory, optionally a token in the environment."""

    def __init__(self, home: Path, procs: ServiceProcesses, token: str | None = None) -> None:
        self.env = {
            "XDG_CONFIG_HOME": str(home),
            "LAPSE_CONFIG": "",
            "LAPSE_API_URL": procs.url("request"),
            "LAPSE_GRANT_URL": procs.url("grant"),
            "LAPSE_AUDIT_URL": procs.url("audit"),
            "LAPSE_TOKEN": token or "",
        }
        self.outputs: list[str] = []

    def __call__(self, *args: str, code: int = 0, stdin: str | None = None) -> Result:
        result = CliRunner().invoke(app, list(args), env=self.env, input=stdin)
        self.outputs += [result.stdout, result.stderr]
        assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


def until(check: Callable[[], Any], within: float = 20, what: str = "condition") -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def awaiting_review(person: Person, request_id: str) -> dict[str, Any]:
    view: dict[str, Any] = until(
        lambda: (v := person.json("show", request_id))["review"] and v, 20, f"{request_id} awaiting review"
    )
    return view


async def test_requester_waits_while_the_approver_approves_then_shows_and_releases(
    workflow: ServiceProcesses, pg_target: PgTarget, tmp_path: Path
) -> None:
    alice = Person(tmp_path / "alice", workflow)
    bob = Person(tmp_path / "bob", workflow, token=BOB)

    # A wrong token is refused and nothing is saved; the right one, from stdin, is checked and stored.
    alice("login", workflow.url("request"), "--token-stdin", stdin="not-a-token-at-all\n", code=3)
    config = tmp_path / "alice" / "lapse" / "config.json"
    assert not config.exists()
    env_url = alice.env.pop("LAPSE_API_URL")
    logged_in = alice(
        "login", env_url, "--grant-url", workflow.url("grant"), "--token-stdin", stdin=ALICE + "\n"
    )
    assert "as alice (groups: developers)" in logged_in.stdout
    assert config.stat().st_mode & 0o777 == 0o600
    assert json.loads(config.read_text())["token"] == ALICE
    assert "alice" in alice("whoami").stdout

    # alice waits (a real `lapse` process) while bob reviews.
    progress = tmp_path / "wait.stderr"
    # A real process, so the wait runs while this test plays bob; it is only polled, never awaited.
    waiting = subprocess.Popen(  # noqa: ASYNC220
        [
            LAPSE,
            "request",
            "test-db",
            pg_target.reader,
            "--for",
            "10m",
            "--reason",
            "INC-7: cli",
            "--wait",
            "--timeout",
            "60s",
        ],
        env={"PATH": "/usr/bin:/bin", **{k: v for k, v in alice.env.items() if v}},
        stdout=subprocess.PIPE,
        stderr=progress.open("w"),
        text=True,
    )
    try:
        mine = until(lambda: alice.json("ls")["items"], 15, "alice's request")
        request_id = mine[0]["id"]
        awaiting_review(alice, request_id)
        # It shows the review it waits for (one line per change when not on a terminal).
        until(lambda: "awaiting review: stage 1/1" in progress.read_text(), 10, "the wait to show the review")
        assert waiting.poll() is None, "still waiting for the review"

        own = alice("approve", request_id, code=3)
        assert "error: Forbidden:" in own.stderr
        assert "your own request" in own.stderr
        queue = bob("ls", "--review")
        assert request_id in queue.stdout
        assert "awaiting review: stage 1/1" in queue.stdout
        assert request_id in bob("approve", request_id, "--comment", "ok for INC-7").stdout

        stdout, _ = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
    assert waiting.returncode == 0, (stdout, progress.read_text())
    assert "active: alice has" in stdout
    assert "(in 9m" in stdout.split("lapses", 1)[1]

    grants = alice("grants")
    assert request_id in grants.stdout
    active = alice.json("grants")["items"]
    assert [g["id"] for g in active] == [request_id]
    assert active[0]["grant"]["id"] in grants.stdout
    assert alice.json("show", request_id)["approvers"] == ["bob"]

    # The timeline comes from the audit trail, which alice may read for her own request.
    shown = until(lambda: (r := alice("show", request_id)).stdout.count("grant.activated") and r, 20, "audit")
    assert "(audit trail)" in shown.stdout
    for expected in ("request.submitted", "policy.decided", "bob: approve", "decision   review"):
        assert expected in shown.stdout, shown.stdout
    assert "1. DBA: 1/1 from dba (approved by bob) done" in shown.stdout

    released = alice("release", request_id, "--reason", "done", "--wait")
    assert f"released {request_id}" in released.stdout
    assert not await pg_target.has_membership("alice")
    assert alice.json("show", request_id)["state"] == "ended"
    assert alice("grants").stdout.strip() == "no active grants"

    alice("show", str(uuid.uuid4()), code=4)
    alice("logout")
    alice("ls", code=3)
    assert all(ALICE not in text for text in [*alice.outputs, stdout, progress.read_text()]), (
        "the token was printed"
    )


async def test_deny_cancel_timeout_and_kill_switch_exit_codes(
    workflow: ServiceProcesses, pg_target: PgTarget, tmp_path: Path
) -> None:
    alice = Person(tmp_path / "alice", workflow, token=ALICE)
    bob = Person(tmp_path / "bob", workflow, token=BOB)
    sam = Person(tmp_path / "sam", workflow, token=SAM)
    ask = ("request", "test-db", pg_target.reader, "--for", "10m", "--reason", "INC-8: cli")

    denied = alice.json(*ask)["id"]
    alice("wait", denied, "--timeout", "1s", code=7)
    awaiting_review(alice, denied)
    bob("deny", denied, code=2)  # a denial needs a comment
    bob("deny", denied, "--comment", "use the replica")
    assert "denied by bob: use the replica" in alice("wait", denied, code=5).stdout
    assert "Conflict" in bob("approve", denied, code=8).stderr

    cancelled = alice.json(*ask)["id"]
    assert f"cancelled {cancelled}" in alice("cancel", cancelled).stdout
    assert "cancelled" in alice("cancel", cancelled, code=8).stderr
    alice("wait", cancelled, code=6)

    granted = alice.json(*ask)["id"]
    awaiting_review(alice, granted)
    bob("approve", granted)
    grant_id = alice.json("wait", granted)["grant"]["id"]
    assert "needs membership" in alice("revoke", "--grant", grant_id, "--reason", "mine", code=3).stderr
    sam("revoke", "--reason", "no target", code=2)
    report = sam("revoke", "--grant", grant_id, "--reason", "laptop stolen")
    assert "revoked 1 grant(s)" in report.stdout
    assert grant_id in report.stdout
    until(lambda: alice.json("show", granted)["state"] == "ended", 20, "the revocation to end the request")
    assert not await pg_target.has_membership("alice")

    bad = alice("request", "nope-db", "r", "--for", "10m", "--reason", "x", code=2)
    assert "unknown resource 'nope-db'" in bad.stderr
    alice("request", "test-db", "r", "--for", "soon", "--reason", "x", code=2)
