"""OIDC bearer tokens: a JWT checked against the identity provider's published keys (JWKS)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import structlog

from lapse_shared.http.identity import AuthenticationFailed, Identity

log = structlog.get_logger("lapse.http.oidc")

# Asymmetric algorithms only, each with the key type (and curve) it needs. HS* is absent on
# purpose: with HS256 a public key would become a shared secret anyone can sign with (the
# RS/HS confusion attack); `none` is absent because it means "no signature".
_RSA = frozenset({("RSA", None)})
ALGORITHMS: Mapping[str, frozenset[tuple[str, str | None]]] = {
    "RS256": _RSA,
    "RS384": _RSA,
    "RS512": _RSA,
    "PS256": _RSA,
    "PS384": _RSA,
    "PS512": _RSA,
    "ES256": frozenset({("EC", "P-256")}),
    "ES384": frozenset({("EC", "P-384")}),
    "ES512": frozenset({("EC", "P-521")}),
    "EdDSA": frozenset({("OKP", "Ed25519"), ("OKP", "Ed448")}),
}


@dataclass(frozen=True)
class OidcConfig:
    """What the identity provider is and how its tokens map onto an `Identity`."""

    issuer: str
    audience: str
    # None: discovered from `{issuer}/.well-known/openid-configuration`.
    jwks_url: str | None = None
    subject_claim: str = "sub"
    # A dotted path reaches into nested claims (Keycloak: `realm_access.roles`).
    groups_claim: str = "groups"
    # Identity attribute -> claim (dotted path), e.g. {"department": "department"}.
    attribute_claims: Mapping[str, str] = field(default_factory=dict)
    # Clock skew tolerated between us and the IdP on exp, nbf and iat.
    leeway_seconds: float = 30.0
    # How long a fetched key set is used before it is fetched again.
    jwks_cache_seconds: float = 600.0
    # At most one fetch per this interval, whatever the tokens say: a flood of tokens with random
    # key ids must not become a flood of requests to the IdP.
    jwks_min_refresh_seconds: float = 30.0
    http_timeout_seconds: float = 5.0


@dataclass(frozen=True)
class _Key:
    kid: str | None
    kty: str
    crv: str | None
    alg: str | None
    key: Any  # a cryptography public key object

    def algorithms(self) -> list[str]:
        """The allowed algorithms this key can verify: from the key, never from the token."""
        if self.alg is not None:
            return [self.alg] if (self.kty, self.crv) in ALGORITHMS.get(self.alg, ()) else []
        return [name for name, types in ALGORITHMS.items() if (self.kty, self.crv) in types]


class IdpUnavailable(Exception):
    """The JWKS (or discovery document) could not be fetched or read."""


def _parse_jwks(document: Any) -> dict[str | None, _Key]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise IdpUnavailable("the JWKS document has no `keys` list")
    keys: dict[str | None, _Key] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        kty, crv = entry.get("kty"), entry.get("crv")
        kid = entry["kid"] if isinstance(entry.get("kid"), str) else None
        alg = entry["alg"] if isinstance(entry.get("alg"), str) else None
        # Encryption keys and symmetric ("oct") keys are never signature keys for us.
        if entry.get("use", "sig") != "sig" or kty not in {"RSA", "EC", "OKP"}:
            continue
        try:
            parsed = jwt.PyJWK(entry, algorithm=alg if alg in ALGORITHMS else None).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            log.warning("skipping an unusable key in the JWKS", kid=kid, kty=kty, error=str(exc))
            continue
        keys[kid] = _Key(kid, kty, None if kty == "RSA" else crv, alg, parsed)
    return keys


class JwksCache:
    """The IdP's signing keys, fetched asynchronously, cached, refetched on an unknown key id."""

    def __init__(self, config: OidcConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._jwks_url = config.jwks_url
        self._keys: dict[str | None, _Key] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._failing = False
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> _Key:
        """The key for `kid`, or AuthenticationFailed naming why there is none."""
        if not self._fresh() or self._find(kid) is None:
            await self._refresh()
        found = self._find(kid)
        if found is not None:
            return found
        if self._fetched_at is None or self._failing:
            raise AuthenticationFailed(
                "idp-unreachable",
                "The identity provider's signing keys could not be fetched; try again shortly.",
            )
        raise AuthenticationFailed(
            "unknown-key",
            "The token is signed with a key the identity provider does not publish (unknown `kid`).",
        )

    def _fresh(self) -> bool:
        return (
            self._fetched_at is not None
            and self._clock() - self._fetched_at < self._config.jwks_cache_seconds
        )

    def _find(self, kid: str | None) -> _Key | None:
        if kid is None:
            # A token without `kid` is only unambiguous when the IdP publishes a single key.
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        async with self._lock:
            now = self._clock()
            # Rate limit every attempt, failed or not, so an outage or random kids cost the IdP
            # one request per interval. A caller that waited on the lock sees the fresh set.
            if (
                self._attempted_at is not None
                and now - self._attempted_at < self._config.jwks_min_refresh_seconds
            ):
                return
            self._attempted_at = now
            try:
                self._keys = await self._fetch()
            except IdpUnavailable as exc:
                # Keep serving the keys we have: a short IdP outage should not log everyone out.
                self._failing = True
                log.warning(
                    "could not fetch the identity provider's keys", error=str(exc), kept=len(self._keys)
                )
                return
            self._fetched_at, self._failing = now, False
            log.info("fetched the identity provider's keys", kids=sorted(str(k) for k in self._keys))

    async def _fetch(self) -> dict[str | None, _Key]:
        async with httpx.AsyncClient(timeout=self._config.http_timeout_seconds) as client:
            if self._jwks_url is None:
                self._jwks_url = await self._discover(client)
            return _parse_jwks(await _get_json(client, self._jwks_url))

    async def _discover(self, client: httpx.AsyncClient) -> str:
        url = self._config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = await _get_json(client, url)
        if not isinstance(document, dict) or not isinstance(document.get("jwks_uri"), str):
            raise IdpUnavailable(f"{url} names no `jwks_uri`")
        # OpenID Connect Discovery 1.0 §4.3: the document must be the configured issuer's own.
        if document.get("issuer") != self._config.issuer:
            raise IdpUnavailable(
                f"{url} is for issuer {document.get('issuer')!r}, not {self._config.issuer!r}"
            )
        jwks_uri: str = document["jwks_uri"]
        return jwks_uri


async def _get_json(client: httpx.AsyncClient, url: str) -> Any:
    try:
        response = await client.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise IdpUnavailable(f"GET {url}: {type(exc).__name__}: {exc}") from None


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    """A claim by dotted path (`realm_access.roles`); a claim whose own name has dots wins."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


class OidcAuthenticator:
    """Checks signature, algorithm, issuer, audience, expiry and not-before, then maps the claims."""

    def __init__(self, config: OidcConfig, keys: JwksCache | None = None) -> None:
        self.config = config
        self.keys = keys or JwksCache(config)

    async def authenticate(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthenticationFailed(
                "malformed-token", "The bearer token is not a well-formed JWT (header.payload.signature)."
            ) from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            raise AuthenticationFailed(
                "algorithm-not-allowed",
                f"The token's algorithm {str(alg)[:20]!r} is not allowed; accepted: {', '.join(ALGORITHMS)}.",
            )
        kid = header.get("kid")
        key = await self.keys.key(kid if isinstance(kid, str) else None)
        allowed = key.algorithms()
        if alg not in allowed:
            raise AuthenticationFailed(
                "algorithm-not-allowed",
                f"The token's algorithm {alg} does not fit its key"
                f" (which takes {', '.join(allowed) or 'no allowed algorithm'}).",
            )
        return self._identity(self._verify(token, key, allowed))

    def _verify(self, token: str, key: _Key, algorithms: list[str]) -> dict[str, Any]:
        c = self.config
        required = ["exp", "iss", "aud"] + ([c.subject_claim] if "." not in c.subject_claim else [])
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=algorithms,
                audience=c.audience,
                issuer=c.issuer,
                leeway=c.leeway_seconds,
                options={"require": required},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationFailed("expired", "The token has expired; get a new one.") from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationFailed(
                "not-yet-valid", "The token is not valid yet (`nbf` or `iat` is in the future)."
            ) from None
        except jwt.InvalidIssuerError:
            raise AuthenticationFailed("wrong-issuer", f"The token was not issued by {c.issuer}.") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationFailed(
                "wrong-audience", f"The token is not meant for this service (audience {c.audience!r})."
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationFailed(
                "missing-claim", f"The token lacks the required `{exc.claim}` claim."
            ) from None
        except jwt.InvalidSignatureError:
            raise AuthenticationFailed(
                "bad-signature", "The token's signature does not verify with the identity provider's key."
            ) from None
        except jwt.InvalidAlgorithmError:
            raise AuthenticationFailed(
                "algorithm-not-allowed", "The token's algorithm is not allowed."
            ) from None
        except jwt.DecodeError:
            raise AuthenticationFailed(
                "malformed-token", "The bearer token is not a well-formed JWT."
            ) from None
        except jwt.InvalidTokenError as exc:
            # Other claim errors (e.g. a non-string `sub`): PyJWT's messages hold no token material.
            raise AuthenticationFailed("invalid-claims", f"The token's claims are invalid: {exc}.") from None
        return claims

    def _identity(self, claims: Mapping[str, Any]) -> Identity:
        c = self.config
        subject = _claim(claims, c.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise AuthenticationFailed(
                "missing-claim", f"The token's `{c.subject_claim}` claim is missing or not a string."
            )
        groups = _claim(claims, c.groups_claim)
        if groups is None:
            group_set: frozenset[str] = frozenset()
        elif isinstance(groups, str):
            # Some IdPs send a space-separated string, as OAuth does for `scope`.
            group_set = frozenset(groups.split())
        elif isinstance(groups, list) and all(isinstance(g, str) for g in groups):
            group_set = frozenset(groups)
        else:
            raise AuthenticationFailed(
                "invalid-claims",
                f"The token's `{c.groups_claim}` claim is neither a list of strings nor a string.",
            )
        attributes: dict[str, str] = {}
        for name, path in c.attribute_claims.items():
            value = _claim(claims, path)
            # Scalars only: policies compare attributes as strings; lists and objects are skipped.
            if isinstance(value, bool):
                attributes[name] = "true" if value else "false"
            elif isinstance(value, str | int):
                attributes[name] = str(value)
        return Identity(subject=subject, groups=group_set, attributes=attributes)
