"""The adversarial set-up: the five services on the real broker and database, each as its own
broker user, and an attacker: a broker user with write on every exchange and no topic limits
(what a stolen credential of a system with broad permissions gives)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lapse_shared.messaging.broker_setup import Grants
from tests.e2e.conftest import ALICE, MONITOR, running
from tests.infra import Principals
from tests.processes import ServiceProcesses
from tests.targets import PgTarget
from tests.webhook_receiver import WebhookReceiver

CAROL = "carol-security-token-000"  # contractors: her requests wait for a DBA's review


@dataclass
class Lapse:
    procs: ServiceProcesses
    principals: Principals
    attacker_url: str
    attacker: str
    database_url: str
    receiver: WebhookReceiver
    pg_target: PgTarget


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def lapse(
    tmp_path: Path,
    principals: Principals,
    database_url: str,
    pg_target: PgTarget,
    receiver: WebhookReceiver,
) -> Iterator[Lapse]:
    policy_dir = pg_target.write_policy_dir(tmp_path / "policies")
    rules = yaml.safe_load((policy_dir / "rules.yaml").read_text())
    rules["rules"].append(
        {
            "name": "contractors-read-reviewed",
            "groups": ["contractors"],
            "resources": ["test-db"],
            "roles": [pg_target.reader],
            "outcome": "review",
            "review": {"stages": [{"name": "DBA", "approvals": 1, "groups": ["dba"]}]},
        }
    )
    (policy_dir / "rules.yaml").write_text(yaml.safe_dump(rules))
    notifier = tmp_path / "notifier.yaml"
    notifier.write_text(
        yaml.safe_dump(
            {
                "public_url": "https://lapse.example.test",
                "webhooks": [{"name": "all", "url": f"{receiver.base_url}/all", "format": "json"}],
            }
        )
    )
    attacker_url = principals.add_user("attacker", Grants(".*", ".*", ".*"))
    for procs in running(
        tmp_path,
        principals,
        database_url,
        policy_dir,
        [
            (ALICE, "alice", ["developers"]),
            (CAROL, "carol", ["contractors"]),
            (MONITOR, "prometheus", ["monitoring"]),
        ],
        LAPSE_NOTIFIER_CONFIG=str(notifier),
        LAPSE_SWEEP_INTERVAL_SECONDS="1",
    ):
        procs.start("notifier")
        procs.wait_healthy("notifier")
        yield Lapse(
            procs,
            principals,
            attacker_url,
            f"{principals.prefix}-attacker",
            database_url,
            receiver,
            pg_target,
        )
