"""Entry point of `lapse`: requests and reviews as top-level commands, one group per other area."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from lapse_cli import admin, audit, policy, requests, session
from lapse_cli.exits import HELP

app = typer.Typer(
    name="lapse",
    help="Lapse: just-in-time access. Ask for access, review it, follow it until it lapses.\n\n"
    + HELP
    + " (`lapse policy`: 0 ok, 1 a check or test failed, 2 usage.)\n\n"
    "Configuration: `lapse login` saves the URLs and token in $XDG_CONFIG_HOME/lapse/config.json"
    " (~/.config/lapse/config.json, mode 0600); LAPSE_API_URL, LAPSE_GRANT_URL, LAPSE_AUDIT_URL,"
    " LAPSE_TOKEN and LAPSE_CONFIG override it.",
    no_args_is_help=True,
    add_completion=False,
)


def _commands(panel: str, *commands: Callable[..., Any]) -> None:
    for command in commands:
        app.command(rich_help_panel=panel)(command)


_commands("Session", session.login, session.logout, session.whoami)
_commands(
    "Requesters",
    requests.request,
    requests.extend,
    requests.wait,
    requests.grants,
    requests.cancel,
    requests.release,
    admin.credentials,
)
_commands("Requesters and approvers", requests.ls, requests.show)
_commands("Approvers", requests.approve, requests.deny)
_commands("Administrators", admin.revoke)
app.add_typer(policy.app, name="policy")
app.add_typer(audit.app, name="audit")
