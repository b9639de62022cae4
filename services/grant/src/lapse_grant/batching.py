"""Gathering expiries that fall due together into revocation batches: pure asyncio, no I/O."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

BATCH_SIZE = 200
"""Most grants revoked in one transaction."""


@dataclass(frozen=True)
class RevokeResult:
    grant_id: uuid.UUID
    revoked: bool
    error: str | None = None


class Batcher:
    """Gathers the revocations that fall due within a few milliseconds and runs them as one batch.

    Each caller awaits its own result; a batch goes as soon as it is full or `wait` has passed,
    and a batch slot is free. While every slot is busy, revocations keep gathering and the next
    free slot takes them at once (up to `size`): a batch costs about the same round trips for one
    grant as for 200, so a backlog must be cleared in big batches, not queued as many small ones.
    """

    def __init__(
        self,
        run: Callable[[list[uuid.UUID]], Awaitable[dict[uuid.UUID, RevokeResult]]],
        *,
        wait: float = 0.005,
        size: int = BATCH_SIZE,
        slots: int = 4,
    ) -> None:
        self._run, self._wait, self._size = run, wait, size
        self._pending: dict[uuid.UUID, asyncio.Future[RevokeResult]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # A few batches at once: more would only queue on the connection pool.
        self._slots = slots

    async def revoke(self, grant_id: uuid.UUID) -> RevokeResult:
        future = self._pending.get(grant_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._pending[grant_id] = future
        if len(self._pending) >= self._size:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._wait, self._flush)
        return await asyncio.shield(future)

    def _flush(self) -> None:
        """Start batches of what is pending while slots are free; the rest waits for a slot."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending and len(self._tasks) < self._slots:
            batch = {i: self._pending.pop(i) for i in list(self._pending)[: self._size]}
            task = asyncio.create_task(self._complete(batch))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._flush()  # what gathered meanwhile has waited long enough

    async def _complete(self, batch: dict[uuid.UUID, asyncio.Future[RevokeResult]]) -> None:
        try:
            results = await self._run(list(batch))
        except Exception as exc:  # noqa: BLE001 - every waiter gets the error, the message is retried
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc)
            return
        for grant_id, future in batch.items():
            if not future.done():
                future.set_result(results.get(grant_id, RevokeResult(grant_id, False, "not active")))
