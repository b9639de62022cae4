"""The notifier's webhook file, formats and retry policy, without I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from lapse_request.notifier.dispatcher import RetryPolicy, _retry_after
from lapse_request.notifier.formats import describe, slack, slack_escape
from lapse_request.notifier.webhooks import NOTIFIED_EVENTS, ConfigError, Format, load_webhooks
from lapse_shared.durations import format_short
from lapse_shared.events import RequestAwaitingReview, RequestAwaitingReviewData

ROOT = Path(__file__).resolve().parents[3]


def _write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "notifier.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_webhook_defaults_to_every_notified_event_and_resolves_url_env(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "public_url": "https://lapse.example.test/",
            "webhooks": [{"name": "dba", "url_env": "DBA_URL", "format": "slack", "groups": ["dba"]}],
        },
    )
    [hook] = load_webhooks(path, {"DBA_URL": "https://hooks.slack.test/services/T0/B0/XYZ"})
    assert hook.events == frozenset(NOTIFIED_EVENTS)
    assert hook.format is Format.SLACK
    assert hook.public_url == "https://lapse.example.test"
    assert hook.url == "https://hooks.slack.test/services/T0/B0/XYZ"
    assert hook.host == "hooks.slack.test"
    assert "XYZ" not in repr(hook)
    assert hook.wants_review(["team-leads", "dba"])
    assert not hook.wants_review(["security"])


@pytest.mark.parametrize(
    ("webhooks", "message"),
    [
        (
            [{"name": "a", "url": "https://x.test/", "url_env": "A"}],
            "webhooks[0] (name 'a'): Value error, give exactly one of url and url_env",
        ),
        ([{"name": "a"}], "give exactly one of url and url_env"),
        (
            [{"name": "a", "url": "https://x.test/", "events": ["request.submitted"]}],
            "events ['request.submitted'] are not notified",
        ),
        (
            [{"name": "a", "url": "https://x.test/", "format": "discord"}],
            "webhooks[0] (name 'a').format: Input should be 'slack', 'teams' or 'json'",
        ),
        ([{"name": "a", "url": "ftp://x.test/"}], "webhooks[0] (name 'a').url: URL scheme should be"),
        (
            [{"name": "a", "url": "https://x.test/"}, {"name": "a", "url": "https://y.test/"}],
            "webhook names must be unique; repeated: ['a']",
        ),
        (
            [{"name": "a", "url": "https://x.test/", "colour": "red"}],
            "colour: Extra inputs are not permitted",
        ),
    ],
)
def test_a_bad_webhook_file_is_refused_naming_the_entry(
    tmp_path: Path, webhooks: list[dict[str, object]], message: str
) -> None:
    path = _write(tmp_path, {"webhooks": webhooks})
    with pytest.raises(ConfigError) as error:
        load_webhooks(path, {})
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_an_unset_or_bad_url_env_is_refused_without_showing_its_value(tmp_path: Path) -> None:
    path = _write(tmp_path, {"webhooks": [{"name": "dba", "url_env": "DBA_URL"}]})
    with pytest.raises(ConfigError, match="webhook 'dba': environment variable DBA_URL is not set"):
        load_webhooks(path, {})
    with pytest.raises(ConfigError, match="DBA_URL does not hold an http") as error:
        load_webhooks(path, {"DBA_URL": "hooks.slack.test/SECRET"})
    assert "SECRET" not in str(error.value)


def test_an_unreadable_or_invalid_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the notifier configuration"):
        load_webhooks(tmp_path / "missing.yaml", {})
    path = tmp_path / "broken.yaml"
    path.write_text("webhooks: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_webhooks(path, {})


def test_the_example_configuration_is_valid() -> None:
    hooks = load_webhooks(ROOT / "examples" / "notifier.yaml", {})
    assert hooks
    assert {h.host for h in hooks} == {"127.0.0.1"}


def test_slack_escapes_only_its_control_characters() -> None:
    assert slack_escape("<!here> a&b <http://x|y>") == "&lt;!here&gt; a&amp;b &lt;http://x|y&gt;"


def test_slack_fields_stay_within_block_kit_limits() -> None:
    request_id = uuid.uuid4()
    event = RequestAwaitingReview.create(
        source="t",
        request_id=request_id,
        data=RequestAwaitingReviewData(
            request_id=request_id,
            requester="alice",
            resource="orders-db",
            role="r" * 400,
            duration_seconds=90061,
            reason="x" * 5000,
            ticket="INC-9",
            stage=1,
            approvals_needed=2,
            approver_groups=["dba"],
            pending_until=datetime(2026, 11, 25, 18, 0, tzinfo=UTC),
        ),
    )
    message = slack(describe(event, None))
    header = message["blocks"][0]["text"]["text"]
    assert len(header) == 150
    fields = [f for b in message["blocks"] if "fields" in b for f in b["fields"]]
    assert len(fields) == 9
    assert all(len(f["text"]) <= 2000 for f in fields)
    assert "*Duration*\n1d1h1m1s" in [f["text"] for f in fields]
    assert "*Review*\nstage 2: 2 approval(s) needed" in [f["text"] for f in fields]
    assert "*Decide by*\n2026-11-25 18:00 UTC" in [f["text"] for f in fields]
    assert f"request `{request_id}`" in message["blocks"][-1]["text"]["text"]


def test_human_durations() -> None:
    assert [format_short(s) for s in (60, 5400, 86400, 0)] == ["1m", "1h30m", "1d", "0s"]


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(backoff_seconds=2, backoff_max_seconds=60)
    for attempts, ceiling in ((1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (20, 60)):
        delays = [policy.delay(attempts) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), attempts
        assert max(delays) - min(delays) > 0, "no jitter"
    assert policy.delay(1, retry_after=30) == 30
    assert policy.delay(1, retry_after=600) == 60


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert _retry_after("12") == 12
    assert _retry_after(None) is None
    assert _retry_after("soon") is None
    later = datetime.now(UTC) + timedelta(seconds=30)
    seconds = _retry_after(later.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    assert seconds is not None
    assert 25 < seconds <= 30
