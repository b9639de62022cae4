"""What a webhook receives: Slack Block Kit, a Teams Adaptive Card, or the CloudEvent itself.

A notice is first reduced to a `Notice` (title, facts, what to do), then laid out for the
receiver, so the three formats say the same thing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter

from lapse_request.notifier.webhooks import Format, Webhook
from lapse_shared.durations import format_short
from lapse_shared.events import (
    RequestApproved,
    RequestAwaitingReview,
    RequestCancelled,
    RequestDenied,
    RequestExpired,
    RequestReviewed,
)

NotifiedEvent = (
    RequestAwaitingReview
    | RequestReviewed
    | RequestApproved
    | RequestDenied
    | RequestExpired
    | RequestCancelled
)
_EVENT: TypeAdapter[NotifiedEvent] = TypeAdapter(NotifiedEvent)

# Slack: a section's text holds at most 3000 characters, a field 2000, a header 150.
_SLACK_TEXT_MAX = 2900
_SLACK_FIELD_MAX = 1900
_SLACK_HEADER_MAX = 150


@dataclass(frozen=True)
class Notice:
    title: str
    facts: list[tuple[str, str]]
    request_id: str
    link: str | None
    # Only a review notice asks someone to act.
    actions: list[str] = field(default_factory=list)


def parse_event(body: dict[str, Any]) -> NotifiedEvent:
    return _EVENT.validate_python(body)


def render(webhook: Webhook, event: NotifiedEvent) -> dict[str, Any]:
    if webhook.format is Format.JSON:
        payload: dict[str, Any] = json.loads(event.model_dump_json())
        return payload
    notice = describe(event, webhook.public_url)
    if webhook.format is Format.SLACK:
        return slack(notice)
    return teams(notice)


def describe(event: NotifiedEvent, public_url: str | None) -> Notice:
    """The words of a notice, plain text (each format escapes them its own way)."""
    d = event.data
    rid = str(d.request_id)
    link = f"{public_url}/v1/requests/{rid}" if public_url else None
    if isinstance(event, RequestAwaitingReview):
        a = event.data
        stage = f"stage {a.stage + 1}" + (f" ({a.stage_name})" if a.stage_name else "")
        facts = [
            ("Requester", a.requester),
            ("Resource", a.resource),
            ("Role", a.role),
            ("Duration", format_short(a.duration_seconds)),
            ("Reason", a.reason),
        ]
        if a.ticket:
            facts.append(("Ticket", a.ticket))
        facts += [
            ("Review", f"{stage}: {a.approvals_needed} approval(s) needed"),
            ("Approvers", ", ".join(a.approver_groups) or "-"),
            ("Decide by", _when(a.pending_until)),
        ]
        return Notice(
            title=f"Review needed: {a.requester} asks for {a.role} on {a.resource}",
            facts=facts,
            request_id=rid,
            link=link,
            actions=[f"lapse approve {rid}", f"lapse deny {rid}"],
        )
    if isinstance(event, RequestReviewed):
        r = event.data
        stage = f"stage {r.stage + 1}" + (f" ({r.stage_name})" if r.stage_name else "")
        facts = [
            ("Requester", r.requester),
            ("Reviewer", r.reviewer),
            ("Verdict", r.verdict.value),
            ("Progress", f"{stage}: {r.approvals_in_stage} of {r.approvals_needed} approval(s)"),
        ]
        if r.comment:
            facts.append(("Comment", r.comment))
        return Notice(
            f"{r.reviewer} reviewed the request of {r.requester}: {r.verdict.value}", facts, rid, link
        )
    if isinstance(event, RequestApproved):
        p = event.data
        facts = [
            ("Requester", p.requester),
            ("Resource", p.resource),
            ("Role", p.role),
            ("Duration", format_short(p.duration_seconds)),
            ("Approved by", ", ".join(p.approvers) or f"policy (rule {p.rule or '-'})"),
        ]
        if p.start_at:
            facts.append(("Starts", _when(p.start_at)))
        if p.break_glass:
            facts.append(("Break-glass", "yes: an after-the-fact review is due"))
        return Notice(f"Approved: {p.requester} gets {p.role} on {p.resource}", facts, rid, link)
    if isinstance(event, RequestDenied):
        n = event.data
        facts = [("Requester", n.requester), ("Resource", n.resource), ("Role", n.role)]
        facts.append(("Why", "; ".join(n.reasons) or "-"))
        return Notice(f"Denied: {n.requester} asked for {n.role} on {n.resource}", facts, rid, link)
    if isinstance(event, RequestExpired):
        x = event.data
        facts = [
            ("Requester", x.requester),
            ("Resource", x.resource),
            ("Role", x.role),
            ("Pending since", _when(x.pending_since)),
        ]
        return Notice(
            f"Expired undecided: {x.requester}'s request for {x.role} on {x.resource}", facts, rid, link
        )
    c = event.data
    facts = [("Requester", c.requester), ("Resource", c.resource), ("Role", c.role), ("By", c.cancelled_by)]
    return Notice(f"Cancelled: {c.requester}'s request for {c.role} on {c.resource}", facts, rid, link)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def slack_escape(text: str) -> str:
    """Slack mrkdwn control characters: `<!channel>` or `<https://x|y>` in a reason must stay text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack(notice: Notice) -> dict[str, Any]:
    """An incoming-webhook message: `text` (notifications, fallback) plus Block Kit blocks."""
    fields = [
        {"type": "mrkdwn", "text": _clip(f"*{label}*\n{slack_escape(value)}", _SLACK_FIELD_MAX)}
        for label, value in notice.facts
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(notice.title, _SLACK_HEADER_MAX)}},
        # A section holds at most 10 fields.
        *({"type": "section", "fields": fields[i : i + 10]} for i in range(0, len(fields), 10)),
    ]
    act = [f"`{a}`" for a in notice.actions]
    if notice.link:
        act.append(f"<{slack_escape(notice.link)}|request {notice.request_id}>")
    else:
        act.append(f"request `{notice.request_id}`")
    blocks.append(
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip("  ·  ".join(act), _SLACK_TEXT_MAX)}}
    )
    return {"text": slack_escape(notice.title), "blocks": blocks}


def teams(notice: Notice) -> dict[str, Any]:
    """A Teams message carrying one Adaptive Card (workflow webhooks and legacy connectors)."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": notice.title, "weight": "Bolder", "size": "Medium", "wrap": True},
        {"type": "FactSet", "facts": [{"title": label, "value": value} for label, value in notice.facts]},
    ]
    if notice.actions:
        body.append(
            {
                "type": "TextBlock",
                "text": "Decide with: " + " or ".join(notice.actions),
                "wrap": True,
                "fontType": "Monospace",
            }
        )
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if notice.link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open the request", "url": notice.link}]
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }
