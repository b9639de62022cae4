"""Unit tests of postgres-role target validation: bad settings are permanent ProviderErrors."""

from __future__ import annotations

from typing import Any

import pytest

from lapse_grant.providers import ProviderError
from lapse_grant.providers.postgres_role import PostgresRoleProvider, PostgresRoleTarget

DSN = "postgresql://provisioner:hunter2-secret@db.internal:5432/orders"


def test_good_settings_are_accepted_with_the_default_member_format() -> None:
    settings = PostgresRoleProvider._settings({"dsn": DSN})
    assert settings == PostgresRoleTarget(dsn=DSN, member_format="{subject}")


def test_member_format_maps_the_subject_to_a_database_role() -> None:
    provider = PostgresRoleProvider()
    assert provider._member({"dsn": DSN, "member_format": "u_{subject}"}, "alice") == "u_alice"


@pytest.mark.parametrize(
    ("target", "field"),
    [
        ({}, "dsn"),
        ({"member_format": "{subject}"}, "dsn"),
        ({"dsn": 5432}, "dsn"),
        ({"dsn": DSN, "member_format": ["{subject}"]}, "member_format"),
        ({"dsn": DSN, "host": "db.internal"}, "host"),
    ],
)
def test_bad_target_settings_are_a_permanent_provider_error(target: dict[str, Any], field: str) -> None:
    with pytest.raises(ProviderError, match="invalid postgres-role target settings") as caught:
        PostgresRoleProvider._settings(target)
    assert caught.value.transient is False
    assert field in str(caught.value)


def test_settings_error_does_not_echo_secret_values() -> None:
    target = {"dsn": DSN, "password": "hunter2-secret"}
    with pytest.raises(ProviderError) as caught:
        PostgresRoleProvider._settings(target)
    assert caught.value.transient is False
    assert "password" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_settings_error_for_a_wrong_type_does_not_echo_the_value() -> None:
    with pytest.raises(ProviderError) as caught:
        PostgresRoleProvider._settings({"dsn": ["postgresql://u:hunter2-secret@h/db"]})
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("member_format", ["{user}", "{0}", "{subject"])
def test_member_format_with_a_bad_placeholder_is_a_permanent_provider_error(member_format: str) -> None:
    # A catalogue typo must end the grant as failed (ProviderError), not escape as a
    # KeyError/IndexError/ValueError that makes the approval message poison.
    provider = PostgresRoleProvider()
    with pytest.raises(ProviderError) as caught:
        provider._member({"dsn": DSN, "member_format": member_format}, "alice")
    assert caught.value.transient is False
