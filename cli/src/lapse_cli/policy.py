"""`lapse policy ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="Policy commands.", no_args_is_help=True)
