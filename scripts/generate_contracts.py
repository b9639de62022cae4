"""Write the contract documents other teams build against, generated from the code.

docs/openapi/<service>.json    the HTTP API of each service (and of the notifier)
docs/asyncapi/<service>.json   what each service consumes and publishes (AsyncAPI 3.0)
docs/schemas/events/<type>.json  JSON Schema of every event and command
docs/schemas/policy.json       JSON Schema of a policy file (editors autocomplete with it)
docs/schemas/policy-tests.json JSON Schema of a policy test file (`lapse policy test`)
docs/configuration.md          every LAPSE_* environment variable of every service

Usage: python scripts/generate_contracts.py [OUTPUT_DIR]   (default: docs). A test fails when the
committed documents drift from what this writes.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from faststream.specification import AsyncAPI
from pydantic import BaseModel

from lapse_shared.events import EVENT_TYPES, Event
from lapse_shared.events.examples import Example, event_examples

ROOT = Path(__file__).resolve().parent.parent


def _apps() -> dict[str, FastAPI]:
    from lapse_audit.app import build as build_audit
    from lapse_audit.config import AuditSettings
    from lapse_grant.app import build as build_grant
    from lapse_grant.config import GrantSettings
    from lapse_policy.app import build as build_policy
    from lapse_policy.config import PolicySettings
    from lapse_request.app import build as build_request
    from lapse_request.config import RequestSettings
    from lapse_request.notifier.app import build as build_notifier
    from lapse_request.notifier.config import NotifierSettings

    examples = ROOT / "examples"
    # Fixed values, so the documents do not depend on the environment they are generated in.
    broker: dict[str, Any] = {"amqp_url": "amqp://rabbitmq:5672/"}
    common: dict[str, Any] = {**broker, "policy_dir": examples / "policies"}
    tokens: dict[str, Any] = {"token_file": examples / "tokens.yaml"}
    return {
        "request": build_request(RequestSettings(**common, **tokens)),
        "policy": build_policy(PolicySettings(**common, **tokens)),
        "grant": build_grant(GrantSettings(**common, **tokens)),
        "audit": build_audit(AuditSettings(**broker, **tokens)),
        # The approver notifier, a process of the request distribution with its own contract.
        "notifier": build_notifier(
            NotifierSettings(**broker, **tokens, notifier_config=examples / "notifier.yaml")
        ),
    }


def _write(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _document_raw_bodies(document: dict[str, Any], raw: dict[str, type[BaseModel]]) -> None:
    """Give subscribers that parse their body themselves (FastStream sees no type) their schema."""
    schemas = document["components"]["schemas"]
    for message in document["components"]["messages"].values():
        model = raw.get(message["title"].removesuffix(":SubscribeMessage"))
        if model is None:
            continue
        schema = model.model_json_schema(mode="validation", ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas[model.__name__] = schema
        replaced = message["payload"].get("$ref", "").removeprefix("#/components/schemas/")
        message["payload"] = {"$ref": f"#/components/schemas/{model.__name__}"}
        # The schema FastStream derived from the handler's own arguments (EmptyPayload, or the
        # decoder's body/user_id pair) describes no message once nothing refers to it.
        if replaced in schemas and f'"#/components/schemas/{replaced}"' not in json.dumps(document):
            del schemas[replaced]


def _description(event: type[Event]) -> str:
    return inspect.cleandoc(event.__doc__ or "")


def _message_example(example: Example) -> dict[str, Any]:
    """An AsyncAPI 3.0 Message Example Object (name, summary, payload)."""
    return {
        "name": example.name,
        "summary": example.summary,
        "payload": example.event.model_dump(mode="json"),
    }


def _document_examples(document: dict[str, Any], examples: dict[str, Example]) -> None:
    """Give every message whose payload is an event type (or a union of them) examples and a description.

    The payload names its model by `$ref` (`#/components/schemas/GrantActivated`), a union by a
    `oneOf` of such refs in the schema it points to; the schema's name is the model's class name.
    """
    by_schema = {event.__name__: event for event in EVENT_TYPES}
    schemas = document["components"]["schemas"]
    for message in document["components"]["messages"].values():
        name = message.get("payload", {}).get("$ref", "").rpartition("/")[2]
        if name in by_schema:
            members = [by_schema[name]]
        else:
            refs = [m.get("$ref", "") for m in schemas.get(name, {}).get("oneOf", [])]
            members = [by_schema[r.rpartition("/")[2]] for r in refs if r.rpartition("/")[2] in by_schema]
        if not members:
            continue
        message["examples"] = [_message_example(examples[event.TYPE]) for event in members]
        if "description" not in message:
            if len(members) == 1:
                message["description"] = _description(members[0])
            else:
                message["description"] = "One of:\n\n" + "\n".join(
                    f"- `{event.TYPE}`: {_description(event).splitlines()[0]}" for event in members
                )


def _document_siem_example(document: dict[str, Any], examples: dict[str, Example]) -> None:
    """The SIEM stream carries OCSF records, JSON lines: show alice's grant as the relay sends it."""
    from lapse_audit.ocsf import to_ocsf

    message = document["components"]["messages"].get("lapse.siem.ocsf:Message")
    if message is None:
        return
    lines = []
    for seq, kind in enumerate(("grant.activated", "grant.revoked"), start=1040):
        event = examples[kind].event
        record = to_ocsf(seq, event.time.isoformat(), event.model_dump(mode="json"))
        lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    message["contentType"] = "application/x-ndjson"
    message.setdefault("description", "OCSF 1.7.0 records, one JSON object a line (docs/siem/README.md).")
    message["examples"] = [
        {
            "name": "alice-grant-in-ocsf",
            "summary": "Two audit entries (alice's grant activated, then revoked) as OCSF records.",
            "payload": "\n".join(lines) + "\n",
        }
    ]


def generate(out: Path) -> list[Path]:
    written: list[Path] = []
    examples = event_examples()
    for name, app in _apps().items():
        openapi = out / "openapi" / f"{name}.json"
        _write(openapi, app.openapi())
        spec = AsyncAPI(
            app.state.host.broker,
            title=f"Lapse {name} service",
            version="0.1.0",
            description=f"Messages the Lapse {name} service consumes and publishes on RabbitMQ.",
        )
        asyncapi = out / "asyncapi" / f"{name}.json"
        document = spec.to_specification().to_jsonable()
        _document_raw_bodies(document, getattr(app.state, "raw_body_schemas", {}))
        _document_examples(document, examples)
        _document_siem_example(document, examples)
        _write(asyncapi, document)
        written += [openapi, asyncapi]
    for event in EVENT_TYPES:
        schema = out / "schemas" / "events" / f"{event.TYPE}.json"
        document = event.model_json_schema(mode="serialization")
        document["examples"] = [examples[event.TYPE].event.model_dump(mode="json")]
        _write(schema, document)
        written.append(schema)
    from lapse_policy.model import PolicyDocument
    from lapse_policy.testing import PolicyTestFile

    for name, model in (("policy", PolicyDocument), ("policy-tests", PolicyTestFile)):
        schema = out / "schemas" / f"{name}.json"
        _write(schema, model.model_json_schema(mode="validation"))
        written.append(schema)
    configuration = out / "configuration.md"
    configuration.write_text(_configuration_reference())
    written.append(configuration)
    return written


def _configuration_reference() -> str:
    from lapse_audit.config import AuditSettings
    from lapse_grant.config import GrantSettings
    from lapse_policy.config import PolicySettings
    from lapse_request.config import RequestSettings
    from lapse_request.notifier.config import NotifierSettings
    from lapse_shared.settings import ServiceSettings
    from lapse_shared.settings_reference import configuration_reference

    return configuration_reference(
        [
            ("Every service (`lapse_shared.settings.ServiceSettings`)", ServiceSettings),
            ("request (`lapse-request`)", RequestSettings),
            ("policy (`lapse-policy`)", PolicySettings),
            ("grant (`lapse-grant`)", GrantSettings),
            ("audit (`lapse-audit`)", AuditSettings),
            ("notifier (`lapse-notifier`)", NotifierSettings),
        ]
    )


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs"
    for path in generate(target):
        print(path)
