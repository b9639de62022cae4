"""Fixtures shared by every test folder: real broker and database, isolated per test."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.idp import FakeIdp, public_jwk, rsa_key, serve_idp
from tests.infra import Infra, Principals, run_sql, start_infra
from tests.targets import PgTarget, new_target


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    infra = start_infra()
    yield infra
    for container in infra.containers:
        container.stop()


@pytest.fixture
def amqp_url(infra: Infra) -> Iterator[str]:
    """A broker URL on a vhost of this test's own, deleted afterwards."""
    vhost, url = infra.create_vhost()
    yield url
    infra.delete_vhost(vhost)


@pytest.fixture
def principals(infra: Infra, amqp_url: str) -> Iterator[Principals]:
    """A broker user per Lapse service on this test's vhost, with the permissions `setup-broker`
    gives in a deployment; deleted afterwards. `amqp_url` stays the administrator (guest)."""
    vhost = unquote(urlsplit(amqp_url).path[1:])
    principals = infra.principals(vhost)
    principals.create()
    yield principals
    principals.delete()


@pytest.fixture
def database_url(infra: Infra) -> Iterator[str]:
    """A database of this test's own, dropped afterwards."""
    name, url = infra.create_database()
    yield url
    infra.drop_database(name)


@pytest.fixture
def pg_target(infra: Infra, database_url: str) -> Iterator[PgTarget]:
    """Roles for a real postgres-role target (provisioner, a role, two members), dropped after."""
    target = new_target(database_url)
    run_sql(infra.admin_database_url, *target.statements_create())
    yield target
    run_sql(infra.admin_database_url, *target.statements_drop())


@pytest.fixture(scope="session")
def key() -> rsa.RSAPrivateKey:
    """The identity provider's signing key (RSA), published in its JWKS as `k1`."""
    return rsa_key()


@pytest.fixture
def idp(key: rsa.RSAPrivateKey) -> Iterator[FakeIdp]:
    """A local OIDC identity provider (discovery + JWKS over HTTP) publishing `key`."""
    with serve_idp() as idp:
        idp.jwks.append(public_jwk(key, "k1"))
        yield idp
