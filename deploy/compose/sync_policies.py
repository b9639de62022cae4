"""Copy examples/policies into deploy/compose/policies and the Kubernetes ConfigMap.

The copies differ from the examples only in the target DSNs (compose host `postgres`, a
password from the grant service's environment); tests/test_deploy_files.py checks they agree.
Usage: python deploy/compose/sync_policies.py
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCAL_DSN = "postgresql://lapse_provisioner@127.0.0.1:5432/lapse_demo"
COMPOSE_DSN = "postgresql://lapse_provisioner:${LAPSE_TARGET_ORDERS_DB_PASSWORD}@postgres:5432/lapse_demo"


def main() -> None:
    compose = ROOT / "deploy" / "compose" / "policies"
    files = {}
    for source in sorted((ROOT / "examples" / "policies").glob("*.yaml")):
        text = source.read_text().replace(LOCAL_DSN, COMPOSE_DSN)
        (compose / source.name).write_text(text)
        files[source.name] = text
    configmap = ROOT / "deploy" / "kubernetes" / "base" / "configmap-policies.yaml"
    head = configmap.read_text().split("\ndata:\n", 1)[0] + "\n"
    body = "".join(
        f"  {name}: |\n" + "".join(f"    {line}\n" if line else "\n" for line in text.splitlines())
        for name, text in files.items()
    )
    configmap.write_text(head + "data:\n" + body)


if __name__ == "__main__":
    main()
