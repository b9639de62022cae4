"""Unit tests of lapse_shared.http.identity: static tokens and the one authenticate() check."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import ValidationError

from lapse_shared.http.identity import (
    AuthenticationFailed,
    Identity,
    StaticToken,
    StaticTokenAuthenticator,
    authenticate,
)
from lapse_shared.http.problems import ProblemError

ALICE_TOKEN = "alice-token-0123456789"
BOB_TOKEN = "bob-token-abcdefghijklmnop"


def _write_tokens(path: Path, entries: list[dict[str, object]]) -> Path:
    file = path / "tokens.yaml"
    file.write_text(yaml.safe_dump({"tokens": entries}))
    return file


@pytest.fixture
def authenticator(tmp_path: Path) -> StaticTokenAuthenticator:
    file = _write_tokens(
        tmp_path,
        [
            {"token": ALICE_TOKEN, "subject": "alice", "groups": ["dev", "oncall"]},
            {
                "token_sha256": hashlib.sha256(BOB_TOKEN.encode()).hexdigest(),
                "subject": "bob",
                "groups": ["sre"],
            },
        ],
    )
    return StaticTokenAuthenticator.from_file(file)


def _bearer(token: str, scheme: str = "Bearer") -> HTTPAuthorizationCredentials:
    return HTTPAuthorizationCredentials(scheme=scheme, credentials=token)


def test_plain_token_entry_authenticates_its_subject_and_groups(
    authenticator: StaticTokenAuthenticator,
) -> None:
    assert authenticator.lookup(ALICE_TOKEN) == Identity(subject="alice", groups=frozenset({"dev", "oncall"}))


def test_sha256_token_entry_authenticates_the_token_whose_digest_it_holds(
    authenticator: StaticTokenAuthenticator,
) -> None:
    identity = authenticator.lookup(BOB_TOKEN)
    assert identity is not None
    assert identity.subject == "bob"
    assert identity.groups == frozenset({"sre"})


def test_the_digest_itself_is_not_a_valid_token(authenticator: StaticTokenAuthenticator) -> None:
    assert authenticator.lookup(hashlib.sha256(BOB_TOKEN.encode()).hexdigest()) is None


@pytest.mark.parametrize("token", ["wrong-token-0123456789", "", ALICE_TOKEN + "x", ALICE_TOKEN[:-1]])
async def test_wrong_token_gives_no_identity(authenticator: StaticTokenAuthenticator, token: str) -> None:
    assert authenticator.lookup(token) is None
    with pytest.raises(AuthenticationFailed) as caught:
        await authenticator.authenticate(token)
    assert caught.value.reason == "unknown-token"


async def test_static_authenticate_returns_the_identity(authenticator: StaticTokenAuthenticator) -> None:
    assert (await authenticator.authenticate(ALICE_TOKEN)).subject == "alice"


def test_identity_in_any_checks_group_overlap() -> None:
    identity = Identity(subject="alice", groups=frozenset({"dev"}))
    assert identity.in_any({"dev", "sre"})
    assert not identity.in_any(["sre"])
    assert not identity.in_any(frozenset())


def test_file_entry_with_both_secrets_is_rejected(tmp_path: Path) -> None:
    file = _write_tokens(
        tmp_path,
        [
            {
                "token": ALICE_TOKEN,
                "token_sha256": hashlib.sha256(ALICE_TOKEN.encode()).hexdigest(),
                "subject": "alice",
            }
        ],
    )
    with pytest.raises(ValidationError, match="exactly one of"):
        StaticTokenAuthenticator.from_file(file)


def test_file_entry_with_neither_secret_is_rejected(tmp_path: Path) -> None:
    file = _write_tokens(tmp_path, [{"subject": "alice", "groups": ["dev"]}])
    with pytest.raises(ValidationError, match="exactly one of"):
        StaticTokenAuthenticator.from_file(file)


def test_token_shorter_than_sixteen_characters_is_rejected() -> None:
    with pytest.raises(ValidationError, match="token"):
        StaticToken.model_validate({"token": "short", "subject": "alice"})


@pytest.mark.parametrize("digest", ["abc", "A" * 64, "g" * 64, "0" * 63])
def test_malformed_sha256_is_rejected(digest: str) -> None:
    with pytest.raises(ValidationError, match="token_sha256"):
        StaticToken.model_validate({"token_sha256": digest, "subject": "alice"})


def test_unknown_key_in_token_file_is_rejected(tmp_path: Path) -> None:
    file = _write_tokens(tmp_path, [{"token": ALICE_TOKEN, "subject": "alice", "admin": True}])
    with pytest.raises(ValidationError, match="admin"):
        StaticTokenAuthenticator.from_file(file)


async def test_authenticate_returns_the_identity_for_a_valid_bearer_token(
    authenticator: StaticTokenAuthenticator,
) -> None:
    assert (await authenticate(authenticator, _bearer(ALICE_TOKEN))).subject == "alice"


async def test_authenticate_accepts_the_scheme_in_any_case(authenticator: StaticTokenAuthenticator) -> None:
    assert (await authenticate(authenticator, _bearer(BOB_TOKEN, scheme="bearer"))).subject == "bob"


async def test_authenticate_without_credentials_is_a_401_problem(
    authenticator: StaticTokenAuthenticator,
) -> None:
    with pytest.raises(ProblemError) as caught:
        await authenticate(authenticator, None)
    assert caught.value.status == 401
    assert caught.value.kind == "unauthorized"
    assert "Authorization: Bearer" in caught.value.detail
    assert caught.value.headers == {"WWW-Authenticate": 'Bearer realm="lapse"'}


async def test_authenticate_with_empty_credentials_is_a_401_problem(
    authenticator: StaticTokenAuthenticator,
) -> None:
    with pytest.raises(ProblemError) as caught:
        await authenticate(authenticator, _bearer(""))
    assert caught.value.status == 401


async def test_authenticate_with_another_scheme_is_a_401_problem(
    authenticator: StaticTokenAuthenticator,
) -> None:
    with pytest.raises(ProblemError) as caught:
        await authenticate(authenticator, _bearer(ALICE_TOKEN, scheme="Basic"))
    assert caught.value.status == 401
    assert "Bearer" in caught.value.detail


async def test_authenticate_with_an_unknown_token_is_a_401_problem(
    authenticator: StaticTokenAuthenticator,
) -> None:
    with pytest.raises(ProblemError) as caught:
        await authenticate(authenticator, _bearer("not-a-known-token-at-all"))
    assert caught.value.status == 401
    assert caught.value.detail == "The bearer token is not a known static token."
    assert caught.value.headers == {"WWW-Authenticate": 'Bearer realm="lapse", error="invalid_token"'}
