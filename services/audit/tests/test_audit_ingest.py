"""How the batching consumer settles deliveries: one ack per batch, and what happens on faults."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest

from lapse_audit import ingest
from lapse_audit.ingest import BatchIngest
from services.audit.tests.events import lifecycle


@dataclass
class FakeChannel:
    calls: list[tuple[str, int, bool]] = field(default_factory=list)

    async def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.calls.append(("ack", tag, multiple))

    async def basic_nack(self, tag: int, multiple: bool = False, requeue: bool = True) -> None:
        self.calls.append(("nack", tag, requeue))

    async def basic_reject(self, tag: int, *, requeue: bool = True) -> None:
        self.calls.append(("reject", tag, requeue))


def deliveries(channel: FakeChannel, bodies: list[bytes]) -> list[Any]:
    return [
        SimpleNamespace(
            body=b,
            channel=channel,
            delivery_tag=tag,
            routing_key=json.loads(b).get("type", "x") if b.startswith(b"{") else "x",
            header=SimpleNamespace(
                properties=SimpleNamespace(message_id=str(tag), user_id="lapse-request", message_type=None)
            ),
        )
        for tag, b in enumerate(bodies, 1)
    ]


class Recorder:
    def __init__(self, failures: list[Exception], poison: str | None = None) -> None:
        self.failures, self.poison = failures, poison
        self.batches: list[list[str]] = []

    async def __call__(
        self, events: Sequence[dict[str, Any]], published_by: Sequence[str | None] = ()
    ) -> list[int | None]:
        if self.failures:
            raise self.failures.pop(0)
        if self.poison and any(e["id"] == self.poison for e in events):
            raise ValueError("this event breaks the insert")
        self.batches.append([e["id"] for e in events])
        return list(range(len(events)))


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    async def instant(_: float) -> None:
        return None

    monkeypatch.setattr(ingest.asyncio, "sleep", instant)


def consumer(recorder: Recorder) -> BatchIngest:
    return BatchIngest("amqp://unused", recorder, delivery_limit=5)


async def test_a_batch_is_chained_in_order_and_settled_by_one_multiple_ack() -> None:
    events = lifecycle()
    channel, recorder = FakeChannel(), Recorder([])
    await consumer(recorder).process(deliveries(channel, [json.dumps(e).encode() for e in events]))
    assert recorder.batches == [[e["id"] for e in events]]
    assert channel.calls == [("ack", len(events), True)]


async def test_malformed_messages_are_rejected_and_checkpoints_acked_without_chaining() -> None:
    good = lifecycle()[0]
    checkpoint = {**good, "id": str(uuid.uuid4()), "type": "audit.checkpoint"}
    bodies = [b"not json", json.dumps(checkpoint).encode(), json.dumps(good).encode()]
    channel, recorder = FakeChannel(), Recorder([])
    await consumer(recorder).process(deliveries(channel, bodies))
    assert recorder.batches == [[good["id"]]]
    assert channel.calls == [("reject", 1, False), ("ack", 2, False), ("ack", 3, True)]


async def test_a_database_outage_holds_the_batch_instead_of_burning_the_delivery_limit() -> None:
    events = lifecycle()
    outage: list[Exception] = [OSError("connection refused"), asyncpg.CannotConnectNowError("starting up")]
    channel, recorder = FakeChannel(), Recorder(outage)
    await consumer(recorder).process(deliveries(channel, [json.dumps(e).encode() for e in events]))
    assert recorder.batches == [[e["id"] for e in events]]
    assert channel.calls == [("ack", len(events), True)], "nothing may be nacked during an outage"


async def test_an_event_that_breaks_its_batch_is_retried_alone_and_the_others_are_chained() -> None:
    events = lifecycle()
    channel, recorder = FakeChannel(), Recorder([], poison=events[2]["id"])
    await consumer(recorder).process(deliveries(channel, [json.dumps(e).encode() for e in events]))
    assert recorder.batches == [[e["id"]] for i, e in enumerate(events) if i != 2]
    assert ("nack", 3, True) in channel.calls
    assert [c for c in channel.calls if c[0] == "ack"] == [("ack", t, False) for t in (1, 2, 4, 5)]
