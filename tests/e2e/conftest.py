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
