"""How an ended grant's timing reads: early ends as early, whichever producer sent them."""

from __future__ import annotations

from lapse_cli.render import _describe


def test_an_early_end_reads_as_early_not_as_negative_lateness() -> None:
    v1_1 = {"cause": "revoked", "revoked_by": "sam", "lateness_ms": 0, "ended_early_ms": 40 * 86_400_000}
    assert _describe("grant.revoked", v1_1).endswith(", 40 d 0 h before expiry")
    before = {"cause": "released", "lateness_ms": -599_000}
    assert _describe("grant.revoked", before).endswith(", 9 min before expiry")


def test_a_late_end_reads_as_late() -> None:
    assert _describe("grant.revoked", {"cause": "expired", "lateness_ms": 11}).endswith(
        ", 11 ms after expiry"
    )
