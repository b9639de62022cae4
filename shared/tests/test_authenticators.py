"""build_authenticator: which authenticator the settings give, and the refusal to start with none."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from lapse_shared.http.authenticators import JwtOrStaticAuthenticator, build_authenticator, looks_like_jwt
from lapse_shared.http.identity import AuthenticationFailed, StaticTokenAuthenticator
from lapse_shared.http.oidc import OidcAuthenticator
from lapse_shared.settings import ServiceSettings
from tests.idp import AUDIENCE, FakeIdp

STATIC = "alice-static-token-0123"


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump({"tokens": [{"token": STATIC, "subject": "static-alice"}]}))
    return path


@pytest.fixture(autouse=True)
def _no_lapse_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make` exports LAPSE_TOKEN_FILE; these tests say exactly what is configured."""
    monkeypatch.delenv("LAPSE_TOKEN_FILE", raising=False)
    monkeypatch.delenv("LAPSE_OIDC_ISSUER", raising=False)


def test_neither_oidc_nor_static_tokens_is_a_startup_error() -> None:
    with pytest.raises(SystemExit, match=r"LAPSE_OIDC_ISSUER.*LAPSE_TOKEN_FILE"):
        build_authenticator(ServiceSettings())


def test_an_issuer_without_an_audience_is_a_startup_error() -> None:
    with pytest.raises(SystemExit, match="LAPSE_OIDC_AUDIENCE"):
        build_authenticator(ServiceSettings(oidc_issuer="https://idp.example"))


def test_static_tokens_alone(token_file: Path) -> None:
    assert isinstance(build_authenticator(ServiceSettings(token_file=token_file)), StaticTokenAuthenticator)


def test_oidc_alone() -> None:
    settings = ServiceSettings(oidc_issuer="https://idp.example", oidc_audience=AUDIENCE)
    assert isinstance(build_authenticator(settings), OidcAuthenticator)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, token_file: Path) -> None:
    monkeypatch.setenv("LAPSE_OIDC_ISSUER", "https://login.example/realms/acme")
    monkeypatch.setenv("LAPSE_OIDC_AUDIENCE", "lapse")
    monkeypatch.setenv("LAPSE_OIDC_GROUPS_CLAIM", "realm_access.roles")
    monkeypatch.setenv("LAPSE_OIDC_ATTRIBUTE_CLAIMS", '{"department": "dept"}')
    monkeypatch.setenv("LAPSE_OIDC_LEEWAY_SECONDS", "5")
    monkeypatch.setenv("LAPSE_TOKEN_FILE", str(token_file))
    authenticator = build_authenticator(ServiceSettings())
    assert isinstance(authenticator, JwtOrStaticAuthenticator)
    assert isinstance(authenticator.oidc, OidcAuthenticator)
    config = authenticator.oidc.config
    assert (config.issuer, config.audience, config.groups_claim) == (
        "https://login.example/realms/acme",
        "lapse",
        "realm_access.roles",
    )
    assert config.attribute_claims == {"department": "dept"}
    assert config.leeway_seconds == 5


async def test_with_both_a_jwt_goes_to_oidc_and_anything_else_to_the_file(
    idp: FakeIdp, key: rsa.RSAPrivateKey, token_file: Path
) -> None:
    settings = ServiceSettings(oidc_issuer=idp.issuer, oidc_audience=AUDIENCE, token_file=token_file)
    authenticator = build_authenticator(settings)
    assert (await authenticator.authenticate(idp.mint(key, "k1"))).subject == "alice"
    assert (await authenticator.authenticate(STATIC)).subject == "static-alice"
    with pytest.raises(AuthenticationFailed) as caught:
        await authenticator.authenticate(idp.mint(key, "k1", aud="elsewhere"))
    assert caught.value.reason == "wrong-audience"
    with pytest.raises(AuthenticationFailed) as caught:
        await authenticator.authenticate("some-other-static-token")
    assert caught.value.reason == "unknown-token"


async def test_with_oidc_alone_a_static_token_is_malformed(idp: FakeIdp) -> None:
    authenticator = build_authenticator(ServiceSettings(oidc_issuer=idp.issuer, oidc_audience=AUDIENCE))
    with pytest.raises(AuthenticationFailed) as caught:
        await authenticator.authenticate(STATIC)
    assert caught.value.reason == "malformed-token"
    assert idp.requests == {}  # refused before any key was needed


async def test_with_static_tokens_alone_a_jwt_is_unknown(
    idp: FakeIdp, key: rsa.RSAPrivateKey, token_file: Path
) -> None:
    authenticator = build_authenticator(ServiceSettings(token_file=token_file))
    with pytest.raises(AuthenticationFailed) as caught:
        await authenticator.authenticate(idp.mint(key, "k1"))
    assert caught.value.reason == "unknown-token"


@pytest.mark.parametrize(
    ("token", "jwt_like"),
    [
        (STATIC, False),
        ("a.b.c", False),
        ("eyJhbGciOiJSUzI1NiJ9.e30.c2ln", True),
        ("eyJhbGciOiJSUzI1NiJ9.e30", False),
    ],
)
def test_looks_like_jwt(token: str, jwt_like: bool) -> None:
    assert looks_like_jwt(token) is jwt_like
