"""The hash chain: canonical JSON entries, each hash covering the previous hash. Pure."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


def canonical(value: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(prev_hash: str, entry: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{entry}".encode()).hexdigest()


@dataclass(frozen=True)
class StoredEntry:
    seq: int
    event_id: str
    entry: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Verdict:
    ok: bool
    entries: int
    head_hash: str
    broken_at: int | None = None
    problem: str | None = None


class ChainVerifier:
    """Checks entries one by one, in seq order; stops at the first that does not hold."""

    def __init__(self) -> None:
        self._prev, self._expected, self._count = GENESIS, 1, 0
        self._broken: tuple[int, str] | None = None

    def feed(self, e: StoredEntry) -> bool:
        """False once the chain is broken (further entries are not looked at)."""
        if self._broken is not None:
            return False
        problem = self._check(e)
        if problem is not None:
            self._broken = (e.seq, problem)
            return False
        self._prev, self._expected, self._count = e.hash, self._expected + 1, self._count + 1
        return True

    def _check(self, e: StoredEntry) -> str | None:
        if e.seq != self._expected:
            return f"sequence gap: expected seq {self._expected}, found {e.seq}"
        if e.prev_hash != self._prev:
            return "prev_hash does not match the hash of the entry before"
        if entry_hash(self._prev, e.entry) != e.hash:
            return "entry content does not match its hash (edited?)"
        body = json.loads(e.entry)
        if body.get("seq") != e.seq or body.get("event_id") != e.event_id:
            return "row columns do not match the hashed entry"
        return None

    def verdict(self) -> Verdict:
        if self._broken is None:
            return Verdict(True, self._count, self._prev)
        return Verdict(False, self._count, self._prev, *self._broken)


def verify(entries: Iterable[StoredEntry]) -> Verdict:
    verifier = ChainVerifier()
    for e in entries:
        if not verifier.feed(e):
            break
    return verifier.verdict()
