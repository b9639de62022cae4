"""Measure the two CEL implementations on PyPI on a typical rule condition (how the engine was chosen).

    pip install cel-python common-expression-language   # cel-python only for this measurement
    python services/policy/scripts/compare_cel.py

Prints, per library, the time to compile the expression and to evaluate it (p50/p99), both with a
context built once and reused (what the engine does within one decision) and with a fresh one.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import cel  # common-expression-language (Rust bindings)
import celpy  # cel-python (pure Python)
from celpy import celtypes

EXPR = (
    "request.duration <= duration('1h') && now.getHours() >= 8"
    " && 'dba' in requester.groups && resource.labels.environment == 'prod'"
)
NOW = datetime(2026, 11, 25, 9, tzinfo=UTC)


def variables() -> dict[str, Any]:
    return {
        "request": {
            "duration": timedelta(minutes=30),
            "role": "rw",
            "resource": "db",
            "reason": "x",
            "ticket": "",
        },
        "requester": {"groups": ["dba", "dev"], "subject": "alice", "attributes": {}},
        "resource": {"labels": {"environment": "prod"}},
        "now": NOW,
    }


def celpy_activation() -> Any:
    plain = {k: v for k, v in variables().items() if k != "now"}
    del plain["request"]["duration"]
    activation = celpy.json_to_cel(plain)
    activation["request"][celtypes.StringType("duration")] = celtypes.DurationType(seconds=1800)
    activation["now"] = celtypes.TimestampType(NOW)
    return activation


def measure(
    name: str,
    compile_one: Callable[[str], Any],
    context: Callable[[], Any],
    evaluate: Callable[[Any, Any], Any],
    n: int,
) -> None:
    started = time.perf_counter()
    programs = [compile_one(EXPR) for _ in range(100)]
    compile_us = (time.perf_counter() - started) / 100 * 1e6
    program, reused = programs[0], context()
    assert bool(evaluate(program, reused)) is True
    warm, fresh = [], []
    for _ in range(n):
        t = time.perf_counter()
        evaluate(program, reused)
        warm.append((time.perf_counter() - t) * 1e6)
    for _ in range(n // 4):
        t = time.perf_counter()
        evaluate(program, context())
        fresh.append((time.perf_counter() - t) * 1e6)
    warm.sort()
    print(
        f"{name:27} compile {compile_us:7.0f} us | eval, context reused p50 {statistics.median(warm):6.1f} us"
        f" p99 {warm[int(n * 0.99)]:6.1f} us | context built + eval p50 {statistics.median(fresh):6.1f} us"
    )


def main() -> None:
    measure(
        "common-expression-language",
        cel.compile,
        lambda: cel.Context(variables()),
        lambda p, c: p.execute(c),
        4000,
    )
    env = celpy.Environment()
    measure(
        "cel-python",
        lambda e: env.program(env.compile(e)),
        celpy_activation,
        lambda p, c: p.evaluate(c),
        1000,
    )


if __name__ == "__main__":
    main()
