"""End-to-end set-up: a policy dir on a real target, a token file, the four services running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.infra import Principals
from tests.processes import ServiceProcesses
from tests.targets import PgTarget

ALICE = "alice-e2e-token-0000000"
AUDITOR = "auditor-e2e-token-00000"
ADMIN = "admin-e2e-token-0000000"
MONITOR = "monitor-e2e-token-00000"
# A Fernet key for the test's ephemeral credentials only.
CREDENTIALS_KEY = "kD3pXq6f0bq1D2T9mYj6n8Zt0Hc8q6oV4m7yqB8u0nE="


def running(
    tmp_path: Path,
    principals: Principals,
    database_url: str,
    policy_dir: Path,
    tokens: list[tuple[str, str, list[str]]],
    **env: str,
) -> Iterator[ServiceProcesses]:
    """The four services on this test's broker vhost and database, with these (token, subject,
    groups) and settings; stopped afterwards."""
    token_file = tmp_path / "tokens.yaml"
    token_file.write_text(
        yaml.safe_dump({"tokens": [{"token": t, "subject": s, "groups": g} for t, s, g in tokens]})
    )
    procs = ServiceProcesses(
        env={
            "LAPSE_DATABASE_URL": database_url,
            "LAPSE_POLICY_DIR": str(policy_dir),
            "LAPSE_TOKEN_FILE": str(token_file),
            **env,
        },
        log_dir=tmp_path,
        principals=principals,
    )
    try:
        procs.start_all()
        yield procs
    finally:
        procs.stop_all()


@pytest.fixture
def services(
    tmp_path: Path, principals: Principals, database_url: str, pg_target: PgTarget
) -> Iterator[ServiceProcesses]:
    yield from running(
        tmp_path,
        principals,
        database_url,
        pg_target.write_policy_dir(tmp_path / "policies"),
        [
            (ALICE, "alice", ["developers"]),
            (AUDITOR, "audrey", ["auditors"]),
            (ADMIN, "sam", ["lapse-admins"]),
            (MONITOR, "prometheus", ["monitoring"]),
        ],
        LAPSE_SWEEP_INTERVAL_SECONDS="1",
        LAPSE_SWEEP_GRACE_SECONDS="3",
        LAPSE_CREDENTIALS_KEY=CREDENTIALS_KEY,
    )


# The review workflow: a rule that needs one DBA's approval, and one that lets the broker's
# `guest` principal submit on anyone's behalf.
REVIEW_ALICE = "alice-review-token-00000"  # developers: asks
REVIEW_BOB = "bob-review-token-0000000"  # dba: approves
REVIEW_DAVE = "dave-review-token-000000"  # developers: may not approve
REVIEW_SAM = "sam-review-token-0000000"  # lapse-admins: the kill switch


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def workflow(
    tmp_path: Path, principals: Principals, database_url: str, pg_target: PgTarget
) -> Iterator[ServiceProcesses]:
    policy_dir = pg_target.write_policy_dir(tmp_path / "policies")
    (policy_dir / "rules.yaml").write_text(
        yaml.safe_dump(
            {
                "rules": [
                    {
                        "name": "developers-read-reviewed",
                        "groups": ["developers"],
                        "resources": ["test-db"],
                        "roles": [pg_target.reader],
                        "outcome": "review",
                        "review": {"stages": [{"name": "DBA", "approvals": 1, "groups": ["dba"]}]},
                    },
                    {
                        "name": "deploy-bot-on-behalf-of-developers",
                        "resources": ["test-db"],
                        "roles": [pg_target.reader],
                        # Delegated requests are granted only by a rule naming the submitter.
                        "submitted_by": ["guest"],
                        "outcome": "approve",
                    },
                ]
            }
        )
    )
    yield from running(
        tmp_path,
        principals,
        database_url,
        policy_dir,
        [
            (REVIEW_ALICE, "alice", ["developers"]),
            (REVIEW_BOB, "bob", ["dba"]),
            (REVIEW_DAVE, "dave", ["developers"]),
            (REVIEW_SAM, "sam", ["lapse-admins"]),
        ],
        LAPSE_SUBMIT_PRINCIPALS='["guest"]',
    )
