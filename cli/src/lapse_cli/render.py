"""Human output: times in local time with "in 29m 58s", request summaries, tables, timelines."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lapse_shared.durations import format_short

STATE_STYLE = {
    "pending": "yellow",
    "approved": "cyan",
    "active": "bold green",
    "ended": "dim",
    "denied": "red",
    "cancelled": "dim",
    "expired": "dim",
    "failed": "bold red",
}


def stdout() -> Console:
    # Created per call: tests swap sys.stdout. Wide when piped so ids are never cut.
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200, highlight=False)


def stderr() -> Console:
    return Console(file=sys.stderr, width=None if sys.stderr.isatty() else 200, highlight=False)


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def now() -> datetime:
    return datetime.now(UTC)


def span(seconds: float) -> str:
    """29m 58s, 1h 05m, 2d 3h: two units, enough to read at a glance."""
    seconds = int(abs(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def relative(at: datetime, reference: datetime | None = None) -> str:
    delta = (at - (reference or now())).total_seconds()
    return f"in {span(delta)}" if delta >= 0 else f"{span(delta)} ago"


def local(at: datetime) -> str:
    """Local time, with its zone, to the second."""
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def when(value: str | None) -> str:
    at = parse_time(value)
    return f"{local(at)} ({relative(at)})" if at else "-"


def state(value: str) -> str:
    return f"[{STATE_STYLE.get(value, '')}]{value}[/]"


def review_progress(view: dict[str, Any]) -> str | None:
    """'awaiting review: stage 1/2 "DBA", 0/1 approval(s) from dba' for a pending request."""
    review = view.get("review")
    if view["state"] != "pending":
        return None
    if not review:
        return "waiting for the policy decision"
    index = review.get("current_stage")
    if index is None:
        return "waiting for the decision to be recorded"
    stage = review["stages"][index]
    name = f' "{stage["name"]}"' if stage.get("name") else ""
    groups = ", ".join(stage["approver_groups"]) or "anyone"
    return (
        f"awaiting review: stage {index + 1}/{len(review['stages'])}{name},"
        f" {len(stage['approved_by'])}/{stage['approvals']} approval(s) from {groups}"
    )


def status_line(view: dict[str, Any]) -> str:
    """One line on where a request stands, for the --wait spinner and `ls`."""
    current = view["state"]
    grant = view.get("grant") or {}
    if current == "pending":
        return f"pending: {review_progress(view)}"
    if current == "approved":
        start = parse_time(view.get("start_at"))
        if start and start > now():
            return f"approved: starts {local(start)} ({relative(start)})"
        return "approved: the access is being provisioned"
    if current == "active" and grant.get("expires_at"):
        return f"active: lapses {when(grant['expires_at'])}"
    if current == "ended":
        return f"ended {when(grant.get('revoked_at'))}"
    if current == "denied":
        reasons = (view.get("decision") or {}).get("reasons") or []
        denials = [r for r in (view.get("review") or {}).get("reviews", []) if r["verdict"] == "deny"]
        if denials:
            return f"denied by {denials[-1]['reviewer']}: {denials[-1]['comment']}"
        return "denied: " + (str(reasons[-1]) if reasons else "by policy")
    if current == "failed":
        return f"failed: {view.get('failure_reason') or 'provisioning failed'}"
    return str(current)


def what(view: dict[str, Any]) -> str:
    return f"{view['role']} on {view['resource']} for {format_short(view['duration_seconds'])}"


def requests_table(items: list[dict[str, Any]], *, grants: bool = False) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("ID", no_wrap=True)
    table.add_column("STATE")
    table.add_column("REQUESTER")
    table.add_column("RESOURCE")
    table.add_column("ROLE")
    if grants:
        table.add_column("GRANT", no_wrap=True)
        table.add_column("LAPSES")
        table.add_column("LEFT", justify="right")
    else:
        table.add_column("FOR")
        table.add_column("CREATED")
        table.add_column("STATUS")
    for view in items:
        row = [view["id"], state(view["state"]), view["requester"], view["resource"], view["role"]]
        if grants:
            grant = view.get("grant") or {}
            expires = parse_time(grant.get("expires_at"))
            left = span((expires - now()).total_seconds()) if expires and expires > now() else "-"
            row += [str(grant.get("id") or "-"), local(expires) if expires else "-", left]
        else:
            created = parse_time(view["created_at"])
            assert created is not None
            status = status_line(view).removeprefix(f"{view['state']}: ")
            row += [format_short(view["duration_seconds"]), relative(created), escape(status)]
        table.add_row(*row)
    return table


def request_details(view: dict[str, Any], console: Console) -> None:
    """The request, its decision and reasons, review progress and grant."""
    line: Callable[[str, str], None] = lambda label, text: console.print(f"  [bold]{label:<11}[/]{text}")  # noqa: E731
    console.print(f"[bold]{view['id']}[/]  {state(view['state'])}")
    line(
        "requester",
        view["requester"] + (f" (submitted by {view['submitted_by']})" if view.get("submitted_by") else ""),
    )
    line("access", escape(what(view)))
    line("reason", escape(view["reason"]))
    if view.get("ticket"):
        line("ticket", escape(view["ticket"]))
    if view.get("break_glass"):
        line("break-glass", "[bold red]yes[/]")
    if view.get("start_at"):
        line("starts", when(view["start_at"]))
    if view.get("extends_grant_id"):
        line("extends", f"grant {view['extends_grant_id']}")
    line("status", escape(status_line(view)))
    decision = view.get("decision")
    if decision:
        line("decision", f"{decision.get('outcome')} by rule {decision.get('rule') or '-'}")
        for reason in decision.get("reasons") or []:
            console.print(f"  {'':<11}- {escape(str(reason))}")
    if view.get("pending_until") and view["state"] == "pending":
        line("undecided", f"lapses {when(view['pending_until'])}")
    review = view.get("review")
    if review:
        for i, stage in enumerate(review["stages"]):
            done = len(stage["approved_by"])
            mark = (
                "current"
                if review.get("current_stage") == i
                else ("done" if done >= stage["approvals"] else "")
            )
            who = ", ".join(stage["approved_by"]) or "nobody yet"
            name = stage.get("name") or f"stage {i + 1}"
            groups = ", ".join(stage["approver_groups"]) or "anyone"
            line(
                "review" if i == 0 else "",
                f"{i + 1}. {escape(name)}: {done}/{stage['approvals']} from {escape(groups)}"
                f" (approved by {escape(who)}) {mark}".rstrip(),
            )
    grant = view.get("grant")
    if grant:
        line("grant", str(grant.get("id")))
        line("granted", when(grant.get("granted_at")))
        if grant.get("revoked_at"):
            lateness = _ended(grant)
            line("expires", when(grant.get("expires_at")))
            line("revoked", when(grant["revoked_at"]) + lateness)
        else:
            line("lapses", when(grant.get("expires_at")))


def _ended(data: dict[str, Any]) -> str:
    """ ", N ms before expiry" for an early end, ", N ms after expiry" for a late one.

    Early ends are `ended_early_ms`; producers before it sent them as a negative lateness.
    """
    early, late = data.get("ended_early_ms"), data.get("lateness_ms")
    if early is None and isinstance(late, int) and late < 0:
        early = -late
    if early:
        return f", {format_ms(early)} before expiry"
    return f", {late} ms after expiry" if isinstance(late, int) else ""


def format_ms(ms: int) -> str:
    """Milliseconds for a person: `750 ms`, `12 s`, `3 h 20 min`, `26 d 4 h`."""
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms // 1000
    if seconds < 60:
        return f"{seconds} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours < 1:
        return f"{minutes} min"
    if days < 1:
        return f"{hours} h {minutes % 60} min"
    return f"{days} d {hours % 24} h"


def _describe(kind: str, data: dict[str, Any]) -> str:
    """One line for an audit event, from its data."""
    if kind == "request.submitted":
        requester = data.get("requester") or {}
        who = requester.get("subject") if isinstance(requester, dict) else requester
        return f"submitted by {who}: {data.get('reason', '')}"
    if kind == "policy.decided":
        return f"policy decided {data.get('outcome')} (rule {data.get('rule')})"
    if kind == "request.awaiting_review":
        return "awaiting review"
    if kind == "request.reviewed":
        return (
            f"{data.get('reviewer')}: {data.get('verdict')} (stage {int(data.get('stage', 0)) + 1},"
            f" {data.get('approvals_in_stage')}/{data.get('approvals_needed')}): {data.get('comment', '')}"
        )
    if kind == "request.approved":
        return "approved"
    if kind == "request.denied":
        return "denied" + (f": {data['reason']}" if data.get("reason") else "")
    if kind == "request.cancelled":
        return f"cancelled by {data.get('cancelled_by')}"
    if kind == "request.expired":
        return "expired undecided"
    if kind == "grant.activated":
        return f"access granted, until {local(datetime.fromisoformat(data['expires_at']))}"
    if kind == "grant.extended":
        return "access extended"
    if kind == "grant.failed":
        return f"provisioning failed: {data.get('reason')}"
    if kind == "grant.revoked":
        by = f" by {data['revoked_by']}" if data.get("revoked_by") else ""
        why = f": {data['revoke_reason']}" if data.get("revoke_reason") else ""
        return f"access removed ({data.get('cause')}{by}{why})" + _ended(data)
    if kind == "grant.revoke_failing":
        return f"revocation failing (attempt {data.get('attempts')}), retried: {data.get('error')}"
    return kind


def audit_timeline(entries: list[dict[str, Any]]) -> list[tuple[datetime, str, str]]:
    rows = []
    for entry in entries:
        event = entry["event"]
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        rows.append((datetime.fromisoformat(event["time"]), event["type"], _describe(event["type"], data)))
    return rows


def view_timeline(view: dict[str, Any]) -> list[tuple[datetime, str, str]]:
    """A timeline from the request view's own timestamps, when the audit trail cannot be read."""
    rows: list[tuple[datetime, str, str]] = []

    def add(value: str | None, kind: str, text: str) -> None:
        if at := parse_time(value):
            rows.append((at, kind, text))

    add(view["created_at"], "submitted", f"submitted by {view['requester']}: {view['reason']}")
    for review in (view.get("review") or {}).get("reviews", []):
        add(
            review["reviewed_at"],
            "reviewed",
            f"{review['reviewer']}: {review['verdict']}: {review['comment']}",
        )
    add(view.get("approved_at"), "approved", "approved")
    grant = view.get("grant") or {}
    add(grant.get("granted_at"), "granted", "access granted")
    add(grant.get("revoked_at"), "revoked", "access removed")
    if view["state"] in ("denied", "cancelled", "expired", "failed"):
        add(view["updated_at"], view["state"], status_line(view))
    return sorted(rows, key=lambda r: r[0])


def timeline_table(rows: list[tuple[datetime, str, str]]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("TIME", no_wrap=True)
    table.add_column("EVENT", no_wrap=True)
    table.add_column("")
    for at, kind, text in rows:
        table.add_row(local(at), kind, escape(text))
    return table
