"""`lapse audit ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="Audit commands.", no_args_is_help=True)
