"""`lapse policy ...` commands: check a policy directory, run its tests (both offline, for CI)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from lapse_policy.documents import Problem
from lapse_policy.engine import Policy
from lapse_policy.testing import find_test_files, run_directory

app = typer.Typer(help="Policy commands.", no_args_is_help=True)

Directory = Annotated[
    Path,
    typer.Argument(help="Policy directory (the *.yaml files the services read).", show_default=False),
]


def _require_dir(directory: Path) -> None:
    if not directory.is_dir():
        typer.echo(f"error: {directory} is not a directory", err=True)
        raise typer.Exit(2)


def _located(directory: Path, problem: Problem) -> str:
    """FILE:LINE: message with the path as given, so editors and CI annotations can jump to it."""
    return str(replace(problem, file=str(directory / problem.file)))


@app.command()
def check(directory: Directory) -> None:
    """Validate a policy directory; every problem is reported as FILE:LINE: message."""
    _require_dir(directory)
    policy, problems = Policy.check(directory)
    if policy is None:
        for problem in problems:
            typer.echo(_located(directory, problem), err=True)
        typer.echo(f"{len(problems)} problem(s) in {directory}", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"ok: {len(policy.catalogue.resources)} resource(s), {len(policy.rules)} rule(s),"
        f" version {policy.version}"
    )


@app.command("test")
def run_tests(
    directory: Directory,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every decision's reasons.")] = False,
) -> None:
    """Run the policy test cases in DIRECTORY/tests/*.yaml against the policy in DIRECTORY."""
    _require_dir(directory)
    run = run_directory(directory, find_test_files(directory))
    for problem in run.problems:
        typer.echo(_located(directory, problem), err=True)
    for result in run.results:
        mark = "PASS" if result.passed else "FAIL"
        typer.echo(f"{mark} {directory / result.file}:{result.line} {result.name}")
        for failure in result.failures:
            typer.echo(f"     {failure}")
        if verbose or not result.passed:
            d = result.decision
            typer.echo(
                f"     decided: {d.outcome.value} by {d.rule or '(no rule)'}; " + " | ".join(d.reasons)
            )
    failed = sum(not r.passed for r in run.results)
    summary = f"{len(run.results) - failed} passed, {failed} failed"
    if run.problems:
        summary += f", {len(run.problems)} problem(s)"
    typer.echo(summary)
    if not run.ok:
        raise typer.Exit(1)
