"""Unit tests of the grant service's own check of an approval and of the providers' name rules."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from lapse_grant.approval_check import Limits, extension_limit_problem, grant_problem
from lapse_grant.domain import Grant
from lapse_grant.providers import Access, access_problem, generic_subject_problem
from lapse_grant.providers.postgres_login import PostgresLoginProvider
from lapse_grant.providers.postgres_role import PostgresRoleProvider
from lapse_grant.providers.rabbitmq import RabbitMQPermissionsProvider
from lapse_grant.providers.webhook import WebhookProvider
from lapse_shared.catalogue import Catalogue, Resource
from lapse_shared.events import RequestApprovedData

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
CATALOGUE = Catalogue(
    [
        Resource(
            name="orders-db",
            provider="postgres-role",
            target={"dsn": "postgresql://p@db/orders"},
            roles=["orders_read"],
            max_duration=timedelta(hours=1),
        )
    ]
)


def grant(
    *,
    resource: str = "orders-db",
    role: str = "orders_read",
    seconds: int = 600,
    approved_at: datetime = NOW,
    start_at: datetime | None = None,
    provider: str = "postgres-role",
) -> Grant:
    data = RequestApprovedData(
        request_id=uuid.uuid4(),
        requester="alice",
        resource=resource,
        role=role,
        duration_seconds=seconds,
        approved_at=approved_at,
        rule="r",
        policy_version="v",
        start_at=start_at,
    )
    return Grant.for_approval(data, provider, {}, NOW, timedelta(minutes=5))


def problem(g: Grant, limits: Limits | None = None) -> str | None:
    return grant_problem(g, CATALOGUE, NOW, limits or Limits())


def test_an_approval_within_the_catalogue_passes() -> None:
    assert problem(grant()) is None
    assert problem(grant(seconds=3600, start_at=NOW + timedelta(days=29))) is None


@pytest.mark.parametrize(
    ("approval", "expected"),
    [
        (grant(resource="payroll-db"), "resource 'payroll-db' is not in the catalogue"),
        (grant(role="orders_admin"), "does not offer role 'orders_admin'"),
        (grant(role="pg_read_all_settings"), "predefined role"),
        (grant(role="pg_execute_server_program"), "predefined role"),
        (grant(role="postgres"), "administrator role"),
        (grant(seconds=365 * 86400), "over the 3600s maximum"),
        (grant(seconds=3601), "over the 3600s maximum"),
        (grant(start_at=NOW + timedelta(days=31)), "LAPSE_MAX_SCHEDULE_AHEAD"),
        # A future approval time would stretch an unscheduled window past its duration.
        (grant(approved_at=NOW + timedelta(days=300)), "in the future"),
        (grant(provider="webhook"), "now served by 'postgres-role'"),
    ],
)
def test_an_approval_outside_the_catalogue_or_the_limits_is_refused_saying_why(
    approval: Grant, expected: str
) -> None:
    assert expected in (problem(approval) or "")


def test_the_schedule_limit_is_this_services_own_setting() -> None:
    g = grant(start_at=NOW + timedelta(days=3))
    assert problem(g, Limits(max_schedule_ahead=timedelta(days=2))) is not None
    assert problem(g, Limits(max_schedule_ahead=timedelta(days=4))) is None


def test_a_window_stretched_beyond_its_duration_is_refused() -> None:
    g = grant(seconds=600)
    assert g.expires_at is not None
    g.expires_at += timedelta(hours=2)  # a row changed behind the service's back
    assert "window of 7800s" in (problem(g) or "")


def test_an_extension_is_checked_against_the_current_catalogue() -> None:
    def check(resource: str = "orders-db", seconds: int = 600, approved_at: datetime = NOW) -> str | None:
        return extension_limit_problem(CATALOGUE, resource, "orders_read", approved_at, seconds, NOW)

    assert check() is None
    assert "over the 3600s maximum" in (check(seconds=7200) or "")
    assert "not in the catalogue" in (check(resource="other") or "")
    assert "in the future" in (check(approved_at=NOW + timedelta(hours=5)) or "")


# -- each provider states its own rules for names -------------------------------------------------

ROLE_TARGET = {"dsn": "postgresql://p@db/orders", "member_format": "u_{subject}"}


def access(subject: str, role: str = "orders_read") -> Access:
    return Access(uuid.uuid4(), subject, role, NOW)


def test_a_postgres_member_name_over_63_bytes_is_refused_not_truncated() -> None:
    provider = PostgresRoleProvider()
    assert access_problem(provider, ROLE_TARGET, access("a" * 61)) is None  # u_ + 61 = 63 bytes
    found = access_problem(provider, ROLE_TARGET, access("a" * 62)) or ""
    assert "64 bytes" in found
    assert "truncated" in found
    # Bytes, not characters: u_ and 31 two-byte characters are 64 bytes.
    assert access_problem(provider, ROLE_TARGET, access("é" * 31)) is not None


@pytest.mark.parametrize("subject", ["", "a\x00b"])
def test_a_postgres_member_name_must_be_a_name(subject: str) -> None:
    provider = PostgresRoleProvider()
    assert access_problem(provider, {"dsn": "postgresql://p@db/x"}, access(subject)) is not None


@pytest.mark.parametrize("role", ["pg_read_all_settings", "PG_MONITOR", "x" * 64])
def test_postgres_providers_refuse_predefined_or_overlong_roles(role: str) -> None:
    for provider in (PostgresRoleProvider(), PostgresLoginProvider()):
        target = {"dsn": "postgresql://p@db/x"}
        assert access_problem(provider, target, access("alice", role)) is not None  # type: ignore[arg-type]


def test_a_login_subject_only_needs_to_be_printable_and_bounded() -> None:
    provider = PostgresLoginProvider()
    target = {"dsn": "postgresql://p@db/x"}
    assert access_problem(provider, target, access("alice.o'neil@example.com")) is None
    assert access_problem(provider, target, access("a\nb")) is not None
    assert access_problem(provider, target, access("a" * 300)) is not None


def test_a_rabbitmq_user_name_is_bounded_by_the_broker() -> None:
    provider = RabbitMQPermissionsProvider()
    target = {"username": "admin", "password": "x", "vhost": "/", "permissions": {"r": {}}}
    assert access_problem(provider, target, access("alice", "r")) is None
    assert access_problem(provider, target, access("a" * 256, "r")) is not None


def test_a_webhook_subject_is_bounded_and_printable() -> None:
    provider = WebhookProvider()
    target = {"url": "http://x", "secret": "s" * 16}
    assert access_problem(provider, target, access("alice")) is None
    assert access_problem(provider, target, access("a\u2028b")) is not None
    assert generic_subject_problem("a" * 257) is not None
