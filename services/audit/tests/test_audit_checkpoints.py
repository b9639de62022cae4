"""Signed checkpoints: a rewrite that recomputes every hash, or a cut tail, is still caught."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lapse_audit.chain import GENESIS, StoredEntry, canonical, entry_hash
from lapse_audit.checkpoints import (
    CheckpointSigner,
    check_signature,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_b64,
    trusted_keys,
)
from lapse_audit.verification import verify_all

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def chain(texts: list[str]) -> list[StoredEntry]:
    entries, prev = [], GENESIS
    for seq, text in enumerate(texts, 1):
        body = canonical({"seq": seq, "event_id": f"e{seq}", "event": {"note": text}})
        digest = entry_hash(prev, body)
        entries.append(StoredEntry(seq, f"e{seq}", body, prev, digest))
        prev = digest
    return entries


@pytest.fixture
def signer() -> CheckpointSigner:
    return CheckpointSigner(Ed25519PrivateKey.generate())


def test_an_intact_chain_with_its_checkpoints_verifies(signer: CheckpointSigner) -> None:
    entries = chain(["a", "b", "c", "d"])
    cps = [signer.sign(2, entries[1].hash, NOW), signer.sign(4, entries[3].hash, NOW)]
    result = verify_all(entries, cps, [signer.public_key])
    assert result.ok
    assert (result.checkpoints_checked, result.checkpoints_valid) == (2, 2)
    assert result.latest_valid_checkpoint == 4


def test_a_chain_rewritten_with_recomputed_hashes_fails_at_the_signed_checkpoint(
    signer: CheckpointSigner,
) -> None:
    original = chain(["a", "b", "c", "d"])
    cps = [signer.sign(3, original[2].hash, NOW)]
    forged = chain(["a", "B!", "c", "d"])  # consistent on its own
    result = verify_all(forged, cps, [signer.public_key])
    assert result.chain.ok, "the chain alone cannot see a full rewrite"
    assert not result.ok
    [finding] = result.findings
    assert finding.seq == 3
    assert "rewritten" in finding.problem


def test_entries_cut_off_the_end_are_caught_by_a_later_checkpoint(signer: CheckpointSigner) -> None:
    entries = chain(["a", "b", "c", "d"])
    cps = [signer.sign(4, entries[3].hash, NOW)]
    result = verify_all(entries[:2], cps, [signer.public_key])
    assert not result.ok
    assert "removed from the end" in result.findings[0].problem


def test_an_altered_checkpoint_or_an_untrusted_key_is_refused(signer: CheckpointSigner) -> None:
    entries = chain(["a", "b"])
    cp = signer.sign(2, entries[1].hash, NOW)
    trusted = trusted_keys([signer.public_key])
    assert check_signature(cp, trusted) is None
    moved = dataclasses.replace(cp, seq=1, head_hash=entries[0].hash)
    assert "does not match" in (check_signature(moved, trusted) or "")
    other = CheckpointSigner(Ed25519PrivateKey.generate()).sign(2, entries[1].hash, NOW)
    assert "not a trusted key" in (check_signature(other, trusted) or "")
    assert not verify_all(entries, [other], [signer.public_key]).ok


def test_a_broken_chain_reports_later_checkpoints_as_not_comparable(signer: CheckpointSigner) -> None:
    entries = chain(["a", "b", "c"])
    cps = [signer.sign(3, entries[2].hash, NOW)]
    entries[1] = dataclasses.replace(entries[1], entry=entries[1].entry.replace("b", "x"))
    result = verify_all(entries, cps, [signer.public_key])
    assert result.chain.broken_at == 2
    assert "not comparable" in result.findings[0].problem


def test_keys_load_from_pem_and_base64_and_errors_do_not_echo_the_secret() -> None:
    key = Ed25519PrivateKey.generate()
    pem = private_key_pem(key)
    assert CheckpointSigner(load_private_key(pem)).key_id == CheckpointSigner(key).key_id
    assert load_public_key(public_key_b64(key.public_key())) == key.public_key()
    with pytest.raises(ValueError, match="not an Ed25519") as caught:
        load_private_key("c2VjcmV0LXNlZWQtdGhhdC1pcy13cm9uZw==")
    assert "c2VjcmV0" not in str(caught.value)
    assert "c2VjcmV0" not in repr(caught.value.__cause__)
    assert "PRIVATE" not in repr(CheckpointSigner(key))
