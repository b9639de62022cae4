"""Every event and command explains itself: a docstring, described fields, and a valid example."""

from __future__ import annotations

import inspect
import json
import types
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel

from lapse_shared.events import EVENT_TYPES, Event
from lapse_shared.events.examples import event_examples

ROOT = Path(__file__).resolve().parents[2]
ASYNCAPI = sorted((ROOT / "docs" / "asyncapi").glob("*.json"))


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation names, through `X | None`, `list[X]` and the like."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _undescribed_fields(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> list[str]:
    """`Model.field` for each field of the model, and of the models it nests, without a description."""
    seen = set() if seen is None else seen
    if model in seen:
        return []
    seen.add(model)
    missing = []
    for name, field in model.model_fields.items():
        if not (field.description or "").strip():
            missing.append(f"{model.__name__}.{name}")
        for nested in _models_in(field.annotation):
            missing += _undescribed_fields(nested, seen)
    return missing


@pytest.mark.parametrize("event", EVENT_TYPES, ids=lambda e: e.TYPE)
def test_every_type_has_a_docstring_of_its_own(event: type[Event]) -> None:
    # `__doc__` is not inherited by a class, so this fails for a type that only has Event's.
    assert inspect.cleandoc(event.__doc__ or "").strip(), f"{event.__name__} has no docstring"


def test_every_field_of_every_data_model_is_described() -> None:
    missing = [
        field
        for event in EVENT_TYPES
        for field in _undescribed_fields(_models_in(event.model_fields["data"].annotation)[0])
    ]
    assert not missing, f"fields without a description (add Field(description=...)): {sorted(set(missing))}"


def test_the_field_check_finds_a_field_without_a_description() -> None:
    class Nested(BaseModel):
        bare: int

    class Outer(BaseModel):
        described: list[Nested] | None = None

    assert _undescribed_fields(Outer) == ["Outer.described", "Nested.bare"]


def test_there_is_one_example_per_type_and_no_other() -> None:
    assert set(event_examples()) == {event.TYPE for event in EVENT_TYPES}


@pytest.mark.parametrize("event", EVENT_TYPES, ids=lambda e: e.TYPE)
def test_each_example_is_its_type_and_round_trips_through_json(event: type[Event]) -> None:
    example = event_examples()[event.TYPE]
    assert type(example.event) is event
    assert example.event.type == event.TYPE
    assert example.name
    assert example.summary
    assert event.model_validate_json(example.event.model_dump_json()) == example.event


def test_examples_are_the_same_on_every_call() -> None:
    """The generated documents hold them, so nothing in them may come from the clock or uuid4."""
    first = {t: e.event.model_dump_json() for t, e in event_examples().items()}
    second = {t: e.event.model_dump_json() for t, e in event_examples().items()}
    assert first == second


def test_example_ids_are_unique() -> None:
    ids = [e.event.id for e in event_examples().values()]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("event", EVENT_TYPES, ids=lambda e: e.TYPE)
def test_each_committed_event_schema_carries_its_example(event: type[Event]) -> None:
    schema = json.loads((ROOT / "docs" / "schemas" / "events" / f"{event.TYPE}.json").read_text())
    assert [event.model_validate(example) for example in schema["examples"]] == [
        event_examples()[event.TYPE].event
    ]


@pytest.mark.parametrize("event", EVENT_TYPES, ids=lambda e: e.TYPE)
def test_each_committed_event_schema_accepts_its_own_example(event: type[Event]) -> None:
    """What a consumer in another language checks: the example against the schema, no pydantic."""
    schema = json.loads((ROOT / "docs" / "schemas" / "events" / f"{event.TYPE}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    for example in schema["examples"]:
        jsonschema.Draft202012Validator(schema).validate(example)


def test_there_are_asyncapi_documents_to_check() -> None:
    assert {p.stem for p in ASYNCAPI} >= {"request", "policy", "grant", "audit", "notifier"}


@pytest.mark.parametrize("path", ASYNCAPI, ids=lambda p: p.stem)
def test_every_committed_asyncapi_message_has_an_example_and_a_description(path: Path) -> None:
    messages = json.loads(path.read_text())["components"]["messages"]
    assert messages
    lacking = {
        name: [key for key in ("examples", "description") if not message.get(key)]
        for name, message in messages.items()
        if not message.get("examples") or not message.get("description")
    }
    assert not lacking, f"{path.name}: messages without an example or description: {lacking}"
    for name, message in messages.items():
        for example in message["examples"]:
            # AsyncAPI 3.0 Message Example Object: these keys only, a payload or headers required.
            assert set(example) <= {"name", "summary", "headers", "payload"}, name
            assert "payload" in example or "headers" in example, name


@pytest.mark.parametrize("path", ASYNCAPI, ids=lambda p: p.stem)
def test_asyncapi_examples_of_events_validate_against_their_model(path: Path) -> None:
    by_type = {event.TYPE: event for event in EVENT_TYPES}
    messages = json.loads(path.read_text())["components"]["messages"]
    checked = 0
    for message in messages.values():
        for example in message["examples"]:
            payload = example["payload"]
            if isinstance(payload, dict) and payload.get("type") in by_type:
                by_type[payload["type"]].model_validate(payload)
                checked += 1
    assert checked, f"{path.name} has no event examples"
