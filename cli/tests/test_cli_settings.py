"""The CLI's config file, environment overrides, exit codes and time formatting (no services)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from lapse_cli import render, settings
from lapse_cli.exits import Exit, for_state, for_status
from lapse_shared.durations import format_short


@pytest.fixture(autouse=True)
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [*settings.ENV.values(), "LAPSE_CONFIG"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    return tmp_path


def test_the_config_file_is_private_and_the_environment_overrides_it(
    config_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = settings.save(settings.Profile(request_url="https://lapse.example", token="secret-token-123"))
    assert path == config_home / "lapse" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text())["token"] == "secret-token-123"
    assert "secret-token-123" not in repr(settings.current())

    monkeypatch.setenv("LAPSE_TOKEN", "from-the-environment")
    monkeypatch.setenv("LAPSE_AUDIT_URL", "https://audit.example")
    profile = settings.current()
    assert profile.token == "from-the-environment"
    assert profile.url("audit") == "https://audit.example"
    assert profile.url("grant") == "https://lapse.example"  # behind one gateway: the same URL


def test_a_saved_file_made_readable_by_others_gets_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    path = settings.save(settings.Profile(token="secret-token-123"))
    path.chmod(0o644)
    settings.current()
    assert "chmod 600" in capsys.readouterr().err


def test_the_local_services_are_found_next_to_the_request_service() -> None:
    assert settings.sibling_url("http://127.0.0.1:8080", "grant") == "http://127.0.0.1:8082"
    assert settings.sibling_url("http://localhost:8080/", "audit") == "http://localhost:8083"
    assert settings.sibling_url("https://lapse.corp:443", "audit") == "https://lapse.corp:443"


def test_exit_codes_of_statuses_and_states() -> None:
    assert [for_status(s) for s in (401, 403, 404, 409, 410, 422, 500)] == [
        Exit.AUTH,
        Exit.AUTH,
        Exit.NOT_FOUND,
        Exit.CONFLICT,
        Exit.NOT_FOUND,
        Exit.USAGE,
        Exit.ERROR,
    ]
    assert [for_state(s) for s in ("active", "ended", "denied", "cancelled", "expired", "failed")] == [
        Exit.OK,
        Exit.OK,
        Exit.DENIED,
        Exit.ENDED_OTHERWISE,
        Exit.ENDED_OTHERWISE,
        Exit.ENDED_OTHERWISE,
    ]


def test_durations_read_the_way_people_write_them() -> None:
    assert [format_short(s) for s in (600, 5400, 86400, 90)] == ["10m", "1h30m", "1d", "1m30s"]
    assert [render.span(s) for s in (1798, 3900, 2 * 86400 + 3 * 3600, 5)] == [
        "29m 58s",
        "1h 05m",
        "2d 3h",
        "5s",
    ]
