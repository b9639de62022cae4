"""Verify the chain and its signed checkpoints together, from any source of entries. Pure.

The chain alone shows an edit that did not recompute hashes. Checkpoints add what the chain
cannot: a rewrite that recomputed every hash after an edit, or entries cut off the end, no longer
match a head that was signed (and copied outside) before.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from lapse_audit.chain import ChainVerifier, StoredEntry, Verdict
from lapse_audit.checkpoints import Checkpoint, check_signature, trusted_keys


@dataclass(frozen=True)
class CheckpointFinding:
    seq: int
    signed_at: str
    problem: str


@dataclass
class Report:
    chain: Verdict
    checkpoints_checked: int = 0
    checkpoints_valid: int = 0
    findings: list[CheckpointFinding] = field(default_factory=list)
    latest_valid_checkpoint: int | None = None

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.findings


class Verifier:
    """Feed entries in seq order; checkpoints are compared as their seq goes by."""

    def __init__(self, checkpoints: Iterable[Checkpoint], keys: list[Ed25519PublicKey]) -> None:
        self._chain = ChainVerifier()
        self._trusted = trusted_keys(keys)
        self._pending: dict[int, list[Checkpoint]] = {}
        self._report = Report(chain=self._chain.verdict())
        for cp in checkpoints:
            self._report.checkpoints_checked += 1
            problem = check_signature(cp, self._trusted)
            if problem is not None:
                self._finding(cp, problem)
            elif cp.seq == 0:
                self._matched(cp)  # signed over the empty chain: nothing to compare
            else:
                self._pending.setdefault(cp.seq, []).append(cp)

    def feed(self, entry: StoredEntry) -> bool:
        if not self._chain.feed(entry):
            return False
        for cp in self._pending.pop(entry.seq, []):
            if cp.head_hash == entry.hash:
                self._matched(cp)
            else:
                self._finding(
                    cp,
                    f"the chain's hash at seq {entry.seq} is {entry.hash[:16]}…, the signed checkpoint"
                    f" says {cp.head_hash[:16]}…: the chain up to seq {entry.seq} was rewritten after"
                    " it was signed",
                )
        return True

    def report(self) -> Report:
        verdict = self._chain.verdict()
        self._report.chain = verdict
        for seq in sorted(self._pending):
            for cp in self._pending[seq]:
                if verdict.ok:
                    problem = (
                        f"signed when the chain reached seq {seq}, but it now ends at seq"
                        f" {verdict.entries}: entries were removed from the end"
                    )
                else:
                    problem = f"not comparable: the chain is broken at seq {verdict.broken_at}, before it"
                self._finding(cp, problem)
        self._pending.clear()
        return self._report

    def _matched(self, cp: Checkpoint) -> None:
        self._report.checkpoints_valid += 1
        latest = self._report.latest_valid_checkpoint
        self._report.latest_valid_checkpoint = cp.seq if latest is None else max(latest, cp.seq)

    def _finding(self, cp: Checkpoint, problem: str) -> None:
        self._report.findings.append(CheckpointFinding(cp.seq, cp.signed_at.isoformat(), problem))


def verify_all(
    entries: Iterable[StoredEntry], checkpoints: Iterable[Checkpoint], keys: list[Ed25519PublicKey]
) -> Report:
    verifier = Verifier(checkpoints, keys)
    for entry in entries:
        if not verifier.feed(entry):
            break
    return verifier.report()
