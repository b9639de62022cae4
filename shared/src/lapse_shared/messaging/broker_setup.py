"""Each service its own broker user with least privilege: the users, their permissions and topic
permissions, created idempotently through the RabbitMQ management HTTP API.

    python -m lapse_shared.messaging.broker_setup --management-url http://admin:…@rabbit:15672 \\
        --vhost lapse [--submitter deploy-bot] [--siem-reader splunk]

Passwords come from LAPSE_BROKER_PASSWORD_<SERVICE> (e.g. LAPSE_BROKER_PASSWORD_GRANT); a user that
exists already keeps its password when none is given. Users come from LAPSE_BROKER_USERS.

What each user may do (regular expressions on resource names; topic permissions on routing keys):
- configure: the shared topology every service declares at start (`lapse.events`, `lapse.commands`,
  `lapse.dlx`, the delay cascade) and its own queues `lapse.<service>.*`;
- write: `lapse.events`, `lapse.dlx` (a queue's dead-letter exchange) and the delay cascade
  (binding the cascade needs write on its exchanges and queues), `lapse.commands` only for the
  request and grant services (grant.revoke; the grant service's own commands), its own queues;
- read: the shared exchanges and its own queues;
- topic write, per exchange: only the routing keys the service owns (`request.*` for the request
  service, `policy.decided`, `grant.*`, ...), on the delay cascade only its own delayed commands
  behind the delay bits. Topic read stays open: RabbitMQ checks binding keys against it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from lapse_shared.messaging import delay
from lapse_shared.messaging.auth import DEFAULT_BROKER_USERS, SERVICES
from lapse_shared.messaging.topology import COMMANDS, EVENTS

SHARED = r"lapse\.(events|commands|dlx|delay\.[a-z0-9]+)"
CASCADE = r"lapse\.delay\.[a-z0-9]+"
NOTHING = "^$"
DELAY_BITS = r"([01]\.)" + "{" + str(delay.LEVELS) + "}"
SECURITY = r"security\.message_rejected"


@dataclass(frozen=True)
class TopicPermission:
    exchange: str
    write: str
    read: str = ".*"


@dataclass(frozen=True)
class Grants:
    """One user's permissions on the vhost and its topic permissions."""

    configure: str
    write: str
    read: str
    topics: tuple[TopicPermission, ...] = ()


def cascade_exchanges() -> list[str]:
    return [delay.level_name(level) for level in range(delay.LEVELS)] + [delay.DELIVER]


def _topics(events: str, commands: str = NOTHING, delayed: str = NOTHING) -> tuple[TopicPermission, ...]:
    cascade = NOTHING if delayed == NOTHING else f"^{DELAY_BITS}({delayed})$"
    return (
        TopicPermission(EVENTS, f"^({events}|{SECURITY})$"),
        TopicPermission(COMMANDS, commands if commands == NOTHING else f"^({commands})$"),
        *(TopicPermission(name, cascade) for name in cascade_exchanges()),
    )


# Routing keys each service owns: events on lapse.events, commands, and delayed commands.
_OWNED: dict[str, tuple[str, str, str]] = {
    "request": (r"request\.[a-z_]+", r"grant\.revoke", r"request\.expire"),
    "policy": (r"policy\.decided", NOTHING, NOTHING),
    "grant": (r"grant\.[a-z_]+", r"grant\.(expire|start)", r"grant\.(expire|start)"),
    "audit": (r"audit\.checkpoint", NOTHING, NOTHING),
    "notifier": (r"(?!)", NOTHING, NOTHING),  # publishes only its security reports
}


def service_grants(service: str) -> Grants:
    own = rf"lapse\.{service}\..+"
    extra = r"|lapse\.siem.*" if service == "audit" else ""  # the SIEM exchange and stream
    events, commands, delayed = _OWNED[service]
    # lapse.dlx: RabbitMQ asks for write on the dead-letter exchange of a queue declared with one.
    write_shared = r"lapse\.(events|commands|dlx)" if commands != NOTHING else r"lapse\.(events|dlx)"
    return Grants(
        configure=f"^({SHARED}|{own}{extra})$",
        write=f"^({write_shared}|{CASCADE}|{own}{extra})$",
        read=f"^({SHARED}|{own}{extra})$",
        topics=_topics(events, commands, delayed),
    )


def submitter_grants() -> Grants:
    """Another system that submits requests: write on `lapse.commands`, `request.submit` only."""
    return Grants(NOTHING, r"^lapse\.commands$", NOTHING, (TopicPermission(COMMANDS, r"^request\.submit$"),))


def siem_reader_grants(stream: str = "lapse.siem.ocsf") -> Grants:
    """A SIEM reading the OCSF stream: read on the stream queue only."""
    return Grants(NOTHING, NOTHING, "^" + stream.replace(".", r"\.") + "$")


class Management:
    """The few calls of RabbitMQ's management API this needs; every one a PUT or DELETE, so repeatable."""

    def __init__(self, url: str, client: httpx.Client | None = None) -> None:
        parts = urlsplit(url)
        auth = (unquote(parts.username or "guest"), unquote(parts.password or "guest"))
        host = (parts.hostname or "127.0.0.1") + (f":{parts.port}" if parts.port else "")
        base = urlunsplit(parts._replace(netloc=host))
        self._client = client or httpx.Client(base_url=base.rstrip("/") + "/api", auth=auth, timeout=30)

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, json: object | None = None) -> httpx.Response:
        response = self._client.request(method, path, json=json)
        if response.status_code >= 400 and not (method == "DELETE" and response.status_code == 404):
            raise RuntimeError(
                f"RabbitMQ management API: {method} {path}: {response.status_code} {response.text}"
            )
        return response

    def user_exists(self, user: str) -> bool:
        response = self._client.get(f"/users/{quote(user, safe='')}")
        if response.status_code == 404:
            return False
        # Anything else but 200 (401: wrong administrator credentials) must not read as "missing".
        response.raise_for_status()
        return True

    def put_user(self, user: str, password: str, tags: str = "") -> None:
        self._call("PUT", f"/users/{quote(user, safe='')}", {"password": password, "tags": tags})

    def delete_user(self, user: str) -> None:
        self._call("DELETE", f"/users/{quote(user, safe='')}")

    def grant(self, vhost: str, user: str, grants: Grants) -> None:
        v, u = quote(vhost, safe=""), quote(user, safe="")
        self._call(
            "PUT",
            f"/permissions/{v}/{u}",
            {"configure": grants.configure, "write": grants.write, "read": grants.read},
        )
        # Topic permissions are replaced as a whole: stale ones (another exchange) are removed first.
        self._call("DELETE", f"/topic-permissions/{v}/{u}")
        for topic in grants.topics:
            self._call(
                "PUT",
                f"/topic-permissions/{v}/{u}",
                {"exchange": topic.exchange, "write": topic.write, "read": topic.read},
            )


def setup(
    management: Management,
    vhost: str,
    users: dict[str, str],
    passwords: dict[str, str],
    *,
    submitters: Sequence[str] = (),
    siem_readers: Sequence[str] = (),
) -> list[str]:
    """Create or update the service users and their permissions; returns what was done, line by line."""
    done: list[str] = []
    for service in SERVICES:
        user = users.get(service)
        if not user:
            continue
        password = passwords.get(service)
        if password:
            management.put_user(user, password)
            done.append(f"user {user}: created or updated")
        elif not management.user_exists(user):
            variable = f"LAPSE_BROKER_PASSWORD_{service.upper()}"
            raise SystemExit(f"user {user} ({service}) does not exist and {variable} is not set")
        management.grant(vhost, user, service_grants(service))
        done.append(f"user {user}: permissions of the {service} service on vhost {vhost}")
    for user in submitters:
        management.grant(vhost, user, submitter_grants())
        done.append(f"user {user}: may send request.submit on vhost {vhost}")
    for user in siem_readers:
        management.grant(vhost, user, siem_reader_grants())
        done.append(f"user {user}: may read the SIEM stream on vhost {vhost}")
    return done


def main(argv: list[str] | None = None) -> None:
    from lapse_shared.settings import ServiceSettings

    parser = argparse.ArgumentParser(
        prog="python -m lapse_shared.messaging.broker_setup",
        description="Create Lapse's broker users (one per service) and their least-privilege"
        " permissions; safe to run again.",
    )
    parser.add_argument(
        "--management-url",
        default=os.environ.get("LAPSE_BROKER_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672"),
        help="RabbitMQ management API with an administrator's credentials (LAPSE_BROKER_MANAGEMENT_URL).",
    )
    parser.add_argument(
        "--vhost", default=None, help="The vhost (default: the path of LAPSE_AMQP_URL, or /)."
    )
    parser.add_argument("--submitter", action="append", default=[], help="An existing user that may submit.")
    parser.add_argument(
        "--siem-reader", action="append", default=[], help="An existing user that reads the stream."
    )
    args = parser.parse_args(argv)
    settings = ServiceSettings()
    vhost = args.vhost
    if vhost is None:
        path = unquote(urlsplit(settings.amqp_url).path.lstrip("/"))
        vhost = path or "/"
    passwords = {
        service: os.environ[f"LAPSE_BROKER_PASSWORD_{service.upper()}"]
        for service in SERVICES
        if os.environ.get(f"LAPSE_BROKER_PASSWORD_{service.upper()}")
    }
    management = Management(args.management_url)
    try:
        done = setup(
            management,
            vhost,
            settings.broker_users or dict(DEFAULT_BROKER_USERS),
            passwords,
            submitters=args.submitter,
            siem_readers=args.siem_reader,
        )
    except httpx.TransportError as exc:
        where = urlsplit(args.management_url)
        sys.exit(
            f"error: cannot reach the RabbitMQ management API at {where.hostname}:{where.port} ({exc})."
            " Enable it with `rabbitmq-plugins enable rabbitmq_management`, or set"
            " LAPSE_BROKER_MANAGEMENT_URL."
        )
    except httpx.HTTPStatusError as exc:
        sys.exit(
            f"error: the RabbitMQ management API answered {exc.response.status_code} to"
            f" {exc.request.method} {exc.request.url.path}: {exc.response.text[:300]}"
            " (LAPSE_BROKER_MANAGEMENT_URL must name an administrator)."
        )
    finally:
        management.close()
    for line in done:
        print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
