"""Who may send the grant service commands: the setting, its default, and the check."""

from __future__ import annotations

import pytest

from lapse_grant.config import GrantSettings
from lapse_shared.messaging.publisher import amqp_username


@pytest.mark.parametrize(
    ("url", "user"),
    [
        ("amqp://lapse:secret@rabbit:5672/lapse", "lapse"),
        ("amqp://svc%40corp:pw@rabbit/", "svc@corp"),
        ("amqp://rabbit:5672/", "guest"),
    ],
)
def test_the_publishing_user_is_the_user_of_the_amqp_url(url: str, user: str) -> None:
    assert amqp_username(url) == user


def test_by_default_only_the_request_services_user_is_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAPSE_COMMAND_PRINCIPALS", raising=False)
    monkeypatch.delenv("LAPSE_BROKER_USERS", raising=False)
    settings = GrantSettings(amqp_url="amqp://lapse-grant:secret@rabbit:5672/lapse")
    assert settings.trusted_principals() == frozenset({"lapse-request"})


def test_principals_come_from_the_environment_as_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAPSE_COMMAND_PRINCIPALS", '["soc-automation"]')
    monkeypatch.setenv("LAPSE_BROKER_USERS", '{"request": "req"}')
    assert GrantSettings().trusted_principals() == frozenset({"soc-automation", "req"})
    assert GrantSettings().producers().allowed("grant.revoke") == frozenset({"soc-automation", "req"})
