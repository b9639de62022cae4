"""OIDC bearer tokens against a real JWKS endpoint on 127.0.0.1: each attack refused, with its reason."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from lapse_shared.http.identity import AuthenticationFailed, Identity
from lapse_shared.http.oidc import JwksCache, OidcAuthenticator, OidcConfig
from tests.idp import (
    AUDIENCE,
    FakeIdp,
    ec_key,
    ed_key,
    hs256,
    public_jwk,
    public_pem,
    rsa_key,
    serve_idp,
    unsigned,
)


class Clock:
    """Monotonic time the test moves by hand, so cache and rate-limit windows need no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture(scope="module")
def p256() -> ec.EllipticCurvePrivateKey:
    return ec_key()


@pytest.fixture(scope="module")
def ed() -> ed25519.Ed25519PrivateKey:
    return ed_key()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(idp: FakeIdp, clock: Clock, **config: Any) -> OidcAuthenticator:
    settings = OidcConfig(issuer=idp.issuer, audience=AUDIENCE, **config)
    return OidcAuthenticator(settings, JwksCache(settings, clock=clock))


async def refused(authenticator: OidcAuthenticator, token: str) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as caught:
        await authenticator.authenticate(token)
    # The reason is for the caller: it must never carry the token, or any part of it, back.
    assert not any(len(part) > 8 and part in caught.value.detail for part in token.split("."))
    return caught.value


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- accepted ---------------------------------------------------------------------------------


async def test_a_valid_token_becomes_the_identity_via_discovery(
    idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey
) -> None:
    authenticator = make(idp, clock, attribute_claims={"department": "dept", "level": "level"})
    token = idp.mint(key, "k1", dept="payments", level=3)
    assert await authenticator.authenticate(token) == Identity(
        subject="alice",
        groups=frozenset({"developers", "oncall"}),
        attributes={"department": "payments", "level": "3"},
    )
    assert idp.requests == {"/.well-known/openid-configuration": 1, "/jwks": 1}


async def test_groups_may_be_a_space_separated_string(
    idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey
) -> None:
    identity = await make(idp, clock).authenticate(idp.mint(key, "k1", groups="dba  security"))
    assert identity.groups == frozenset({"dba", "security"})


async def test_groups_may_come_from_a_nested_claim(
    idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey
) -> None:
    authenticator = make(idp, clock, groups_claim="realm_access.roles", subject_claim="preferred_username")
    token = idp.mint(key, "k1", groups=None, realm_access={"roles": ["dba"]}, preferred_username="alice.k")
    identity = await authenticator.authenticate(token)
    assert (identity.subject, identity.groups) == ("alice.k", frozenset({"dba"}))


async def test_a_token_without_groups_has_none(idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey) -> None:
    assert (await make(idp, clock).authenticate(idp.mint(key, "k1", groups=None))).groups == frozenset()


async def test_a_configured_jwks_url_skips_discovery(
    idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey
) -> None:
    await make(idp, clock, jwks_url=idp.jwks_url).authenticate(idp.mint(key, "k1"))
    assert idp.requests == {"/jwks": 1}


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "PS256", "RS512"])
async def test_other_asymmetric_algorithms_are_accepted(
    idp: FakeIdp,
    clock: Clock,
    key: rsa.RSAPrivateKey,
    p256: ec.EllipticCurvePrivateKey,
    ed: ed25519.Ed25519PrivateKey,
    alg: str,
) -> None:
    signer = {"ES256": p256, "EdDSA": ed}.get(alg, key)
    idp.jwks[:] = [public_jwk(signer, "k2")]
    assert (await make(idp, clock).authenticate(idp.mint(signer, "k2", alg=alg))).subject == "alice"


async def test_clock_skew_within_the_leeway_is_tolerated(
    idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey
) -> None:
    now = int(time.time())
    token = idp.mint(key, "k1", exp=now - 10, nbf=now + 10)
    assert (await make(idp, clock, leeway_seconds=30).authenticate(token)).subject == "alice"


async def test_keys_are_cached_between_tokens(idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey) -> None:
    authenticator = make(idp, clock, jwks_url=idp.jwks_url)
    for _ in range(5):
        await authenticator.authenticate(idp.mint(key, "k1"))
    clock.now += 599
    await authenticator.authenticate(idp.mint(key, "k1"))
    assert idp.requests["/jwks"] == 1
    clock.now += 2  # past the 10 minute cache
    await authenticator.authenticate(idp.mint(key, "k1"))
    assert idp.requests["/jwks"] == 2


async def test_a_rotated_key_is_accepted_after_a_refresh(
    idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    authenticator = make(idp, clock, jwks_url=idp.jwks_url)
    await authenticator.authenticate(idp.mint(key, "k1"))
    clock.now += 31  # past the refresh rate limit, well inside the cache lifetime
    idp.jwks.append(public_jwk(other_key, "k2"))
    identity = await authenticator.authenticate(idp.mint(other_key, "k2", sub="bob"))
    assert identity.subject == "bob"
    assert idp.requests["/jwks"] == 2


async def test_unknown_key_ids_refresh_the_keys_at_most_once_per_interval(
    idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey
) -> None:
    authenticator = make(idp, clock, jwks_url=idp.jwks_url)
    await authenticator.authenticate(idp.mint(key, "k1"))
    clock.now += 31
    for n in range(20):
        failed = await refused(authenticator, idp.mint(key, f"random-{n}"))
        assert failed.reason == "unknown-key"
        clock.now += 1
    # One refresh for the first unknown kid; the other 19 came within 30 s of it.
    assert idp.requests["/jwks"] == 2
    clock.now += 30
    await refused(authenticator, idp.mint(key, "random-again"))
    assert idp.requests["/jwks"] == 3


async def test_cached_keys_keep_working_while_the_idp_is_down(key: rsa.RSAPrivateKey, clock: Clock) -> None:
    with serve_idp() as idp:
        idp.jwks.append(public_jwk(key, "k1"))
        authenticator = make(idp, clock, jwks_url=idp.jwks_url)
        await authenticator.authenticate(idp.mint(key, "k1"))
    clock.now += 3600  # cache expired, and the server is gone
    assert (await authenticator.authenticate(idp.mint(key, "k1"))).subject == "alice"


# --- refused: each attack and failure, with its reason ------------------------------------------


async def test_alg_none_is_refused(idp: FakeIdp, clock: Clock) -> None:
    token = unsigned({"alg": "none", "typ": "JWT", "kid": "k1"}, idp.claims())
    failed = await refused(make(idp, clock), token)
    assert failed.reason == "algorithm-not-allowed"
    assert "'none' is not allowed" in failed.detail


async def test_hs256_signed_with_the_public_key_is_refused(
    idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey
) -> None:
    """RS/HS confusion: the public key, which anyone can fetch, used as an HMAC secret."""
    token = hs256({"alg": "HS256", "typ": "JWT", "kid": "k1"}, idp.claims(), public_pem(key))
    failed = await refused(make(idp, clock), token)
    assert failed.reason == "algorithm-not-allowed"
    assert "HS256" in failed.detail


async def test_an_algorithm_that_does_not_fit_the_key_is_refused(
    idp: FakeIdp, clock: Clock, p256: ec.EllipticCurvePrivateKey
) -> None:
    """ES256 claimed for the RSA key k1: the key decides the algorithms, never the token."""
    token = idp.mint(p256, "k1", alg="ES256")
    failed = await refused(make(idp, clock), token)
    assert failed.reason == "algorithm-not-allowed"
    assert "does not fit its key" in failed.detail


async def test_a_key_published_for_one_algorithm_refuses_another(
    idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey
) -> None:
    idp.jwks[:] = [public_jwk(key, "k1", alg="RS256")]
    failed = await refused(make(idp, clock), idp.mint(key, "k1", alg="PS256"))
    assert failed.reason == "algorithm-not-allowed"


async def test_an_expired_token_is_refused(idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey) -> None:
    failed = await refused(make(idp, clock), idp.mint(key, "k1", exp=int(time.time()) - 120))
    assert failed.reason == "expired"
    assert failed.detail == "The token has expired; get a new one."


async def test_a_token_not_valid_yet_is_refused(idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey) -> None:
    failed = await refused(make(idp, clock), idp.mint(key, "k1", nbf=int(time.time()) + 120))
    assert failed.reason == "not-yet-valid"
    assert "not valid yet" in failed.detail


async def test_a_token_from_another_issuer_is_refused(
    idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey
) -> None:
    failed = await refused(make(idp, clock), idp.mint(key, "k1", iss="https://evil.example"))
    assert failed.reason == "wrong-issuer"
    assert failed.detail == f"The token was not issued by {idp.issuer}."


async def test_an_issuer_that_only_contains_ours_is_refused(
    idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey
) -> None:
    failed = await refused(make(idp, clock), idp.mint(key, "k1", iss=idp.issuer[:-1]))
    assert failed.reason == "wrong-issuer"


async def test_a_token_for_another_audience_is_refused(
    idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey
) -> None:
    failed = await refused(make(idp, clock), idp.mint(key, "k1", aud=["grafana", "other-app"]))
    assert failed.reason == "wrong-audience"
    assert "not meant for this service" in failed.detail


async def test_a_token_signed_by_another_key_with_the_same_kid_is_refused(
    idp: FakeIdp, clock: Clock, other_key: rsa.RSAPrivateKey
) -> None:
    failed = await refused(make(idp, clock), idp.mint(other_key, "k1"))
    assert failed.reason == "bad-signature"
    assert "signature does not verify" in failed.detail


async def test_a_tampered_payload_is_refused(idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey) -> None:
    header, _, signature = idp.mint(key, "k1").split(".")
    forged = unsigned({}, idp.claims(groups=["security"])).split(".")[1]
    failed = await refused(make(idp, clock), f"{header}.{forged}.{signature}")
    assert failed.reason == "bad-signature"


async def test_an_unknown_kid_is_refused_after_one_refresh(
    idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey
) -> None:
    authenticator = make(idp, clock, jwks_url=idp.jwks_url)
    await authenticator.authenticate(idp.mint(key, "k1"))
    clock.now += 60
    failed = await refused(authenticator, idp.mint(key, "k9"))
    assert failed.reason == "unknown-key"
    assert "unknown `kid`" in failed.detail
    assert idp.requests["/jwks"] == 2


@pytest.mark.parametrize("claim", ["sub", "exp", "iss", "aud"])
async def test_a_token_missing_a_required_claim_is_refused(
    idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey, claim: str
) -> None:
    failed = await refused(make(idp, clock), idp.mint(key, "k1", **{claim: None}))
    assert failed.reason == "missing-claim"
    assert f"`{claim}`" in failed.detail


async def test_groups_of_the_wrong_type_are_refused(
    idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey
) -> None:
    failed = await refused(make(idp, clock), idp.mint(key, "k1", groups={"admin": True}))
    assert failed.reason == "invalid-claims"


@pytest.mark.parametrize(
    "token", ["not-a-jwt", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.%%%.xyz", "e30.e30", "bm90IGpzb24.e30.c2ln"]
)
async def test_a_malformed_token_is_refused(idp: FakeIdp, clock: Clock, token: str) -> None:
    failed = await refused(make(idp, clock), token)
    assert failed.reason == "malformed-token"
    assert "not a well-formed JWT" in failed.detail


async def test_a_header_without_alg_is_refused(idp: FakeIdp, clock: Clock) -> None:
    failed = await refused(make(idp, clock), unsigned({"kid": "k1"}, idp.claims()) + "c2ln")
    assert failed.reason == "algorithm-not-allowed"


@pytest.mark.parametrize("discovered", [False, True])
async def test_an_unreachable_idp_is_refused_with_a_clear_reason(
    clock: Clock, key: rsa.RSAPrivateKey, discovered: bool
) -> None:
    with serve_idp() as idp:
        token = idp.mint(key, "k1")
    jwks_url = None if discovered else f"http://127.0.0.1:{closed_port()}/jwks"
    authenticator = make(idp, clock, jwks_url=jwks_url, http_timeout_seconds=2)
    with structlog.testing.capture_logs() as logs:
        failed = await refused(authenticator, token)
    assert failed.reason == "idp-unreachable"
    assert "could not be fetched" in failed.detail
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == ["could not fetch the identity provider's keys"]
    assert "ConnectError" in warnings[0]["error"]


async def test_a_refresh_that_found_nothing_is_not_repeated_within_the_interval(
    key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    with serve_idp() as idp:
        idp.jwks.append(public_jwk(key, "k1"))
        authenticator = make(idp, clock, jwks_url=idp.jwks_url)
        idp.jwks.clear()  # the IdP answers, but without the key (mid-rotation, say)
        assert (await refused(authenticator, idp.mint(key, "k1"))).reason == "unknown-key"
        idp.jwks.append(public_jwk(key, "k1"))
        await refused(authenticator, idp.mint(key, "k1"))
        assert idp.requests["/jwks"] == 1
        clock.now += 30
        assert (await authenticator.authenticate(idp.mint(key, "k1"))).subject == "alice"


async def test_discovery_for_another_issuer_is_refused(
    idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey
) -> None:
    """The discovery document must name our issuer, or its jwks_uri is not to be trusted."""
    config = OidcConfig(issuer=idp.issuer + "/", audience=AUDIENCE)
    authenticator = OidcAuthenticator(config, JwksCache(config, clock=clock))
    failed = await refused(authenticator, idp.mint(key, "k1", iss=idp.issuer + "/"))
    assert failed.reason == "idp-unreachable"
    assert idp.requests["/jwks"] == 0


async def test_concurrent_first_requests_fetch_the_keys_once(
    idp: FakeIdp, clock: Clock, key: rsa.RSAPrivateKey
) -> None:
    authenticator = make(idp, clock)
    identities = await asyncio.gather(*(authenticator.authenticate(idp.mint(key, "k1")) for _ in range(10)))
    assert {i.subject for i in identities} == {"alice"}
    assert idp.requests == {"/.well-known/openid-configuration": 1, "/jwks": 1}
