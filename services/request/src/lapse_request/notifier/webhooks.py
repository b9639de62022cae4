"""The webhook configuration file: which receivers hear which events, validated at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Self
from urllib.parse import urlsplit

import yaml
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError, model_validator

from lapse_shared.events import (
    RequestApproved,
    RequestAwaitingReview,
    RequestCancelled,
    RequestDenied,
    RequestExpired,
    RequestReviewed,
)

AWAITING_REVIEW = RequestAwaitingReview.TYPE
NOTIFIED_EVENTS: tuple[str, ...] = (
    RequestAwaitingReview.TYPE,
    RequestReviewed.TYPE,
    RequestApproved.TYPE,
    RequestDenied.TYPE,
    RequestExpired.TYPE,
    RequestCancelled.TYPE,
)

EventType = Annotated[str, Field(pattern="^request\\.[a-z_]+$")]


class Format(StrEnum):
    SLACK = "slack"
    TEAMS = "teams"
    JSON = "json"


class WebhookConfig(BaseModel):
    """One receiver, as written in the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100, pattern="^[A-Za-z0-9_.-]+$")
    url: AnyHttpUrl | None = Field(None, description="The endpoint; prefer url_env, the URL is a secret.")
    url_env: str | None = Field(None, min_length=1, description="Environment variable holding the URL.")
    format: Format = Format.JSON
    events: list[EventType] = Field(default_factory=lambda: list(NOTIFIED_EVENTS), min_length=1)
    groups: list[str] | None = Field(
        None, min_length=1, description="Only reviews some of whose approver groups are listed."
    )
    public_url: AnyHttpUrl | None = Field(None, description="The request API, for links in notices.")
    timeout_seconds: float = Field(10.0, gt=0, le=120)

    @model_validator(mode="after")
    def _one_url(self) -> Self:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url and url_env")
        unknown = sorted(set(self.events) - set(NOTIFIED_EVENTS))
        if unknown:
            raise ValueError(f"events {unknown} are not notified; choose from {list(NOTIFIED_EVENTS)}")
        return self


class NotifierFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    public_url: AnyHttpUrl | None = Field(None, description="Default public_url of every webhook.")
    webhooks: list[WebhookConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [w.name for w in self.webhooks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"webhook names must be unique; repeated: {duplicates}")
        return self


class Webhook:
    """A configured receiver with its URL resolved. `repr` and `host` never show the URL's secret part."""

    def __init__(self, config: WebhookConfig, url: str, public_url: str | None) -> None:
        self.name = config.name
        self.format = config.format
        self.events = frozenset(config.events)
        self.groups = frozenset(config.groups) if config.groups is not None else None
        self.timeout_seconds = config.timeout_seconds
        self.public_url = public_url.rstrip("/") if public_url else None
        self._url = url
        # Slack and Teams put the credential in the path: only the host may be logged.
        self.host = urlsplit(url).hostname or "?"

    @property
    def url(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return f"Webhook(name={self.name!r}, host={self.host!r}, format={self.format.value!r})"

    def wants(self, event_type: str) -> bool:
        return event_type in self.events

    def wants_review(self, approver_groups: list[str]) -> bool:
        """A review notice: to every webhook, or to those with a listed approver group."""
        return self.groups is None or not self.groups.isdisjoint(approver_groups)


class ConfigError(Exception):
    """The webhook file is missing or wrong; the message says where and what to fix."""


def load_webhooks(path: Path, environ: Mapping[str, str] | None = None) -> list[Webhook]:
    """Read and check the file; raises ConfigError naming the file and the faulty entry."""
    env = os.environ if environ is None else environ
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the notifier configuration: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        parsed = NotifierFile.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        errors = "; ".join(
            f"{_where(raw, e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False, include_input=False)
        )
        raise ConfigError(f"{path}: {errors}") from None
    webhooks = []
    for config in parsed.webhooks:
        if config.url_env is not None:
            url = env.get(config.url_env, "")
            if not url:
                raise ConfigError(
                    f"{path}: webhook '{config.name}': environment variable {config.url_env} is not set"
                )
            scheme = urlsplit(url).scheme
            if scheme not in ("http", "https") or not urlsplit(url).hostname:
                raise ConfigError(
                    f"{path}: webhook '{config.name}': {config.url_env} does not hold an http(s) URL"
                )
        else:
            url = str(config.url)
        public = config.public_url or parsed.public_url
        webhooks.append(Webhook(config, url, str(public) if public else None))
    return webhooks


def _where(raw: object, loc: tuple[int | str, ...]) -> str:
    """`webhooks[1] (name 'x').url` rather than pydantic's bare location."""
    parts: list[str] = []
    node = raw
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item}]"]
            node = node[item] if isinstance(node, list) and item < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                parts[-1] += f" (name '{node['name']}')"
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "file"
