"""Measure the lifecycle against running services (`make run`): submit N requests, follow each
to its end, print submit->active latency and revocation lateness (p50, p99, max).

Usage: python scripts/bench_lifecycle.py [--count 200] [--duration 10s]
Defaults match `make run` and examples/ (alice asking for orders_readonly on orders-db).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import datetime
from typing import Any

import httpx


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def follow(
    client: httpx.AsyncClient, url: str, token: str, request_id: str, limit: float
) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        body: dict[str, Any] = (
            await client.get(f"{url}/v1/requests/{request_id}", headers={"Authorization": f"Bearer {token}"})
        ).json()
        if body["state"] in ("ended", "failed", "denied"):
            return body
        await asyncio.sleep(0.5)
    raise TimeoutError(f"request {request_id} did not end in {limit}s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--token", default="alice-developer-token")
    parser.add_argument("--resource", default="orders-db")
    parser.add_argument("--role", default="orders_readonly")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--duration", default="10s")
    args = parser.parse_args()

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=20)) as client:
        started = time.monotonic()
        responses = await asyncio.gather(
            *(
                client.post(
                    f"{args.url}/v1/requests",
                    headers={"Authorization": f"Bearer {args.token}"},
                    json={
                        "resource": args.resource,
                        "role": args.role,
                        "duration": args.duration,
                        "reason": f"benchmark {i}",
                    },
                )
                for i in range(args.count)
            )
        )
        submit_seconds = time.monotonic() - started
        ids = [r.json()["id"] for r in responses if r.status_code == 202]
        finals = await asyncio.gather(*(follow(client, args.url, args.token, i, 300) for i in ids))

    activation_ms, lateness_ms, ended = [], [], 0
    for body in finals:
        if body["state"] != "ended":
            continue
        ended += 1
        created = datetime.fromisoformat(body["created_at"])
        granted = datetime.fromisoformat(body["grant"]["granted_at"])
        activation_ms.append((granted - created).total_seconds() * 1000)
        lateness_ms.append(float(body["grant"]["lateness_ms"]))
    print(
        f"requests: {args.count} submitted in {submit_seconds:.2f}s "
        f"({args.count / submit_seconds:.0f}/s), {ended} ended"
    )
    for name, values in (("submit -> active (ms)", activation_ms), ("revocation lateness (ms)", lateness_ms)):
        if values:
            print(
                f"{name}: p50 {statistics.median(values):.0f}  p99 {percentile(values, 99):.0f}"
                f"  max {max(values):.0f}"
            )


if __name__ == "__main__":
    asyncio.run(main())
