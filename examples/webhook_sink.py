"""A local webhook receiver for `make run`: prints each notice the notifier posts, answers 200.

Listens on 127.0.0.1:8090 (LAPSE_SINK_HOST, LAPSE_SINK_PORT), so the example notifier
configuration posts to nothing outside this machine. Standard library only.
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def summary(path: str, body: Any) -> str:
    """One readable line per notice, whichever format it came in."""
    if isinstance(body, dict) and "blocks" in body:  # Slack
        lines = [str(body.get("text", ""))]
        for block in body["blocks"][1:]:
            lines += [f["text"].replace("\n", ": ", 1) for f in block.get("fields", [])]
            if "text" in block:
                lines.append(block["text"]["text"])
        return f"{path} (slack)\n  " + "\n  ".join(lines)
    if isinstance(body, dict) and body.get("type") == "message":  # Teams
        card = body["attachments"][0]["content"]
        lines = [card["body"][0]["text"]]
        lines += [f"{f['title']}: {f['value']}" for f in card["body"][1]["facts"]]
        return f"{path} (teams)\n  " + "\n  ".join(lines)
    if isinstance(body, dict) and "type" in body:  # a CloudEvent
        return f"{path} (json) {body['type']} {body.get('subject', '')}"
    return f"{path} {body!r}"


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            print(summary(self.path, json.loads(raw)), flush=True)
        except (ValueError, KeyError, IndexError, TypeError):
            print(f"{self.path} (unreadable) {raw[:200]!r}", flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    host = os.environ.get("LAPSE_SINK_HOST", "127.0.0.1")
    port = int(os.environ.get("LAPSE_SINK_PORT", "8090"))
    server = ThreadingHTTPServer((host, port), Sink)
    print(f"webhook sink listening on {host}:{port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
