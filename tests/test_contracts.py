"""The committed contract documents match the code (regenerate with `make docs`)."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_committed_openapi_asyncapi_and_event_schemas_match_the_code(tmp_path: Path) -> None:
    generate = runpy.run_path(str(ROOT / "scripts" / "generate_contracts.py"))["generate"]
    written = generate(tmp_path)
    assert len(written) == 16
    stale = []
    for path in written:
        relative = path.relative_to(tmp_path)
        committed = ROOT / "docs" / relative
        if not committed.exists() or committed.read_text() != path.read_text():
            stale.append(str(relative))
    assert not stale, f"contract documents drifted from the code, run `make docs`: {stale}"
