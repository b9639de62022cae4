"""Entry point of `lapse`: one sub-command group per area, each in its own module."""

from __future__ import annotations

import typer

from lapse_cli import audit, policy

app = typer.Typer(
    name="lapse",
    help="Lapse: just-in-time access. Exit codes: 0 ok, 1 the check failed, 2 usage or input error.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(policy.app, name="policy")
app.add_typer(audit.app, name="audit")
