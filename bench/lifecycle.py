"""End-to-end lifecycle benchmark: open-loop load on the four services, submit -> grant active.

Run from the repository root: `python -m bench.lifecycle [--quick]` (see bench/README.md).

It starts the four services as separate processes (as deployed; `--replicas grant=2` for more
than one of a service) on a vhost, database and PostgreSQL target of its own, with a policy that
auto-approves the benchmark's resource. For each path (`POST /v1/requests`, and `request.submit`
commands on `lapse.commands`) it offers load at fixed rates, each for a fixed time, open-loop: a
request goes out at its scheduled moment whether or not earlier ones finished, so queueing shows
in the latency. Latency is from the *scheduled* send time to the `grant.activated` event's
arrival at the benchmark (a queue bound to `lapse.events`), which comes after the membership
exists in the target. In the same run it measures the broker's and the database's raw limits,
and the broker deliveries one lifecycle costs (from the management API's per-queue counters).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aio_pika
import httpx

from bench.environment import RESOURCE, Deployment, Services
from bench.http_client import HttpPool
from bench.raw import (
    broker_confirmed_rate,
    confirm_latency,
    cpu_seconds,
    database_commit_rate,
    infrastructure_cpu_seconds,
    load_average,
    memory_mib,
)

P99_LIMIT_MS = 250.0
OWN_QUEUES = ("bench.",)
HOPS = [
    "request.submitted",
    "policy.decided",
    "request.approved",
]  # the benchmark's own queues, not counted as Lapse's deliveries


def percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Observer:
    """Arrival time (monotonic) of each request's outcome event, by request id."""

    activated: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    # With --hops: arrival of each earlier event of the lifecycle, to show where the time goes.
    hops: dict[str, dict[str, float]] = field(default_factory=dict)

    async def start(self, channel: aio_pika.abc.AbstractChannel, hops: bool) -> None:
        events = await channel.get_exchange("lapse.events")
        queue = await channel.declare_queue(f"bench.events.{uuid.uuid4().hex[:6]}", exclusive=True)
        keys = ["grant.activated", "grant.failed", "request.rejected", "request.denied"]
        if hops:
            keys += HOPS
            self.hops = {key: {} for key in HOPS}
        for key in keys:
            await queue.bind(events, key)
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        now = time.monotonic()
        event = json.loads(message.body)
        data = event.get("data", {})
        kind = event.get("type")
        if kind in self.hops:
            self.hops[kind].setdefault(str(data.get("request_id")), now)
        elif kind == "grant.activated":
            self.activated.setdefault(str(data["request_id"]), now)
        else:
            key = str(data.get("request_id") or data.get("command_id"))
            self.failed[key] = f"{event.get('type')}: {data.get('reason', '')}"


@dataclass
class Sent:
    scheduled: float
    sent: float = math.nan
    answered: float = math.nan  # HTTP response, or the broker's confirm of the command
    request_id: str | None = None
    error: str | None = None


async def settle(observer: Observer, offered: list[Sent], limit_seconds: float) -> int:
    """Wait until every request offered so far ended (or `limit_seconds` passed): a path that fell behind
    must not leave its backlog to the next path's first step. Returns how many are still open."""
    deadline = time.monotonic() + limit_seconds

    def still_open() -> int:
        return sum(
            1
            for s in offered
            if s.error is None
            and s.request_id is not None
            and s.request_id not in observer.activated
            and s.request_id not in observer.failed
        )

    while (left := still_open()) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    return left


def process_stats(services: Services) -> dict[str, tuple[float, float]]:
    return {r.name: (time.monotonic(), cpu_seconds(r.process.pid)) for r in services.running}


def cpu_snapshot(services: Services) -> dict[str, float]:
    """CPU seconds so far: each service process, the broker, the database, this benchmark,
    and the machine (busy and total)."""
    return {
        **{r.name: cpu_seconds(r.process.pid) for r in services.running},
        **infrastructure_cpu_seconds(),
        "benchmark": cpu_seconds(os.getpid()),
    }


def cpu_per_lifecycle(before: dict[str, float], after: dict[str, float], lifecycles: int) -> dict[str, Any]:
    """Where the machine's CPU went over a step: milliseconds of CPU per request offered, by
    process group, and how busy the machine was. Less noisy than latency on a shared box."""
    spent = {k: after[k] - before[k] for k in after}
    total, busy = spent.pop("machine_total"), spent.pop("machine_busy")
    per = {k: round(1000 * v / lifecycles, 2) for k, v in spent.items()}
    per["all_processes"] = round(1000 * busy / lifecycles, 2)
    busy_percent = round(100 * busy / total, 1) if total else math.nan
    return {"ms_per_lifecycle": per, "machine_busy_percent": busy_percent}


async def run_step(
    path: str,
    rate: float,
    seconds: float,
    send: Callable[[int, Sent], Coroutine[Any, Any, None]],
    observer: Observer,
    services: Services,
    drain: float,
    offered: list[Sent],
) -> dict[str, Any]:
    n = max(1, round(rate * seconds))
    before = process_stats(services)
    cpu_before = cpu_snapshot(services)
    load_before = load_average()
    start = time.monotonic() + 0.05
    sends = [Sent(start + i / rate) for i in range(n)]
    offered.extend(sends)
    tasks: set[asyncio.Task[None]] = set()
    for i, item in enumerate(sends):
        delay = item.scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send(i, item))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    end_of_sending = time.monotonic()
    # Backlog: requests offered by now that are not active yet. A system that keeps up has only
    # the ones of the last few hundred milliseconds in flight.
    backlog = sum(1 for s in sends if s.request_id is None or s.request_id not in observer.activated)
    after = process_stats(services)  # CPU over the offered-load interval only, not the drain
    cpu = cpu_per_lifecycle(cpu_before, cpu_snapshot(services), n)
    deadline = end_of_sending + drain
    while time.monotonic() < deadline and (
        tasks
        or any(
            s.error is None
            and (s.request_id is None or s.request_id not in observer.activated)
            and (s.request_id not in observer.failed)
            for s in sends
        )
    ):
        await asyncio.sleep(0.1)
    latencies = [
        (observer.activated[s.request_id] - s.scheduled) * 1000
        for s in sends
        if s.request_id is not None and s.request_id in observer.activated
    ]
    hops = {
        kind: round(
            percentile(
                [(seen[s.request_id] - s.scheduled) * 1000 for s in sends if s.request_id in seen], 50
            ),
            1,
        )
        for kind, seen in observer.hops.items()
    }
    hops["answered"] = round(
        percentile([(s.answered - s.scheduled) * 1000 for s in sends if not math.isnan(s.answered)], 50), 1
    )
    lags = [(s.sent - s.scheduled) * 1000 for s in sends if not math.isnan(s.sent)]
    errors = [s.error for s in sends if s.error] + [
        observer.failed[s.request_id] for s in sends if s.request_id in observer.failed
    ]
    arrivals = [observer.activated[s.request_id] for s in sends if s.request_id in observer.activated]
    span = (max(arrivals) - start) if arrivals else math.nan
    p99 = percentile(latencies, 99)
    backlog_limit = max(5, math.ceil(rate * P99_LIMIT_MS / 1000))
    processes = {}
    for replica in services.running:
        (t0, c0), (t1, c1) = before[replica.name], after[replica.name]
        processes[replica.name] = {
            "cpu_percent": round(100 * (c1 - c0) / (t1 - t0), 1),
            **memory_mib(replica.process.pid),
        }
    step = {
        "path": path,
        "rate": rate,
        "seconds": seconds,
        "offered": n,
        "activated": len(latencies),
        "lost": n - len(latencies),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "throughput_per_s": round(len(latencies) / span, 1) if span == span and span > 0 else 0.0,
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(p99, 1),
        "max_ms": round(max(latencies), 1) if latencies else math.nan,
        "hop_arrival_p50_ms": hops,
        "send_lag_p99_ms": round(percentile(lags, 99), 1),
        "backlog_at_end": backlog,
        "backlog_limit": backlog_limit,
        "load_average": [load_before, load_average()],
        "processes": processes,
        "cpu": cpu,
    }
    step["sustainable"] = bool(
        step["lost"] == 0 and step["errors"] == 0 and p99 < P99_LIMIT_MS and backlog <= backlog_limit
    )
    return step


class Management:
    """Per-queue delivery counters from the management API (refreshed every ~5 s)."""

    def __init__(self, amqp: str, vhost: str) -> None:
        parts = urlsplit(amqp)
        self._url = f"http://{parts.hostname}:15672/api/queues/{quote(vhost, safe='')}"
        self._auth = (parts.username or "guest", parts.password or "guest")

    def deliveries(self) -> dict[str, int]:
        rows = httpx.get(
            self._url, auth=self._auth, params={"columns": "name,message_stats"}, timeout=10
        ).json()
        return {
            r["name"]: int(r.get("message_stats", {}).get("deliver_get", 0))
            for r in rows
            if not r["name"].startswith(OWN_QUEUES)
        }


async def deliveries_per_lifecycle(
    management: Management, before: dict[str, int], lifecycles: int
) -> dict[str, Any]:
    await asyncio.sleep(6)  # the management API's statistics lag by up to its 5 s interval
    after = management.deliveries()
    per_queue = {
        name: round((count - before.get(name, 0)) / lifecycles, 2)
        for name, count in sorted(after.items())
        if count - before.get(name, 0) > 0
    }
    return {"per_queue": per_queue, "total": round(sum(per_queue.values()), 2)}


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Lapse lifecycle, submit -> grant active ({result['started_at']})")
    for column in ("path", "rate/s", "done/s", "p50 ms", "p99 ms", "max ms", "lost", "backlog", "ok", "load"):
        table.add_column(column, justify="right")
    for s in result["steps"]:
        table.add_row(
            s["path"],
            f"{s['rate']:g}",
            f"{s['throughput_per_s']:g}",
            f"{s['p50_ms']:.0f}",
            f"{s['p99_ms']:.0f}",
            f"{s['max_ms']:.0f}",
            str(s["lost"]),
            str(s["backlog_at_end"]),
            "yes" if s["sustainable"] else "NO",
            f"{s['load_average'][1][0]:.1f}",
        )
    console = Console(width=120)
    console.print(table)
    procs = Table(title="Per process: peak RSS (MiB), CPU % at the highest sustainable step")
    procs.add_column("process")
    procs.add_column("peak RSS", justify="right")
    procs.add_column("CPU %", justify="right")
    for name, p in result["processes"].items():
        procs.add_row(name, f"{p['peak_rss_mib']:.0f}", f"{p['cpu_percent']:.0f}")
    console.print(procs)
    for line in result["summary"]:
        console.print(line)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="10,25,50,100,200,300,400", help="offered rates, req/s, in order")
    parser.add_argument("--seconds", type=float, default=20, help="length of each rate step")
    parser.add_argument("--paths", default="http,amqp", help="http, amqp or both")
    parser.add_argument("--replicas", default="", help="e.g. grant=2,request=2 (default one of each)")
    parser.add_argument("--drain", type=float, default=15, help="seconds to wait for stragglers after a step")
    parser.add_argument("--raw-seconds", type=float, default=8, help="length of each raw limit measurement")
    parser.add_argument("--subjects", type=int, default=100, help="distinct requesters (member roles)")
    parser.add_argument("--log-level", default="INFO", help="the services' LAPSE_LOG_LEVEL (deployed: INFO)")
    parser.add_argument(
        "--hops", action="store_true", help="also time the arrival of each earlier event (p50 per hop)"
    )
    parser.add_argument("--keep-going", action="store_true", help="run every rate even after one fails")
    parser.add_argument("--quick", action="store_true", help="rates 50,200 for 5 s each, 3 s raw limits")
    parser.add_argument("--out", type=Path, help="JSON results (default bench-lifecycle-<time>.json)")
    args = parser.parse_args()
    if args.quick:
        args.rates, args.seconds, args.raw_seconds, args.drain = "50,200", 5.0, 3.0, 10.0
    rates = [float(r) for r in args.rates.split(",")]
    paths = [p.strip() for p in args.paths.split(",")]
    replicas = {k: int(v) for k, v in (kv.split("=") for kv in args.replicas.split(",") if kv)}
    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = args.out or Path(f"bench-lifecycle-{started_at.replace(':', '')}.json")

    deployment = Deployment(subjects=args.subjects)
    print(f"setting up {deployment.vhost} / {deployment.database} in {deployment.workdir}", flush=True)
    await deployment.create()
    services = Services(deployment.env(args.log_level), deployment.workdir, replicas)
    result: dict[str, Any] = {"started_at": started_at, "cpus": __import__("os").cpu_count()}
    try:
        services.start()
        print("services up: " + ", ".join(r.name for r in services.running), flush=True)
        result["raw"] = {
            "broker": await broker_confirmed_rate(deployment.amqp_url, args.raw_seconds),
            # The same one message at a time: what the broker costs when nothing batches.
            "broker_one_at_a_time": await broker_confirmed_rate(deployment.amqp_url, args.raw_seconds, 1),
            "database": await database_commit_rate(deployment.database_url, args.raw_seconds),
            "confirm_latency": await confirm_latency(deployment.amqp_url),
            "load_average": load_average(),
        }
        print(f"raw limits: {result['raw']}", flush=True)
        connection = await aio_pika.connect(deployment.amqp_url)
        listen = await connection.channel()
        await listen.set_qos(prefetch_count=2000)
        observer = Observer()
        await observer.start(listen, args.hops)
        publishing = await connection.channel(publisher_confirms=True)
        commands = await publishing.get_exchange("lapse.commands")
        request_urls = [urlsplit(r.url) for r in services.of("request")]
        pools = [HttpPool(u.hostname or "127.0.0.1", u.port or 80) for u in request_urls]
        management = Management(deployment.amqp_url, deployment.vhost)
        reason = "lifecycle benchmark"

        async def send_http(i: int, item: Sent) -> None:
            body = json.dumps(
                {"resource": RESOURCE, "role": deployment.reader, "duration": "1h", "reason": reason}
            ).encode()
            item.sent = time.monotonic()
            try:
                status, payload = await pools[i % len(pools)].post("/v1/requests", body, deployment.token(i))
            except (OSError, asyncio.IncompleteReadError) as exc:
                item.error = f"http: {exc!r}"
                return
            if status != 202:
                item.error = f"http {status}: {payload[:200]!r}"
                return
            item.request_id = json.loads(payload)["id"]
            item.answered = time.monotonic()

        async def send_amqp(i: int, item: Sent) -> None:
            command_id = str(uuid.uuid4())
            item.request_id = command_id
            command = {
                "id": command_id,
                "type": "request.submit",
                "source": "bench",
                "subject": command_id,
                "correlation_id": command_id,
                "data": {
                    "resource": RESOURCE,
                    "role": deployment.reader,
                    "duration_seconds": 3600,
                    "reason": reason,
                    "on_behalf_of": deployment.subject(i),
                },
            }
            item.sent = time.monotonic()
            try:  # confirmed, persistent: what a system that must not lose its request does
                await commands.publish(
                    aio_pika.Message(
                        json.dumps(command).encode(),
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        user_id=deployment.amqp_user,
                    ),
                    routing_key="request.submit",
                )
            except aio_pika.exceptions.AMQPError as exc:
                item.error = f"amqp: {exc!r}"
                return
            item.answered = time.monotonic()

        senders = {"http": send_http, "amqp": send_amqp}
        offered: list[Sent] = []
        steps: list[dict[str, Any]] = []
        result["deliveries_per_lifecycle"] = {}
        for path in paths:
            # Warm-up (connections, prepared statements, JIT of the policy), not reported.
            await run_step(path, 20, 2, senders[path], observer, services, args.drain, offered)
            await asyncio.sleep(6)  # so the counters below include all of the warm-up's deliveries
            counters = management.deliveries()
            done = 0
            for rate in rates:
                step = await run_step(
                    path, rate, args.seconds, senders[path], observer, services, args.drain, offered
                )
                steps.append(step)
                done += step["activated"]
                print(
                    f"{path} {rate:g}/s: p50 {step['p50_ms']} p99 {step['p99_ms']} max {step['max_ms']} ms,"
                    f" lost {step['lost']}, errors {step['errors']}, backlog {step['backlog_at_end']},"
                    f" sustainable {step['sustainable']}, load {step['load_average'][1][0]}"
                    + (f", hops p50 {step['hop_arrival_p50_ms']}" if args.hops else "")
                    + f"\n    machine busy {step['cpu']['machine_busy_percent']}%,"
                    f" CPU ms per lifecycle {step['cpu']['ms_per_lifecycle']}",
                    flush=True,
                )
                if not step["sustainable"] and not args.keep_going:
                    break
                await asyncio.sleep(1)
            if left := await settle(observer, offered, 180):
                print(f"{left} requests still not active 180 s after {path}'s last step", flush=True)
            if done:
                result["deliveries_per_lifecycle"][path] = await deliveries_per_lifecycle(
                    management, counters, done
                )
        await connection.close()
        for pool in pools:
            await pool.close()
        result["steps"] = steps
        summarise(result, services)
    finally:
        services.stop()
        await deployment.drop()
    out.write_text(json.dumps(result, indent=2, default=str))
    print_table(result)
    print(f"results: {out}; service logs were in {deployment.workdir}")


def summarise(result: dict[str, Any], services: Services) -> None:
    steps, summary = result["steps"], []
    broker = result["raw"]["broker"]["confirmed_publish_consume_ack_per_s"]
    result["max_sustainable"] = {}
    for path, counted in result["deliveries_per_lifecycle"].items():
        ok = [s for s in steps if s["path"] == path and s["sustainable"]]
        best = max((s["rate"] for s in ok), default=0.0)
        per = counted["total"]
        ceiling = broker / per if per else math.nan
        result["max_sustainable"][path] = {
            "rate": best,
            "broker_deliveries_per_lifecycle": per,
            "broker_bound_lifecycles_per_s": round(ceiling, 1),
            "ratio_to_broker_bound": round(best / ceiling, 2) if ceiling == ceiling else math.nan,
        }
        summary.append(
            f"{path}: max sustainable {best:g} req/s (p99 < {P99_LIMIT_MS:g} ms, no growing backlog);"
            f" {per:g} broker deliveries per lifecycle; raw broker {broker:g} msg/s -> bound"
            f" {ceiling:.0f} lifecycles/s; ratio {best / ceiling:.2f} (target >= 0.5)"
        )
    at = [s for s in steps if s["rate"] == 200]
    for s in at:
        summary.append(
            f"{s['path']} at 200/s: p50 {s['p50_ms']} ms (target < 40), p99 {s['p99_ms']} ms (target < 150)"
        )
    best_step = max((s for s in steps if s["sustainable"]), key=lambda s: s["rate"], default=None)
    peak = {r.name: memory_mib(r.process.pid)["peak_rss_mib"] for r in services.running}
    result["processes"] = {
        name: {
            "peak_rss_mib": peak[name],
            "cpu_percent": best_step["processes"][name]["cpu_percent"] if best_step else math.nan,
        }
        for name in peak
    }
    one = result["raw"].get("broker_one_at_a_time", {})
    if best_step is not None and "broker_cpu_ms_per_message" in one:
        per_message = one["broker_cpu_ms_per_message"]
        spent = best_step["cpu"]["ms_per_lifecycle"]
        summary.append(
            f"broker CPU per message: {result['raw']['broker'].get('broker_cpu_ms_per_message')} ms at"
            f" {result['raw']['broker']['in_flight']} in flight, {per_message} ms one at a time; at"
            f" {best_step['path']} {best_step['rate']:g}/s a lifecycle cost the broker {spent['broker']} ms"
            f" (~{spent['broker'] / per_message:.0f} unbatched messages) and the machine"
            f" {spent['all_processes']} ms, so 2 cores top out near"
            f" {2000 / spent['all_processes']:.0f} lifecycles/s"
        )
    summary.append(
        f"database raw: {result['raw']['database']['single_row_commits_per_s']:g} single-row commits/s;"
        f" load average during the run: {[s['load_average'][1][0] for s in steps]}"
    )
    result["summary"] = summary


if __name__ == "__main__":
    asyncio.run(main())
