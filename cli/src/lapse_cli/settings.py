"""Where the CLI finds the services and the token: a config file written by `lapse login`, and
environment variables that override it (for CI jobs and scripts)."""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_REQUEST_URL = "http://127.0.0.1:8080"
ENV = {
    "request_url": "LAPSE_API_URL",
    "grant_url": "LAPSE_GRANT_URL",
    "audit_url": "LAPSE_AUDIT_URL",
    "token": "LAPSE_TOKEN",
}


@dataclass(frozen=True)
class Profile:
    request_url: str = DEFAULT_REQUEST_URL
    grant_url: str | None = None
    audit_url: str | None = None
    token: str | None = None

    def __repr__(self) -> str:  # never show the token, even in a traceback
        return f"Profile(request_url={self.request_url!r}, token={'set' if self.token else None})"

    def url(self, service: str) -> str:
        """Base URL of `service` (request, grant or audit)."""
        if service == "request":
            return self.request_url
        explicit = self.grant_url if service == "grant" else self.audit_url
        return explicit or sibling_url(self.request_url, service)


def sibling_url(request_url: str, service: str) -> str:
    """The grant or audit URL next to a request URL: the local ports 8082/8083 when the request
    service is on its default port 8080, else the same URL (a gateway in front routes by path;
    the services' paths do not overlap)."""
    parts = urlsplit(request_url.rstrip("/"))
    if parts.port == 8080 and parts.hostname:
        port = {"grant": 8082, "audit": 8083}[service]
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return urlunsplit(parts._replace(netloc=f"{host}:{port}"))
    return request_url.rstrip("/")


def config_path() -> Path:
    if explicit := os.environ.get("LAPSE_CONFIG"):
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "lapse" / "config.json"


def stored() -> Profile:
    """The config file's settings alone (defaults where it has none or does not exist)."""
    path = config_path()
    if not path.exists():
        return Profile()
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(
            f"warning: {path} is readable by others and holds your token; run: chmod 600 {path}",
            file=sys.stderr,
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; run `lapse login` again") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object; run `lapse login` again")
    known = {k: v for k, v in data.items() if k in ENV and isinstance(v, str)}
    return replace(Profile(), **known)


def current() -> Profile:
    """The config file overridden by the environment."""
    overrides = {field: value for field, name in ENV.items() if (value := os.environ.get(name))}
    return replace(stored(), **overrides)


def save(profile: Profile) -> Path:
    """Write the config file readable by its owner only (it holds a bearer token)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    # Created 0600 from the start, so the token is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (json.dumps(asdict(profile), indent=2) + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


class ConfigError(Exception):
    pass
