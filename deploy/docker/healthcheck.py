"""Container health check: exit 0 when the service's GET /healthz answers 200, else 1.

Uses only the standard library (python:3.11-slim has no curl). The port is LAPSE_HTTP_PORT when
set, otherwise the default of the service named by LAPSE_SERVICE.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_PORTS = {"request": 8080, "policy": 8081, "grant": 8082, "audit": 8083}


def main() -> int:
    service = os.environ.get("LAPSE_SERVICE", "request")
    port = os.environ.get("LAPSE_HTTP_PORT") or str(DEFAULT_PORTS.get(service, 8080))
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            status = response.status
    except urllib.error.HTTPError as exc:  # 503: a dependency is down
        print(f"{url}: {exc.code} {exc.read(500).decode(errors='replace')}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
