"""The deployment files stay valid: compose schema, Kubernetes manifests, compose policy directory.

Nothing here needs Docker or a cluster: check-jsonschema validates docker-compose.yml against its
vendored compose-spec schema (offline), the manifests are checked as YAML, and the compose policy
files are loaded with the real policy loader.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from lapse_policy.engine import Policy

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_POLICIES = ROOT / "deploy" / "compose" / "policies"
EXAMPLE_POLICIES = ROOT / "examples" / "policies"
K8S = ROOT / "deploy" / "k8s"
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for path in _k8s_files():
        for index, document in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
            if document is not None:
                documents.append((f"{path.name}[{index}]", document))
    return documents


def _deployments() -> list[tuple[str, dict[str, Any]]]:
    return [(where, d) for where, d in _k8s_documents() if d.get("kind") == "Deployment"]


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return compose


# --- docker-compose.yml


def test_compose_file_matches_the_compose_spec() -> None:
    executable = Path(sys.executable).parent / "check-jsonschema"
    assert executable.exists(), f"{executable} is missing: install requirements-dev.txt"
    result = subprocess.run(
        [str(executable), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"check-jsonschema exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )


def test_compose_services_are_healthchecked_and_ordered() -> None:
    services = _compose()["services"]
    for name, port in {"request": 8080, "policy": 8081, "grant": 8082, "audit": 8083}.items():
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/docker/Dockerfile", name
        assert "test" in service["healthcheck"], name
        for dependency in ("rabbitmq", "postgres"):
            assert service["depends_on"][dependency]["condition"] == "service_healthy", name
        # Inside a container the service must listen on every interface to be reachable.
        assert service["environment"]["LAPSE_HTTP_HOST"] == "0.0.0.0", name  # noqa: S104
        assert str(service["environment"]["LAPSE_HTTP_PORT"]) == str(port), name
        assert any(p.endswith(f"{port}:{port}") for p in service["ports"]), name
        assert "./examples:/app/examples:ro" in service["volumes"], name
    assert services["grant"]["depends_on"]["demo-target"]["condition"] == "service_completed_successfully"
    for name in ("rabbitmq", "postgres"):
        assert "test" in services[name]["healthcheck"], name


def test_compose_grant_environment_resolves_the_policy_references() -> None:
    """Every `${VAR}` of the mounted policy files is set in the grant service's environment."""
    grant = _compose()["services"]["grant"]
    policy_dir = grant["environment"]["LAPSE_POLICY_DIR"]
    assert f"./deploy/compose/policies:{policy_dir}:ro" in grant["volumes"]
    references = {
        name
        for path in COMPOSE_POLICIES.glob("*.yaml")
        for name in ENV_REF.findall(path.read_text(encoding="utf-8"))
    }
    assert references, "the compose target DSN should carry a ${VAR} password"
    assert references <= set(grant["environment"]), references - set(grant["environment"])


# --- deploy/k8s


def test_k8s_documents_have_kind_and_name() -> None:
    documents = _k8s_documents()
    assert documents, "no manifests found in deploy/k8s"
    for where, document in documents:
        assert document.get("apiVersion"), f"{where}: no apiVersion"
        assert document.get("kind"), f"{where}: no kind"
        assert (document.get("metadata") or {}).get("name"), f"{where}: no metadata.name"
        if document["kind"] != "Namespace":
            assert document["metadata"].get("namespace") == "lapse", f"{where}: not in namespace lapse"


def test_k8s_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    assert sorted(kustomization["resources"]) == sorted(p.name for p in _k8s_files())


def test_k8s_has_a_deployment_and_service_per_service() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in _k8s_documents()}
    for name in ("request", "policy", "grant", "audit"):
        assert ("Deployment", f"lapse-{name}") in kinds
        assert ("Service", f"lapse-{name}") in kinds


@pytest.mark.parametrize("where_deployment", _deployments(), ids=lambda wd: wd[0])
def test_k8s_deployment_is_probed_bounded_and_non_root(
    where_deployment: tuple[str, dict[str, Any]],
) -> None:
    where, deployment = where_deployment
    pod = deployment["spec"]["template"]["spec"]
    pod_non_root = (pod.get("securityContext") or {}).get("runAsNonRoot")
    assert pod["containers"], where
    for container in pod["containers"]:
        label = f"{where} container {container['name']}"
        for probe in ("readinessProbe", "livenessProbe"):
            assert probe in container, f"{label}: no {probe}"
            assert container[probe]["httpGet"]["path"] == "/healthz", f"{label}: {probe}"
        non_root = (container.get("securityContext") or {}).get("runAsNonRoot", pod_non_root)
        assert non_root is True, f"{label}: runAsNonRoot is not set"
        resources = container.get("resources") or {}
        assert resources.get("requests"), f"{label}: no resource requests"
        assert resources.get("limits"), f"{label}: no resource limits"


def test_k8s_policy_configmap_is_the_compose_policy_dir() -> None:
    configmaps = [d for _, d in _k8s_documents() if d["kind"] == "ConfigMap"]
    policies = next(d for d in configmaps if d["metadata"]["name"] == "lapse-policies")
    expected = {p.name: p.read_text(encoding="utf-8") for p in sorted(COMPOSE_POLICIES.glob("*.yaml"))}
    assert policies["data"] == expected


# --- deploy/compose/policies


def test_compose_policies_load_like_the_examples() -> None:
    compose = Policy.load(COMPOSE_POLICIES)
    example = Policy.load(EXAMPLE_POLICIES)
    assert {n: r.roles for n, r in compose.catalogue.resources.items()} == {
        n: r.roles for n, r in example.catalogue.resources.items()
    }
    assert [r.name for r in compose.rules] == [r.name for r in example.rules]


def test_compose_policy_dsn_points_at_the_compose_postgres() -> None:
    compose = Policy.load(COMPOSE_POLICIES)
    example = Policy.load(EXAMPLE_POLICIES)
    for name, resource in compose.catalogue.resources.items():
        original = example.catalogue.resources[name]
        # Only the DSN differs from the examples.
        assert {k: v for k, v in resource.target.items() if k != "dsn"} == {
            k: v for k, v in original.target.items() if k != "dsn"
        }
        assert resource.model_dump(exclude={"target"}) == original.model_dump(exclude={"target"})
        if "dsn" not in resource.target:
            continue
        env = {ref: f"secret-{ref.lower()}" for ref in ENV_REF.findall(resource.target["dsn"])}
        dsn = urlsplit(resource.expanded_target(env)["dsn"])
        was = urlsplit(original.target["dsn"])
        assert dsn.hostname == "postgres", name
        assert dsn.password in env.values(), name
        assert (dsn.scheme, dsn.username, dsn.port, dsn.path) == (
            was.scheme,
            was.username,
            was.port,
            was.path,
        ), name


# --- the approver notifier


def test_compose_notifier_reads_a_valid_webhook_file_posting_to_the_sink() -> None:
    from lapse_request.notifier.webhooks import load_webhooks

    services = _compose()["services"]
    notifier = services["notifier"]
    mounted = notifier["environment"]["LAPSE_NOTIFIER_CONFIG"]
    assert f"./deploy/compose/notifier.yaml:{mounted}:ro" in notifier["volumes"]
    assert notifier["command"] == ["python", "-m", "lapse_request.notifier"]
    assert str(notifier["environment"]["LAPSE_HTTP_PORT"]) == "8084"
    assert "test" in notifier["healthcheck"]
    hooks = load_webhooks(ROOT / "deploy" / "compose" / "notifier.yaml", {})
    assert {h.host for h in hooks} == {"webhook-sink"}
    assert "webhook-sink" in services


def test_k8s_notifier_file_is_valid_with_the_secret_it_names(tmp_path: Path) -> None:
    from lapse_request.notifier.webhooks import load_webhooks

    documents = {(d["kind"], d["metadata"]["name"]): d for _, d in _k8s_documents()}
    config = documents[("ConfigMap", "lapse-notifier")]["data"]["notifier.yaml"]
    secret = documents[("Secret", "lapse-notifier-webhooks")]["stringData"]
    deployment = documents[("Deployment", "lapse-notifier")]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert {"secretRef": {"name": "lapse-notifier-webhooks"}} in container["envFrom"]
    assert ("Service", "lapse-notifier") in documents
    path = tmp_path / "notifier.yaml"
    path.write_text(config, encoding="utf-8")
    hooks = load_webhooks(path, secret)
    assert [h.name for h in hooks] == ["dba-slack", "security-teams"]
