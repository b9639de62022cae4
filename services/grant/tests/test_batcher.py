"""Unit tests of the Batcher that groups expiries into revocation batches: pure asyncio, no I/O."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from lapse_grant.handlers import Batcher, RevokeResult


class Recorder:
    """A batch runner that records each batch and finishes it only when told to."""

    def __init__(self) -> None:
        self.batches: list[list[uuid.UUID]] = []
        self.release = asyncio.Event()

    async def run(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, RevokeResult]:
        self.batches.append(ids)
        await self.release.wait()
        return {i: RevokeResult(i, True) for i in ids}


async def test_revocations_gather_while_every_slot_is_busy_and_go_as_one_batch() -> None:
    runner = Recorder()
    batcher = Batcher(runner.run, wait=0.001, size=50, slots=1)
    first = uuid.uuid4()
    waiting = [asyncio.create_task(batcher.revoke(first))]
    await asyncio.sleep(0.01)
    assert runner.batches == [[first]]
    later = [uuid.uuid4() for _ in range(120)]
    for grant_id in later:  # arriving one by one, well apart from the batching wait
        waiting.append(asyncio.create_task(batcher.revoke(grant_id)))
        await asyncio.sleep(0.0005)
    assert len(runner.batches) == 1, "a batch started while the only slot was busy"
    runner.release.set()
    results = await asyncio.gather(*waiting)
    assert all(r.revoked for r in results)
    assert [r.grant_id for r in results] == [first, *later]
    # the backlog went in full batches, in arrival order, once the slot was free
    assert [len(b) for b in runner.batches] == [1, 50, 50, 20]
    assert [i for b in runner.batches[1:] for i in b] == later


async def test_with_a_free_slot_a_batch_goes_after_the_wait_without_filling_up() -> None:
    runner = Recorder()
    runner.release.set()
    batcher = Batcher(runner.run, wait=0.001, size=50, slots=2)
    ids = [uuid.uuid4(), uuid.uuid4()]
    results = await asyncio.gather(*(batcher.revoke(i) for i in ids))
    assert [r.revoked for r in results] == [True, True]
    assert runner.batches == [ids]


async def test_a_failing_batch_fails_its_waiters_and_the_next_batch_still_runs() -> None:
    calls: list[list[uuid.UUID]] = []

    async def run(ids: list[uuid.UUID]) -> dict[uuid.UUID, RevokeResult]:
        calls.append(ids)
        if len(calls) == 1:
            raise OSError("database away")
        return {i: RevokeResult(i, True) for i in ids}

    batcher = Batcher(run, wait=0.001, slots=1)
    with pytest.raises(OSError, match="database away"):
        await batcher.revoke(uuid.uuid4())
    assert (await batcher.revoke(uuid.uuid4())).revoked
    assert len(calls) == 2
