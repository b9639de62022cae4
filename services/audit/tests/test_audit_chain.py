"""Unit tests of the audit hash chain (lapse_audit.chain): pure, no database."""

from __future__ import annotations

import dataclasses
import json
import uuid

from lapse_audit.chain import GENESIS, ChainVerifier, StoredEntry, canonical, entry_hash, verify


def _chain(length: int) -> list[StoredEntry]:
    """Entries as lapse_audit.repository.append writes them."""
    entries: list[StoredEntry] = []
    prev = GENESIS
    for seq in range(1, length + 1):
        event_id = str(uuid.UUID(int=seq))
        text = canonical(
            {
                "seq": seq,
                "event_id": event_id,
                "recorded_at": f"2024-05-01T09:00:{seq:02d}+00:00",
                "event": {"id": event_id, "type": "request.submitted", "data": {"reason": f"INC-{seq} ✓"}},
            }
        )
        digest = entry_hash(prev, text)
        entries.append(StoredEntry(seq, event_id, text, prev, digest))
        prev = digest
    return entries


def _rehash(entry: StoredEntry, text: str) -> StoredEntry:
    return dataclasses.replace(entry, entry=text, hash=entry_hash(entry.prev_hash, text))


def test_canonical_json_sorts_keys_drops_spaces_and_keeps_unicode() -> None:
    assert canonical({"b": 1, "a": [1, 2], "c": "é"}) == '{"a":[1,2],"b":1,"c":"é"}'
    assert canonical({"a": 1, "b": 2}) == canonical({"b": 2, "a": 1})


def test_entry_hash_covers_the_previous_hash_and_the_entry() -> None:
    base = entry_hash(GENESIS, "{}")
    assert len(base) == 64
    assert base == entry_hash(GENESIS, "{}")
    assert base != entry_hash("1" * 64, "{}")
    assert base != entry_hash(GENESIS, "{ }")


def test_genesis_is_sixty_four_zeros() -> None:
    assert GENESIS == "0" * 64


def test_an_intact_chain_verifies() -> None:
    entries = _chain(5)
    verdict = verify(entries)
    assert verdict.ok
    assert verdict.entries == 5
    assert verdict.head_hash == entries[-1].hash
    assert verdict.broken_at is None
    assert verdict.problem is None


def test_an_empty_chain_verifies_with_the_genesis_head() -> None:
    verdict = verify([])
    assert verdict.ok
    assert verdict.entries == 0
    assert verdict.head_hash == GENESIS


def test_edited_entry_text_breaks_the_chain_at_that_entry() -> None:
    entries = _chain(5)
    entries[2] = dataclasses.replace(entries[2], entry=entries[2].entry.replace("INC-3", "INC-9"))
    verdict = verify(entries)
    assert not verdict.ok
    assert verdict.broken_at == 3
    assert verdict.problem is not None
    assert "edited" in verdict.problem
    assert verdict.entries == 2
    assert verdict.head_hash == entries[1].hash


def test_edited_entry_with_a_recomputed_hash_breaks_the_chain_at_the_next_entry() -> None:
    entries = _chain(5)
    entries[2] = _rehash(entries[2], entries[2].entry.replace("INC-3", "INC-9"))
    verdict = verify(entries)
    assert not verdict.ok
    assert verdict.broken_at == 4
    assert verdict.problem is not None
    assert "prev_hash" in verdict.problem


def test_wrong_prev_hash_breaks_the_chain_at_that_entry() -> None:
    entries = _chain(4)
    entries[1] = dataclasses.replace(entries[1], prev_hash="f" * 64)
    verdict = verify(entries)
    assert not verdict.ok
    assert verdict.broken_at == 2
    assert verdict.problem is not None
    assert "prev_hash" in verdict.problem


def test_first_entry_must_follow_genesis() -> None:
    entries = _chain(2)
    entries[0] = dataclasses.replace(entries[0], prev_hash="1" * 64)
    verdict = verify(entries)
    assert not verdict.ok
    assert verdict.broken_at == 1


def test_a_gap_in_seq_breaks_the_chain_at_the_entry_after_the_gap() -> None:
    entries = _chain(5)
    del entries[2]  # seq 3 is missing
    verdict = verify(entries)
    assert not verdict.ok
    assert verdict.broken_at == 4
    assert verdict.problem is not None
    assert "expected seq 3" in verdict.problem
    assert verdict.entries == 2


def test_a_chain_not_starting_at_seq_one_is_broken() -> None:
    verdict = verify(_chain(3)[1:])
    assert not verdict.ok
    assert verdict.broken_at == 2


def test_a_swapped_pair_breaks_the_chain_at_the_first_out_of_place_entry() -> None:
    entries = _chain(5)
    entries[1], entries[2] = entries[2], entries[1]  # order: 1, 3, 2, 4, 5
    verdict = verify(entries)
    assert not verdict.ok
    assert verdict.broken_at == 3
    assert verdict.entries == 1


def test_swapped_contents_under_unchanged_seqs_break_the_chain_at_the_first_swapped_row() -> None:
    entries = _chain(5)
    two, three = entries[1], entries[2]
    entries[1] = dataclasses.replace(three, seq=2)
    entries[2] = dataclasses.replace(two, seq=3)
    verdict = verify(entries)
    assert not verdict.ok
    assert verdict.broken_at == 2


def test_row_event_id_not_matching_the_hashed_entry_breaks_the_chain() -> None:
    entries = _chain(4)
    entries[2] = dataclasses.replace(entries[2], event_id=str(uuid.uuid4()))
    verdict = verify(entries)
    assert not verdict.ok
    assert verdict.broken_at == 3
    assert verdict.problem is not None
    assert "row columns" in verdict.problem


def test_hashed_seq_not_matching_the_row_seq_breaks_the_chain() -> None:
    entries = _chain(3)
    body = json.loads(entries[1].entry)
    body["seq"] = 7
    entries[1] = _rehash(entries[1], canonical(body))
    verdict = verify(entries)
    assert not verdict.ok
    assert verdict.broken_at == 2
    assert verdict.problem is not None
    assert "row columns" in verdict.problem


def test_verifier_stops_at_the_first_break() -> None:
    entries = _chain(5)
    entries[1] = dataclasses.replace(entries[1], prev_hash="f" * 64)
    entries[3] = dataclasses.replace(entries[3], prev_hash="e" * 64)
    verifier = ChainVerifier()
    results = [verifier.feed(e) for e in entries]
    assert results == [True, False, False, False, False]
    assert verifier.verdict().broken_at == 2
