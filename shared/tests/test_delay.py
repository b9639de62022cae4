"""Unit tests of the delay cascade: routing keys, rounding, and a pure simulation of the topology."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from lapse_shared.messaging import delay
from lapse_shared.messaging.delay import (
    DELIVER,
    LEVELS,
    MAX_DELAY_SECONDS,
    entry_exchange,
    level_name,
    routing_key,
    whole_seconds_until,
)

REAL_KEY = "grant.expire"


def _bits(key: str) -> str:
    words = key.split(".")
    return "".join(words[:LEVELS])


def test_levels_cover_more_than_eight_years() -> None:
    assert LEVELS == 28
    assert MAX_DELAY_SECONDS == 2**28 - 1
    assert MAX_DELAY_SECONDS > 8 * 365 * 86400


def test_level_names_are_zero_padded_and_entry_is_the_top_level() -> None:
    assert level_name(0) == "lapse.delay.00"
    assert level_name(7) == "lapse.delay.07"
    assert entry_exchange() == "lapse.delay.27"


def test_routing_key_for_zero_delay_is_all_zero_bits_then_the_real_key() -> None:
    key = routing_key(0, REAL_KEY)
    assert key == ".".join(["0"] * LEVELS) + ".grant.expire"


def test_routing_key_for_one_second_sets_only_the_last_bit() -> None:
    assert _bits(routing_key(1, REAL_KEY)) == "0" * 27 + "1"


def test_routing_key_for_five_seconds_is_binary_101_most_significant_first() -> None:
    assert _bits(routing_key(5, REAL_KEY)) == "0" * 25 + "101"


def test_routing_key_for_two_to_the_27_sets_only_the_first_bit() -> None:
    assert _bits(routing_key(2**27, REAL_KEY)) == "1" + "0" * 27


def test_routing_key_has_one_word_per_level_before_the_real_key() -> None:
    words = routing_key(12345, REAL_KEY).split(".")
    assert len(words) == LEVELS + 2
    assert all(w in {"0", "1"} for w in words[:LEVELS])
    assert words[LEVELS:] == ["grant", "expire"]
    assert int(_bits(routing_key(12345, REAL_KEY)), 2) == 12345


@pytest.mark.parametrize("over", [MAX_DELAY_SECONDS + 1, 2**28, 2**40])
def test_routing_key_clamps_delays_above_the_maximum(over: int) -> None:
    assert routing_key(over, REAL_KEY) == routing_key(MAX_DELAY_SECONDS, REAL_KEY)
    assert _bits(routing_key(over, REAL_KEY)) == "1" * LEVELS


def test_routing_key_clamps_negative_delays_to_zero() -> None:
    assert routing_key(-5, REAL_KEY) == routing_key(0, REAL_KEY)


NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("due_in", "expected"),
    [
        (timedelta(seconds=10), 10),
        (timedelta(seconds=10, milliseconds=999), 10),
        (timedelta(seconds=0, milliseconds=999), 0),
        (timedelta(seconds=59, microseconds=1), 59),
        (timedelta(0), 0),
        (timedelta(days=1), 86400),
    ],
)
def test_whole_seconds_until_rounds_down(due_in: timedelta, expected: int) -> None:
    assert whole_seconds_until(NOW + due_in, NOW) == expected


@pytest.mark.parametrize("overdue", [timedelta(milliseconds=1), timedelta(seconds=1), timedelta(days=3)])
def test_whole_seconds_until_is_never_negative(overdue: timedelta) -> None:
    assert whole_seconds_until(NOW - overdue, NOW) == 0


# --- a pure-Python model of the cascade's topic routing -----------------------------------------


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: `*` is exactly one word, `#` is zero or more words."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        head, rest = p[0], p[1:]
        if head == "#":
            return any(match(rest, k[i:]) for i in range(len(k) + 1))
        if not k:
            return False
        return (head == "*" or head == k[0]) and match(rest, k[1:])

    return match(pattern.split("."), key.split("."))


def test_topic_matcher_itself() -> None:
    assert topic_matches("*.1.#", "0.1")
    assert topic_matches("*.1.#", "0.1.a.b")
    assert not topic_matches("*.1.#", "1.0.a")
    assert not topic_matches("*.1.#", "1")
    assert topic_matches("#.grant.expire", "grant.expire")
    assert topic_matches("#.grant.expire", "0.1.grant.expire")
    assert not topic_matches("#.grant.expire", "0.1.grant.expired")


@dataclass(frozen=True)
class Binding:
    pattern: str
    destination: str  # "queue:<name>" or "exchange:<name>"


def cascade_bindings() -> dict[str, list[Binding]]:
    """Bindings as declare_cascade makes them, from delay._pattern; plus the delivery binding."""
    bindings: dict[str, list[Binding]] = {DELIVER: [Binding("#." + REAL_KEY, "queue:consumer")]}
    lower = DELIVER
    for level in range(LEVELS):
        name = level_name(level)
        bindings[name] = [
            Binding(delay._pattern(level, "1"), f"queue:{name}"),
            Binding(delay._pattern(level, "0"), f"exchange:{lower}"),
        ]
        lower = name
    return bindings


def dead_letter_exchange(queue: str) -> str:
    """Each level queue dead-letters into the exchange below its own level."""
    level = int(queue.rsplit(".", 1)[1])
    return DELIVER if level == 0 else level_name(level - 1)


def simulate(delay_seconds: int, *, enter_at_top: bool = False) -> tuple[int, list[str]]:
    """Follow one message from its entry exchange to the consumer; (seconds waited, queues)."""
    key = routing_key(delay_seconds, REAL_KEY)
    bindings = cascade_bindings()
    exchange, waited = entry_exchange(None if enter_at_top else delay_seconds), 0
    queues: list[str] = []
    for _ in range(4 * LEVELS):
        targets = [b.destination for b in bindings[exchange] if topic_matches(b.pattern, key)]
        assert len(targets) == 1, f"{exchange} routes {key} to {targets}"
        kind, name = targets[0].split(":", 1)
        if kind == "exchange":
            exchange = name
        elif name == "consumer":
            return waited, queues
        else:
            level = int(name.rsplit(".", 1)[1])
            waited += 2**level
            queues.append(name)
            exchange = dead_letter_exchange(name)
    raise AssertionError("the message never left the cascade")


@pytest.mark.parametrize(
    "seconds",
    [0, 1, 2, 3, 5, 7, 8, 59, 60, 1800, 3600, 86399, 86400, 1_000_003, 2**27 - 1, 2**27, MAX_DELAY_SECONDS],
)
def test_cascade_holds_a_message_exactly_its_delay(seconds: int) -> None:
    waited, _ = simulate(seconds)
    assert waited == seconds


@pytest.mark.parametrize("seconds", [0, 1, 5, 3600, 86400, 2**27, MAX_DELAY_SECONDS, MAX_DELAY_SECONDS + 9])
def test_entering_at_the_highest_set_bit_holds_a_message_as_the_top_level_does(seconds: int) -> None:
    assert simulate(seconds) == simulate(seconds, enter_at_top=True)


def test_a_delay_enters_at_the_level_of_its_highest_set_bit() -> None:
    assert entry_exchange() == level_name(LEVELS - 1)
    assert entry_exchange(0) == DELIVER
    assert entry_exchange(1) == level_name(0)
    assert entry_exchange(86_400) == level_name(16)
    assert entry_exchange(2**LEVELS + 5) == level_name(LEVELS - 1)


def test_cascade_visits_one_queue_per_set_bit_from_the_top_down() -> None:
    _, queues = simulate(5)
    assert queues == [level_name(2), level_name(0)]
    _, queues = simulate(2**27)
    assert queues == [level_name(27)]


def test_cascade_with_zero_delay_goes_straight_to_delivery() -> None:
    assert simulate(0) == (0, [])


def test_cascade_caps_delays_beyond_the_maximum() -> None:
    waited, queues = simulate(MAX_DELAY_SECONDS + 1000)
    assert waited == MAX_DELAY_SECONDS
    assert len(queues) == LEVELS


def test_each_level_pattern_tests_its_own_word_of_the_key() -> None:
    for level in range(LEVELS):
        one, zero = delay._pattern(level, "1"), delay._pattern(level, "0")
        key = routing_key(2**level, REAL_KEY)
        assert topic_matches(one, key)
        assert not topic_matches(zero, key)
        for other in range(LEVELS):
            if other != level:
                assert topic_matches(delay._pattern(other, "0"), key)
