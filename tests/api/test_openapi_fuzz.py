"""Schemathesis against the running services: generated requests, from valid to malformed, for
every operation of every service's OpenAPI document. No response may be a 5xx, and every
response must match the document (status code, content type, headers, body schema)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.infra import Infra, run_sql
from tests.processes import ServiceProcesses
from tests.targets import new_target

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]

# One identity that may use every endpoint (reader, admin, auditor, monitor), so the fuzzer
# reaches past authorisation; unauthenticated calls are part of what it generates anyway.
TOKEN = "fuzz-everything-token-000"
GROUPS = ["developers", "dba", "lapse-admins", "security", "auditors", "monitoring"]


@pytest.fixture(scope="module")
def running(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcesses]:
    """The four services once for the module: each operation's examples share them."""
    tmp = tmp_path_factory.mktemp("fuzz")
    vhost, _ = infra.create_vhost()
    principals = infra.principals(vhost)
    principals.create()
    database, database_url = infra.create_database()
    target = new_target(database_url)
    run_sql(infra.admin_database_url, *target.statements_create())
    token_file = tmp / "tokens.yaml"
    token_file.write_text(
        yaml.safe_dump({"tokens": [{"token": TOKEN, "subject": "fuzzer", "groups": GROUPS}]})
    )
    procs = ServiceProcesses(
        env={
            "LAPSE_DATABASE_URL": database_url,
            "LAPSE_POLICY_DIR": str(target.write_policy_dir(tmp / "policies")),
            "LAPSE_TOKEN_FILE": str(token_file),
            "LAPSE_CREDENTIALS_KEY": "kD3pXq6f0bq1D2T9mYj6n8Zt0Hc8q6oV4m7yqB8u0nE=",
        },
        log_dir=tmp,
        principals=principals,
    )
    try:
        procs.start_all()
        yield procs
    finally:
        procs.stop_all()
        run_sql(infra.admin_database_url, *target.statements_drop())
        infra.drop_database(database)
        principals.delete()
        infra.delete_vhost(vhost)


# Bounded, so the suite stays minutes long; raise locally to fuzz harder (LAPSE_FUZZ_EXAMPLES=500).
EXAMPLES = int(os.environ.get("LAPSE_FUZZ_EXAMPLES", "25"))
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def fuzz(procs: ServiceProcesses, service: str) -> list[str]:
    """Every operation of one service's document, `EXAMPLES` generated cases each; the failures.

    Driven through schemathesis' Python API (its lazy pytest fixture integration does not run
    under this pytest version), one hypothesis run per operation. Every check runs but
    `positive_data_acceptance`: a schema-valid body may still name an unknown resource or
    leave the kill switch without a target, and those are refused (422) by design.
    """
    schema = schemathesis.openapi.from_url(procs.url(service) + "/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=HEADERS, excluded_checks=[positive_data_acceptance])

        try:
            check()
        except Exception as exc:  # noqa: BLE001 - collected, so one run reports every operation
            failures.append(f"{operation.label}: {exc}")
    assert operations > 0, f"no operations found in the {service} document"
    return failures


@pytest.mark.parametrize("service", ["request", "policy", "grant", "audit"])
def test_no_5xx_and_every_response_matches_the_document(running: ServiceProcesses, service: str) -> None:
    failures = fuzz(running, service)
    assert not failures, "\n\n".join(failures)


def test_the_documents_under_test_are_the_committed_ones(running: ServiceProcesses) -> None:
    """What is fuzzed here is what `docs/openapi/` publishes (the drift test compares the code)."""
    for service in ("request", "policy", "grant", "audit"):
        served = httpx.get(running.url(service) + "/openapi.json", timeout=10).json()
        committed = json.loads((ROOT / "docs" / "openapi" / f"{service}.json").read_text())
        assert served["paths"].keys() == committed["paths"].keys(), service
