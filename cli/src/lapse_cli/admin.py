"""`lapse revoke` (the administrators' kill switch) and `lapse credentials` (ephemeral logins),
against the grant service."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from lapse_cli import render
from lapse_cli.client import Failure
from lapse_cli.common import JsonOption, api, handled
from lapse_cli.exits import Exit


@handled
def revoke(
    reason: Annotated[str, typer.Option("--reason", help="Why; recorded on every revocation.")],
    grant: Annotated[str | None, typer.Option("--grant", help="End this grant, whatever its state.")] = None,
    subject: Annotated[
        str | None,
        typer.Option("--subject", help="End every grant of this person: active, provisioning or scheduled."),
    ] = None,
    resource: Annotated[
        str | None, typer.Option("--resource", help="End every grant on this resource, likewise.")
    ] = None,
    request: Annotated[
        str | None,
        typer.Option(
            "--request", help="End this request's grant, or refuse its approval if not arrived yet."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Kill switch (administrators): end a grant, a request's grant, or every grant of a subject or
    on a resource, now; approvals given before it that arrive later are refused."""
    if not (grant or subject or resource or request):
        raise Failure(
            "name what to revoke: --grant ID, --request ID, --subject S or --resource R", Exit.USAGE
        )
    body: dict[str, Any] = {
        "reason": reason,
        "grant_id": grant,
        "request_id": request,
        "subject": subject,
        "resource": resource,
    }
    with api("grant") as client:
        report = client.post("/v1/admin/revocations", {k: v for k, v in body.items() if v is not None})
    if as_json:
        render.print_json(report)
        return
    out = render.stdout()
    out.print(f"revoked {report['revoked']} grant(s); {report['pending']} still being retried")
    for item in report["grants"]:
        status = "revoked" if item["revoked"] else f"not yet: {escape(str(item.get('error')))}"
        out.print(f"  {item['grant_id']}  {status}")


@handled
def credentials(
    request_id: Annotated[str, typer.Argument(help="The request whose grant issued the credentials.")],
    as_json: JsonOption = False,
) -> None:
    """Fetch an ephemeral login's credentials, once (a second fetch exits 4)."""
    with api() as client:
        view = client.get(f"/v1/requests/{request_id}")
    grant_id = (view.get("grant") or {}).get("id")
    if not grant_id:
        raise Failure(f"{request_id} has no grant yet (it is {view['state']})", Exit.CONFLICT)
    with api("grant") as client:
        found = client.post(f"/v1/grants/{grant_id}/credentials")
    if as_json:
        render.print_json(found)
        return
    out = render.stdout()
    for key, value in found["credentials"].items():
        out.print(f"{key:<10} {escape(value)}")
    if found.get("expires_at"):
        out.print(f"{'expires':<10} {render.when(found['expires_at'])}")
