"""Benchmark: time from publishing `request.awaiting_review` to the webhook receiving the notice.

Runs the notifier in this process against the real broker and database (a vhost and database of
its own, removed afterwards) with two Slack-format webhooks on a local receiver: a healthy one,
and one that answers only after its timeout (every attempt fails), to show that a dead webhook
does not slow the healthy one. Prints p50 / p99 / max for the healthy webhook.

Usage: python scripts/bench_notifier.py [--events 500] [--rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aio_pika
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lapse_request.notifier.app import build  # noqa: E402
from lapse_request.notifier.config import NotifierSettings  # noqa: E402
from lapse_shared.logging import configure_logging  # noqa: E402
from lapse_shared.messaging.topology import EVENTS  # noqa: E402
from tests.infra import start_infra  # noqa: E402
from tests.integration.test_notifier import awaiting_review  # noqa: E402
from tests.webhook_receiver import Behaviour, WebhookReceiver  # noqa: E402


async def run(amqp_url: str, database_url: str, events: int, rate: float) -> None:
    receiver = WebhookReceiver().start()
    receiver.behaviours["/dead"] = Behaviour(delay_seconds=2.0, status=500)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "notifier.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "webhooks": [
                            {"name": "ok", "url": f"{receiver.base_url}/ok", "format": "slack"},
                            {
                                "name": "dead",
                                "url": f"{receiver.base_url}/dead",
                                "format": "slack",
                                "timeout_seconds": 1,
                            },
                        ]
                    }
                )
            )
            app = build(
                NotifierSettings(amqp_url=amqp_url, database_url=database_url, notifier_config=config)
            )
            async with app.router.lifespan_context(app):
                connection = await aio_pika.connect_robust(amqp_url)
                async with connection:
                    channel = await connection.channel(publisher_confirms=True)
                    exchange = await channel.get_exchange(EVENTS)
                    sent: dict[str, float] = {}
                    for _ in range(events):
                        event = awaiting_review(uuid.uuid4(), ["dba"])
                        sent[str(event.data.request_id)] = time.monotonic()
                        await exchange.publish(
                            aio_pika.Message(event.model_dump_json().encode(), message_id=str(event.id)),
                            event.type,
                        )
                        await asyncio.sleep(1 / rate)
                    got = await receiver.wait_for("/ok", events, within=120)
        latencies = sorted(
            (r.at - sent[r.body["blocks"][-1]["text"]["text"].rsplit("`", 2)[-2]]) * 1000 for r in got
        )
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        p50 = statistics.median(latencies)
        print(
            f"{events} notices at {rate:g}/s, beside a dead webhook: p50 {p50:.0f} ms,"
            f" p99 {p99:.0f} ms, max {latencies[-1]:.0f} ms"
        )
    finally:
        receiver.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0)
    args = parser.parse_args()
    configure_logging("bench", "WARNING", json=False)
    infra = start_infra()
    vhost, amqp_url = infra.create_vhost()
    database, database_url = infra.create_database()
    try:
        asyncio.run(run(amqp_url, database_url, args.events, args.rate))
    finally:
        infra.delete_vhost(vhost)
        infra.drop_database(database)
