"""The one place settings become an `Authenticator`: OIDC, static tokens, or both."""

from __future__ import annotations

import jwt

from lapse_shared.http.identity import Authenticator, Identity, StaticTokenAuthenticator
from lapse_shared.http.oidc import OidcAuthenticator, OidcConfig
from lapse_shared.settings import ServiceSettings


def looks_like_jwt(token: str) -> bool:
    """Three dot-separated parts whose first decodes to a JSON header; static tokens never do."""
    if token.count(".") != 2:
        return False
    try:
        jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        return False
    return True


class JwtOrStaticAuthenticator:
    """Both kinds at once: JWTs to the IdP check, anything else to the static token file."""

    def __init__(self, oidc: Authenticator, static: Authenticator) -> None:
        self.oidc, self.static = oidc, static

    async def authenticate(self, token: str) -> Identity:
        chosen = self.oidc if looks_like_jwt(token) else self.static
        return await chosen.authenticate(token)


def oidc_config(settings: ServiceSettings) -> OidcConfig | None:
    if settings.oidc_issuer is None:
        return None
    if not settings.oidc_audience:
        # Without an audience check, a token the IdP minted for any other application would do.
        raise SystemExit(
            "LAPSE_OIDC_ISSUER is set but LAPSE_OIDC_AUDIENCE is not: set the audience tokens must name"
        )
    return OidcConfig(
        issuer=settings.oidc_issuer,
        audience=settings.oidc_audience,
        jwks_url=settings.oidc_jwks_url,
        subject_claim=settings.oidc_subject_claim,
        groups_claim=settings.oidc_groups_claim,
        attribute_claims=settings.oidc_attribute_claims,
        leeway_seconds=settings.oidc_leeway_seconds,
        jwks_cache_seconds=settings.oidc_jwks_cache_seconds,
        jwks_min_refresh_seconds=settings.oidc_jwks_min_refresh_seconds,
    )


def build_authenticator(settings: ServiceSettings) -> Authenticator:
    """OIDC when an issuer is set, static tokens when a file is set, both when both are."""
    config = oidc_config(settings)
    oidc = OidcAuthenticator(config) if config is not None else None
    static = (
        StaticTokenAuthenticator.from_file(settings.token_file) if settings.token_file is not None else None
    )
    if oidc is not None and static is not None:
        return JwtOrStaticAuthenticator(oidc, static)
    if oidc is not None:
        return oidc
    if static is not None:
        return static
    raise SystemExit(
        "no way to authenticate HTTP callers: set LAPSE_OIDC_ISSUER and LAPSE_OIDC_AUDIENCE for an"
        " identity provider, or LAPSE_TOKEN_FILE for static tokens (local use and tests)"
    )
