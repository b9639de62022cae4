"""`lapse login/logout/whoami`: where the services are and who you are, kept in the config file."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from typing import Annotated, Any

import typer

from lapse_cli import render, settings
from lapse_cli.client import Api, Failure
from lapse_cli.common import JsonOption, api, handled
from lapse_cli.exits import Exit


def _whoami(client: Api) -> dict[str, Any]:
    """GET /v1/me; a request service without it only proves the token works."""
    try:
        me: dict[str, Any] = client.get("/v1/me")
        return me
    except Failure as exc:
        if exc.code is not Exit.NOT_FOUND:
            raise
    client.get("/v1/requests", limit=1)
    return {"subject": None, "groups": [], "reader": False}


def _who(me: dict[str, Any]) -> str:
    if me.get("subject") is None:
        return "a valid token (this request service does not say whose)"
    groups = ", ".join(me["groups"]) or "none"
    return f"{me['subject']} (groups: {groups})"


def _read_token(from_stdin: bool) -> str:
    # The prompt hides what is typed; stdin keeps the token out of shell history and `ps`.
    token = (
        sys.stdin.readline().strip() if from_stdin else str(typer.prompt("Token", hide_input=True)).strip()
    )
    if not token:
        raise Failure("no token given", Exit.USAGE)
    return token


@handled
def login(
    url: Annotated[
        str | None,
        typer.Argument(
            help="Request service URL (default: LAPSE_API_URL, the saved one, or http://127.0.0.1:8080)."
        ),
    ] = None,
    grant_url: Annotated[
        str | None, typer.Option("--grant-url", help="Grant service URL (default: next to URL).")
    ] = None,
    audit_url: Annotated[
        str | None, typer.Option("--audit-url", help="Audit service URL (default: next to URL).")
    ] = None,
    token_stdin: Annotated[
        bool, typer.Option("--token-stdin", help="Read the token from stdin (keeps it out of shell history).")
    ] = False,
) -> None:
    """Save the service URLs and your token (checked first) in the config file, readable by you only."""
    saved = settings.stored()
    env_url = os.environ.get(settings.ENV["request_url"])
    profile = replace(
        saved,
        request_url=(url or env_url or saved.request_url).rstrip("/"),
        grant_url=grant_url or saved.grant_url,
        audit_url=audit_url or saved.audit_url,
        token=_read_token(token_stdin),
    )
    with Api(profile, "request") as client:
        me = _whoami(client)
    path = settings.save(profile)
    out = render.stdout()
    out.print(f"logged in to {profile.request_url} as {_who(me)}")
    out.print(f"  grant {profile.url('grant')}, audit {profile.url('audit')}; saved in {path}")


@handled
def logout() -> None:
    """Forget the saved token (the URLs stay)."""
    path = settings.config_path()
    if path.exists():
        settings.save(replace(settings.stored(), token=None))
    render.stdout().print(f"logged out (token removed from {path})")


@handled
def whoami(as_json: JsonOption = False) -> None:
    """Who the current token belongs to, and which services the CLI talks to."""
    with api() as client:
        me = _whoami(client)
    if as_json:
        render.print_json(me)
        return
    profile = settings.current()
    render.stdout().print(f"{_who(me)} at {profile.request_url}")
