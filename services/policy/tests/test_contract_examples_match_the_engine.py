"""The contract's policy.decided and request.denied examples are what the example policies decide."""

from __future__ import annotations

from pathlib import Path

from lapse_policy.engine import Policy
from lapse_shared.events import PolicyDecided, RequestDenied, RequestSubmitted
from lapse_shared.events.examples import event_examples

ROOT = Path(__file__).resolve().parents[3]


def test_alice_write_request_is_decided_as_the_example_says() -> None:
    examples = event_examples()
    submitted = examples["request.submitted"].event
    decided = examples["policy.decided"].event
    assert isinstance(submitted, RequestSubmitted)
    assert isinstance(decided, PolicyDecided)

    actual = Policy.load(ROOT / "examples" / "policies").decide(submitted.data, now=submitted.time)

    # The version is a hash of today's files; everything else is what a reader learns from.
    assert actual.model_copy(update={"policy_version": decided.data.policy_version}) == decided.data


def test_carol_write_request_is_denied_with_the_example_reasons() -> None:
    denied = event_examples()["request.denied"].event
    assert isinstance(denied, RequestDenied)
    asked = event_examples()["request.submitted"].event
    assert isinstance(asked, RequestSubmitted)
    carol = asked.data.model_copy(
        update={
            "request_id": denied.data.request_id,
            "requester": asked.data.requester.model_copy(
                update={"subject": "carol", "groups": ["contractors"]}
            ),
        }
    )

    actual = Policy.load(ROOT / "examples" / "policies").decide(carol, now=denied.time)

    assert (actual.outcome.value, actual.rule, actual.reasons) == (
        "deny",
        denied.data.rule,
        denied.data.reasons,
    )
