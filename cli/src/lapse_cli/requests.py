"""`lapse request/extend/wait/ls/grants/show/approve/deny/cancel/release`: asking for access and
reviewing it, against the request service (and the audit service for `show`'s timeline)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.markup import escape

from lapse_cli import render
from lapse_cli.client import Api, Failure
from lapse_cli.common import JsonOption, api, follow, handled, outcome, seconds
from lapse_cli.exits import Exit

RequestId = Annotated[str, typer.Argument(help="The request's id.", show_default=False)]
TimeoutOption = Annotated[
    str, typer.Option("--timeout", help="With --wait: give up after this long (exit 7); e.g. 10m, PT1H.")
]
STATES = ("pending", "approved", "active", "ended", "denied", "cancelled", "expired", "failed")


def _get(client: Api, request_id: str) -> dict[str, Any]:
    view: dict[str, Any] = client.get(f"/v1/requests/{request_id}")
    return view


def _submitted(view: dict[str, Any], *, wait: bool, timeout: str, as_json: bool, client: Api) -> None:
    if wait:
        outcome(follow(client, view, timeout=seconds(timeout, "--timeout")), as_json)
        return
    if as_json:
        render.print_json(view)
        return
    out = render.stdout()
    out.print(f"submitted {view['id']} ({render.state(view['state'])}): {escape(render.what(view))}")
    out.print(f"  follow it: lapse wait {view['id']}   or: lapse show {view['id']}")


def _start(value: str) -> str:
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise Failure(
            f"--start: {value!r} is not an ISO 8601 time, e.g. 2026-11-25T18:00", Exit.USAGE
        ) from None
    return (at if at.tzinfo else at.astimezone()).isoformat()


@handled
def request(
    resource: Annotated[str, typer.Argument(help="Catalogue name of the resource, e.g. orders-db.")],
    role: Annotated[str, typer.Argument(help="Role or action on it, e.g. orders_readonly.")],
    duration: Annotated[str, typer.Option("--for", help="How long: 30m, 1h30m, PT2H.")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why you need it (the policy may ask for a ticket id).")
    ],
    ticket: Annotated[str | None, typer.Option("--ticket", help="Change or incident ticket.")] = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--start", metavar="ISO", help="Scheduled start, ISO 8601 (local time unless it has an offset)."
        ),
    ] = None,
    break_glass: Annotated[
        bool, typer.Option("--break-glass", help="Emergency access: flagged and reviewed after.")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until decided and active (exit 0), denied (5), ...")
    ] = False,
    timeout: TimeoutOption = "10m",
    as_json: JsonOption = False,
) -> None:
    """Ask for RESOURCE ROLE for a while; with --wait, until it is decided and the access is active."""
    body: dict[str, Any] = {"resource": resource, "role": role, "duration": duration, "reason": reason}
    if ticket:
        body["ticket"] = ticket
    if break_glass:
        body["break_glass"] = True
    if start is not None:
        body["start_at"] = _start(start)
    with api() as client:
        _submitted(
            client.post("/v1/requests", body), wait=wait, timeout=timeout, as_json=as_json, client=client
        )


@handled
def extend(
    request_id: RequestId,
    duration: Annotated[str, typer.Option("--for", help="How much longer, from the extension's approval.")],
    reason: Annotated[str, typer.Option("--reason", help="Why you need more time.")],
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until the extension is decided and in force.")
    ] = False,
    timeout: TimeoutOption = "10m",
    as_json: JsonOption = False,
) -> None:
    """Ask for more time on your active access: a new request, decided like any other."""
    with api() as client:
        view = client.post(f"/v1/requests/{request_id}/extensions", {"duration": duration, "reason": reason})
        _submitted(view, wait=wait, timeout=timeout, as_json=as_json, client=client)


@handled
def wait(request_id: RequestId, timeout: TimeoutOption = "10m", as_json: JsonOption = False) -> None:
    """Wait for a request to be decided and active; the exit code says how it ended."""
    with api() as client:
        outcome(follow(client, _get(client, request_id), timeout=seconds(timeout, "--timeout")), as_json)


def _pages(client: Api, params: dict[str, Any], limit: int) -> dict[str, Any]:
    """Follow `next_cursor` until `limit` items; one document like a single page."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = client.get("/v1/requests", **params, limit=min(200, limit - len(items)), cursor=cursor)
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor or len(items) >= limit:
            return {"items": items, "next_cursor": cursor}


def _check_states(states: list[str]) -> None:
    unknown = [s for s in states if s not in STATES]
    if unknown:
        raise Failure(f"--state: unknown {', '.join(unknown)}; one of {', '.join(STATES)}", Exit.USAGE)


@handled
def ls(
    mine: Annotated[bool, typer.Option("--mine", help="Requests you made (the default).")] = False,
    review: Annotated[bool, typer.Option("--review", help="Requests awaiting your review now.")] = False,
    every: Annotated[
        bool, typer.Option("--all", help="Every request visible to you (readers: everyone's).")
    ] = False,
    state: Annotated[list[str] | None, typer.Option("--state", help="Only this state; repeatable.")] = None,
    resource: Annotated[str | None, typer.Option("--resource", help="Only this resource.")] = None,
    requester: Annotated[
        str | None, typer.Option("--requester", help="Only this requester (readers).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, newest first.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List requests, newest first: yours by default, --review for your queue, --all for all you see."""
    _check_states(state or [])
    if not (review or every or requester):
        mine = True
    params: dict[str, Any] = {
        "mine": "true" if mine else None,
        "awaiting_my_review": "true" if review else None,
        "state": state or None,
        "resource": resource,
        "requester": requester,
    }
    with api() as client:
        found = _pages(client, params, limit)
    if as_json:
        render.print_json(found)
        return
    out = render.stdout()
    if not found["items"]:
        out.print("no requests" + (" awaiting your review" if review else ""))
        return
    out.print(render.requests_table(found["items"]))
    if found["next_cursor"]:
        out.print(f"[dim]more than {limit}; raise --limit to see more[/]")


@handled
def grants(as_json: JsonOption = False) -> None:
    """Your active access: each grant and how long it has left."""
    with api() as client:
        found = _pages(client, {"mine": "true", "state": ["active"]}, 200)
    if as_json:
        render.print_json(found)
        return
    out = render.stdout()
    if not found["items"]:
        out.print("no active grants")
        return
    out.print(render.requests_table(found["items"], grants=True))


@handled
def show(request_id: RequestId, as_json: JsonOption = False) -> None:
    """A request: decision and reasons, review progress, grant, and its timeline from the audit trail."""
    with api() as client:
        view = _get(client, request_id)
    if as_json:
        render.print_json(view)
        return
    out = render.stdout()
    render.request_details(view, out)
    try:
        with api("audit") as audit:
            trail = audit.get("/v1/audit", request_id=view["id"])
        rows, source = render.audit_timeline(trail["entries"]), "audit trail"
    except Failure as exc:
        # Not readable (an older audit service, or not yours) or unreachable: the request's own
        # timestamps still tell most of the story.
        rows, source = render.view_timeline(view), f"request timestamps; audit trail: {exc.message}"
    out.print()
    out.print(f"[bold]timeline[/] [dim]({escape(source)})[/]")
    out.print(render.timeline_table(rows))


def _review(request_id: str, verdict: str, comment: str, as_json: bool) -> None:
    with api() as client:
        view = client.post(f"/v1/requests/{request_id}/reviews", {"verdict": verdict, "comment": comment})
    if as_json:
        render.print_json(view)
        return
    done = "approved" if verdict == "approve" else "denied"
    render.stdout().print(
        f"{done} {view['id']} ({view['requester']}: {escape(render.what(view))});"
        f" now {escape(render.status_line(view))}"
    )


@handled
def approve(
    request_id: RequestId,
    comment: Annotated[
        str, typer.Option("--comment", "-m", help="Why; shown to the requester.")
    ] = "approved",
    as_json: JsonOption = False,
) -> None:
    """Approve a request awaiting your review."""
    _review(request_id, "approve", comment, as_json)


@handled
def deny(
    request_id: RequestId,
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why (required); shown to the requester.")],
    as_json: JsonOption = False,
) -> None:
    """Deny a request awaiting your review."""
    _review(request_id, "deny", comment, as_json)


@handled
def cancel(request_id: RequestId, as_json: JsonOption = False) -> None:
    """Withdraw your own pending request."""
    with api() as client:
        view = client.post(f"/v1/requests/{request_id}/cancel")
    if as_json:
        render.print_json(view)
    else:
        render.stdout().print(f"cancelled {view['id']}")


@handled
def release(
    request_id: RequestId,
    reason: Annotated[
        str, typer.Option("--reason", help="Why it is no longer needed.")
    ] = "released by the requester",
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the access is removed.")] = False,
    timeout: TimeoutOption = "2m",
    as_json: JsonOption = False,
) -> None:
    """End your active access now, before it lapses."""
    with api() as client:
        view = client.post(f"/v1/requests/{request_id}/release", {"reason": reason})
        if wait:
            view = follow(
                client, view, timeout=seconds(timeout, "--timeout"), done=lambda v: v["state"] != "active"
            )
    if as_json:
        render.print_json(view)
    elif view["state"] == "ended":
        render.stdout().print(f"released {view['id']}: {escape(render.status_line(view))}")
    else:
        render.stdout().print(f"releasing {view['id']}: the access is being removed")
