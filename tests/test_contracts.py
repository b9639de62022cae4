"""The committed contract documents match the code (regenerate with `make docs`)."""

from __future__ import annotations

import runpy
from pathlib import Path

from lapse_shared.events import EVENT_TYPES

ROOT = Path(__file__).resolve().parent.parent


def test_committed_openapi_asyncapi_and_event_schemas_match_the_code(tmp_path: Path) -> None:
    generate = runpy.run_path(str(ROOT / "scripts" / "generate_contracts.py"))["generate"]
    written = generate(tmp_path)
    # OpenAPI + AsyncAPI per service and the notifier, one schema per event type, the policy and
    # policy-test schemas, the configuration reference: counted from the code, so a new event type
    # does not need this line touched.
    assert len(written) == 5 * 2 + len(EVENT_TYPES) + 2 + 1
    assert {p.relative_to(tmp_path).as_posix() for p in written} >= {
        "schemas/policy.json",
        "schemas/policy-tests.json",
        "configuration.md",
    }
    stale = []
    for path in written:
        relative = path.relative_to(tmp_path)
        committed = ROOT / "docs" / relative
        if not committed.exists() or committed.read_text() != path.read_text():
            stale.append(str(relative))
    assert not stale, f"contract documents drifted from the code, run `make docs`: {stale}"
