"""What every request/review command shares: options, error handling, waiting on a request."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.markup import escape

from lapse_cli import render, settings
from lapse_cli.client import Api, Failure
from lapse_cli.exits import Exit, for_state
from lapse_shared.durations import parse_duration

P = ParamSpec("P")
R = TypeVar("R")

JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON document instead of text.")]
WAIT_DONE = frozenset({"active", "ended", "denied", "cancelled", "expired", "failed"})


def handled(command: Callable[P, R]) -> Callable[P, R]:
    """Show a Failure as `error: ...` on stderr and exit with its code; Ctrl-C exits 130."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except Failure as exc:
            typer.echo(f"error: {exc.message}", err=True)
            for detail in exc.details:
                typer.echo(f"  {detail}", err=True)
            raise typer.Exit(exc.code) from None
        except settings.ConfigError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(Exit.ERROR) from None

    return run


def api(service: str = "request") -> Api:
    return Api(settings.current(), service)


def seconds(value: str, option: str) -> float:
    try:
        return parse_duration(value).total_seconds()
    except ValueError as exc:
        raise Failure(f"{option}: {exc}", Exit.USAGE) from None


def follow(
    client: Api,
    view: dict[str, Any],
    *,
    timeout: float,
    done: Callable[[dict[str, Any]], bool] = lambda v: v["state"] in WAIT_DONE,
    interval: float = 1.0,
) -> dict[str, Any]:
    """Poll the request until `done`, showing where it stands: a spinner on a terminal, one line
    per change otherwise (CI logs). Raises a TIMED_OUT Failure after `timeout` seconds."""
    console = render.stderr()
    deadline = time.monotonic() + timeout
    shown = ""
    status = console.status("") if console.is_terminal else None
    try:
        if status is not None:
            status.start()
        while True:
            line = render.status_line(view)
            if line != shown:
                shown = line
                if status is not None:
                    status.update(f"{view['id']}: {escape(line)}")
                else:
                    console.print(f"{view['id']}: {escape(line)}")
            if done(view):
                return view
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Failure(
                    f"timed out waiting: {view['id']} is still {view['state']};"
                    f" it goes on (see `lapse show {view['id']}`)",
                    Exit.TIMED_OUT,
                )
            time.sleep(min(interval, remaining))
            view = client.get(f"/v1/requests/{view['id']}")
    except KeyboardInterrupt:
        typer.echo(f"stopped waiting; {view['id']} goes on (see `lapse show {view['id']}`)", err=True)
        raise typer.Exit(130) from None
    finally:
        if status is not None:
            status.stop()


def outcome(view: dict[str, Any], as_json: bool) -> None:
    """Print the request where waiting ended and exit with the state's code."""
    code = for_state(view["state"])
    if as_json:
        render.print_json(view)
    else:
        out = render.stdout()
        grant = view.get("grant") or {}
        if view["state"] in ("active", "ended") and grant:
            out.print(f"{render.state(view['state'])}: {view['requester']} has {escape(render.what(view))}")
            out.print(f"  grant   {grant.get('id')}")
            if view["state"] == "active":
                out.print(f"  lapses  {render.when(grant.get('expires_at'))}")
            else:
                out.print(f"  ended   {render.when(grant.get('revoked_at'))}")
        else:
            out.print(f"{view['id']}: {escape(render.status_line(view))}")
    if code is not Exit.OK:
        raise typer.Exit(code)
