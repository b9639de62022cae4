"""End-to-end set-up: a policy dir on a real target, a token file, the four services running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.processes import ServiceProcesses
from tests.targets import PgTarget

ALICE = "alice-e2e-token-0000000"
AUDITOR = "auditor-e2e-token-00000"
ADMIN = "admin-e2e-token-0000000"
MONITOR = "monitor-e2e-token-00000"
# A Fernet key for the test's ephemeral credentials only.
CREDENTIALS_KEY = "kD3pXq6f0bq1D2T9mYj6n8Zt0Hc8q6oV4m7yqB8u0nE="


@pytest.fixture
def services(
    tmp_path: Path, amqp_url: str, database_url: str, pg_target: PgTarget
) -> Iterator[ServiceProcesses]:
    policy_dir = pg_target.write_policy_dir(tmp_path / "policies")
    token_file = tmp_path / "tokens.yaml"
    token_file.write_text(
        yaml.safe_dump(
            {
                "tokens": [
                    {"token": ALICE, "subject": "alice", "groups": ["developers"]},
                    {"token": AUDITOR, "subject": "audrey", "groups": ["auditors"]},
                    {"token": ADMIN, "subject": "sam", "groups": ["lapse-admins"]},
                    {"token": MONITOR, "subject": "prometheus", "groups": ["monitoring"]},
                ]
            }
        )
    )
    procs = ServiceProcesses(
        env={
            "LAPSE_AMQP_URL": amqp_url,
            "LAPSE_DATABASE_URL": database_url,
            "LAPSE_POLICY_DIR": str(policy_dir),
            "LAPSE_TOKEN_FILE": str(token_file),
            "LAPSE_SWEEP_INTERVAL_SECONDS": "1",
            "LAPSE_SWEEP_GRACE_SECONDS": "3",
            "LAPSE_CREDENTIALS_KEY": CREDENTIALS_KEY,
        },
        log_dir=tmp_path,
    )
    try:
        procs.start_all()
        yield procs
    finally:
        procs.stop_all()


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
    tmp_path: Path, amqp_url: str, database_url: str, pg_target: PgTarget
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
                        "condition": "request.submitted_by == 'guest'",
                        "outcome": "approve",
                    },
                ]
            }
        )
    )
    token_file = tmp_path / "tokens.yaml"
    token_file.write_text(
        yaml.safe_dump(
            {
                "tokens": [
                    {"token": REVIEW_ALICE, "subject": "alice", "groups": ["developers"]},
                    {"token": REVIEW_BOB, "subject": "bob", "groups": ["dba"]},
                    {"token": REVIEW_DAVE, "subject": "dave", "groups": ["developers"]},
                    {"token": REVIEW_SAM, "subject": "sam", "groups": ["lapse-admins"]},
                ]
            }
        )
    )
    procs = ServiceProcesses(
        env={
            "LAPSE_AMQP_URL": amqp_url,
            "LAPSE_DATABASE_URL": database_url,
            "LAPSE_POLICY_DIR": str(policy_dir),
            "LAPSE_TOKEN_FILE": str(token_file),
            "LAPSE_SUBMIT_PRINCIPALS": '["guest"]',
        },
        log_dir=tmp_path,
    )
    try:
        procs.start_all()
        yield procs
    finally:
        procs.stop_all()
