"""The Kubernetes manifests stay valid and production-shaped, without a cluster.

Core kinds (Deployment, Service, ConfigMap, Secret, Job, PDB, HPA, NetworkPolicy) are validated
against the Kubernetes OpenAPI schemas that kubernetes-validate ships (offline); the operators'
kinds (RabbitmqCluster, CloudNativePG Cluster) are checked by hand. The base and the production
overlay are rendered with `kubectl kustomize` (no cluster needed) and the output validated too.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from lapse_shared.messaging import broker_manifests

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
PRODUCTION = KUBERNETES / "overlays" / "production"
COMPOSE_POLICIES = ROOT / "deploy" / "compose" / "policies"
KUBERNETES_VERSION = "1.34"
# Deployment -> its HTTP port.
PORTS = {"request": 8080, "policy": 8081, "grant": 8082, "audit": 8083, "notifier": 8084}
AUTOSCALED = {"request", "policy", "grant", "notifier"}
# Services that keep state in PostgreSQL (policy reads files and the broker only).
WITH_DATABASE = {"request", "grant", "audit", "notifier"}
OPERATOR_KINDS = {
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"),
    ("rabbitmq.com/v1beta1", "User"),
    ("rabbitmq.com/v1beta1", "Permission"),
    ("rabbitmq.com/v1beta1", "TopicPermission"),
    ("postgresql.cnpg.io/v1", "Cluster"),
}
# The Secrets the production overlay references by name and must not define.
PRODUCTION_SECRETS = {
    *(f"lapse-amqp-{name}" for name in PORTS),
    "lapse-secrets",
    "lapse-tokens",
    "lapse-notifier-webhooks",
    "lapse-db-app",
}

Document = dict[str, Any]


def _load(text: str) -> list[Document]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def _base_files() -> list[Path]:
    return sorted(p for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")


def _base_documents() -> list[tuple[str, Document]]:
    return [
        (f"{path.name}[{index}]", document)
        for path in _base_files()
        for index, document in enumerate(_load(path.read_text(encoding="utf-8")))
    ]


def _render(directory: Path) -> list[Document]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: it renders the kustomizations (`kubectl kustomize`)")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return _load(result.stdout)


@pytest.fixture(scope="module")
def rendered_base() -> list[Document]:
    return _render(BASE)


@pytest.fixture(scope="module")
def rendered_production() -> list[Document]:
    return _render(PRODUCTION)


def _of_kind(documents: list[Document], kind: str) -> dict[str, Document]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


def _validate_core(documents: list[Document], where: str) -> None:
    core = [d for d in documents if (d["apiVersion"], d["kind"]) not in OPERATOR_KINDS]
    assert core, f"{where}: no core manifests"
    for document in core:
        name = f"{where}: {document['kind']}/{document['metadata']['name']}"
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} is not a valid Kubernetes {KUBERNETES_VERSION} object: {exc.message}")


def _containers(pod_template: Document) -> Iterator[tuple[Document, Document]]:
    spec = pod_template["spec"]
    for container in spec.get("initContainers", []) + spec["containers"]:
        yield spec, container


# --- the files of the base


def test_base_documents_have_kind_name_and_namespace() -> None:
    documents = _base_documents()
    assert documents, f"no manifests found in {BASE}"
    for where, document in documents:
        assert document.get("apiVersion"), f"{where}: no apiVersion"
        assert document.get("kind"), f"{where}: no kind"
        assert (document.get("metadata") or {}).get("name"), f"{where}: no metadata.name"
        if document["kind"] != "Namespace":
            assert document["metadata"].get("namespace") == "lapse", f"{where}: not in namespace lapse"


def test_base_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text(encoding="utf-8"))
    assert sorted(kustomization["resources"]) == sorted(p.name for p in _base_files())


def test_base_core_manifests_are_valid_kubernetes_objects() -> None:
    documents = [d for _, d in _base_documents()]
    kinds = {d["kind"] for d in documents}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds
    assert {"NetworkPolicy", "Job", "Namespace", "Secret"} <= kinds
    _validate_core(documents, "base")


def test_validation_catches_a_broken_deployment() -> None:
    """The schema check is not vacuous: a misspelt field and a wrong type are refused."""
    deployment = next(d for _, d in _base_documents() if d["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    misspelt = yaml.safe_load(yaml.safe_dump(deployment))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSION, strict=True)


def test_rabbitmq_cluster_has_three_nodes_and_the_management_image() -> None:
    [cluster] = [d for _, d in _base_documents() if d["kind"] == "RabbitmqCluster"]
    assert cluster["apiVersion"] == "rabbitmq.com/v1beta1"
    assert cluster["metadata"]["name"] == "lapse-rabbitmq"
    spec = cluster["spec"]
    # Quorum queues tolerate the loss of a minority: three nodes survive one.
    assert spec["replicas"] == 3
    assert spec["image"].startswith("rabbitmq:3.")
    assert spec["image"].endswith("-management")
    assert spec["persistence"]["storage"]
    assert spec["resources"]["requests"]
    assert spec["resources"]["limits"]
    assert "pause_minority" in spec["rabbitmq"]["additionalConfig"]


def test_postgres_cluster_has_three_instances_and_the_lapse_database() -> None:
    [cluster] = [d for _, d in _base_documents() if d["kind"] == "Cluster"]
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["metadata"]["name"] == "lapse-db"
    spec = cluster["spec"]
    assert spec["instances"] == 3
    assert spec["bootstrap"]["initdb"] == {"database": "lapse", "owner": "lapse"}
    assert spec["storage"]["size"]
    assert spec["resources"]["requests"]
    assert spec["resources"]["limits"]


def test_policy_configmap_is_the_compose_policy_dir() -> None:
    configmaps = {d["metadata"]["name"]: d for _, d in _base_documents() if d["kind"] == "ConfigMap"}
    expected = {p.name: p.read_text(encoding="utf-8") for p in sorted(COMPOSE_POLICIES.glob("*.yaml"))}
    assert configmaps["lapse-policies"]["data"] == expected


def test_notifier_file_is_valid_with_the_secret_it_names(tmp_path: Path) -> None:
    from lapse_request.notifier.webhooks import load_webhooks

    documents = {(d["kind"], d["metadata"]["name"]): d for _, d in _base_documents()}
    config = documents[("ConfigMap", "lapse-notifier")]["data"]["notifier.yaml"]
    secret = documents[("Secret", "lapse-notifier-webhooks")]["stringData"]
    deployment = documents[("Deployment", "lapse-notifier")]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "lapse_request.notifier"]
    assert {"secretRef": {"name": "lapse-notifier-webhooks"}} in container["envFrom"]
    assert ("Service", "lapse-notifier") in documents
    path = tmp_path / "notifier.yaml"
    path.write_text(config, encoding="utf-8")
    hooks = load_webhooks(path, secret)
    assert [h.name for h in hooks] == ["dba-slack", "security-teams"]


def test_demo_secrets_are_marked_as_demo() -> None:
    secrets = [d for _, d in _base_documents() if d["kind"] == "Secret"]
    assert secrets
    for secret in secrets:
        assert secret["metadata"]["labels"].get("lapse.example.com/demo") == "true", secret["metadata"][
            "name"
        ]


# --- the rendered base and production overlay


def test_rendered_core_manifests_are_valid(
    rendered_base: list[Document], rendered_production: list[Document]
) -> None:
    _validate_core(rendered_base, "base")
    _validate_core(rendered_production, "production")
    for documents in (rendered_base, rendered_production):
        operators = {(d["apiVersion"], d["kind"]) for d in documents} & OPERATOR_KINDS
        assert operators == OPERATOR_KINDS


@pytest.mark.parametrize("overlay", ["base", "production"])
def test_every_deployment_is_probed_bounded_and_locked_down(
    overlay: str, rendered_base: list[Document], rendered_production: list[Document]
) -> None:
    documents = rendered_base if overlay == "base" else rendered_production
    deployments = _of_kind(documents, "Deployment")
    assert set(deployments) == {f"lapse-{name}" for name in PORTS}
    for name, port in PORTS.items():
        deployment = deployments[f"lapse-{name}"]
        template = deployment["spec"]["template"]
        [container] = template["spec"]["containers"]
        label = f"{overlay} lapse-{name}"
        # One image for all; the command chooses the service.
        assert container["image"].split("/")[-1].startswith("lapse:"), label
        module = "lapse_request.notifier" if name == "notifier" else f"lapse_{name}"
        assert container["command"] == ["python", "-m", module], label
        assert container["ports"] == [{"name": "http", "containerPort": port}], label
        env = {e["name"]: e for e in container["env"]}
        assert env["LAPSE_HTTP_PORT"]["value"] == str(port), label
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, label
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, label
        assert ("LAPSE_DATABASE_URL" in env) == (name in WITH_DATABASE), label
    for name, deployment in deployments.items():
        _assert_locked_down(deployment["spec"]["template"], f"{overlay} Deployment {name}")
    for name, job in _of_kind(documents, "Job").items():
        _assert_locked_down(job["spec"]["template"], f"{overlay} Job {name}")


def _assert_locked_down(template: Document, label: str) -> None:
    """Requests, limits and the `restricted` Pod Security Standard, with a writable /tmp only."""
    pod = template["spec"]
    pod_security = pod.get("securityContext") or {}
    assert pod_security.get("seccompProfile") == {"type": "RuntimeDefault"}, label
    assert pod.get("automountServiceAccountToken") is False, label
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for _, container in _containers(template):
        where = f"{label} container {container['name']}"
        security = container.get("securityContext") or {}
        assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True, where
        assert pod_security.get("runAsUser", 0) != 0, where
        assert security.get("readOnlyRootFilesystem") is True, where
        assert security.get("allowPrivilegeEscalation") is False, where
        assert security.get("capabilities") == {"drop": ["ALL"]}, where
        resources = container.get("resources") or {}
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(kind) or {}), f"{where}: {kind}"
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp is not an emptyDir"


def test_migration_jobs_run_the_migrate_command(rendered_base: list[Document]) -> None:
    jobs = _of_kind(rendered_base, "Job")
    assert set(jobs) == {f"lapse-{name}-migrate" for name in ("request", "grant", "audit", "notifier")}
    for name, job in jobs.items():
        service = name.removeprefix("lapse-").removesuffix("-migrate")
        service = "request.notifier" if service == "notifier" else service
        [container] = job["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["python", "-m", f"lapse_{service}", "migrate"], name
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure", name


@pytest.mark.parametrize("overlay", ["base", "production"])
def test_disruption_budgets_and_autoscalers_cover_the_right_deployments(
    overlay: str, rendered_base: list[Document], rendered_production: list[Document]
) -> None:
    documents = rendered_base if overlay == "base" else rendered_production
    deployments = _of_kind(documents, "Deployment")
    pdbs = _of_kind(documents, "PodDisruptionBudget")
    assert set(pdbs) == set(deployments)
    for name, pdb in pdbs.items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"]), name
    hpas = _of_kind(documents, "HorizontalPodAutoscaler")
    # Not audit: one replica publishes the SIEM stream at a time, so more add no throughput.
    assert set(hpas) == {f"lapse-{name}" for name in AUTOSCALED}
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"], name
        # The autoscaler scales on CPU: without a CPU request it cannot compute utilisation.
        [container] = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert container["resources"]["requests"]["cpu"], name
        # A fixed count would reset the autoscaler's on every `kubectl apply`.
        assert "replicas" not in deployments[name]["spec"], name
    assert deployments["lapse-audit"]["spec"]["replicas"] >= 2


def test_production_has_no_secret_values_and_references_its_secrets(
    rendered_production: list[Document],
) -> None:
    assert not _of_kind(rendered_production, "Secret"), "the production overlay must not define Secrets"
    text = yaml.safe_dump_all(rendered_production)
    assert "stringData" not in text
    assert "lapse-rabbitmq-default-user" not in text, "production uses its own broker user"
    referenced = set()
    for document in rendered_production:
        if document["kind"] not in {"Deployment", "Job"}:
            continue
        pod = document["spec"]["template"]["spec"]
        for container in pod["containers"]:
            for variable in container.get("env", []):
                if "secretKeyRef" in variable.get("valueFrom", {}):
                    referenced.add(variable["valueFrom"]["secretKeyRef"]["name"])
            referenced |= {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
        referenced |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    assert referenced == PRODUCTION_SECRETS
    # Each one is documented for the operator who has to create it.
    documentation = (PRODUCTION / "kustomization.yaml").read_text(encoding="utf-8") + (
        KUBERNETES / "README.md"
    ).read_text(encoding="utf-8")
    for name in referenced:
        assert name in documentation, f"{name} is not documented"


def test_production_keeps_three_infrastructure_replicas(rendered_production: list[Document]) -> None:
    [rabbitmq] = [d for d in rendered_production if d["kind"] == "RabbitmqCluster"]
    [postgres] = [d for d in rendered_production if d["kind"] == "Cluster"]
    assert rabbitmq["spec"]["replicas"] == 3
    assert postgres["spec"]["instances"] == 3


# --- network policies


def _egress_ports(policy: Document) -> dict[int, list[Document]]:
    ports: dict[int, list[Document]] = {}
    for rule in policy["spec"].get("egress", []):
        for port in rule.get("ports", []):
            ports.setdefault(port["port"], []).extend(rule.get("to", []))
    return ports


def test_network_policies_deny_by_default_and_allow_what_each_service_needs(
    rendered_production: list[Document],
) -> None:
    policies = _of_kind(rendered_production, "NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny
    assert "egress" not in deny
    rabbitmq = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "lapse-rabbitmq"}}}
    postgres = {"podSelector": {"matchLabels": {"cnpg.io/cluster": "lapse-db"}}}
    for name, port in PORTS.items():
        policy = policies[f"lapse-{name}"]
        assert policy["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": f"lapse-{name}"}}
        # In: only the HTTP port.
        [ingress] = policy["spec"]["ingress"]
        assert ingress["ports"] == [{"protocol": "TCP", "port": port}], name
        egress = _egress_ports(policy)
        assert egress[5672] == [rabbitmq], name
        assert (postgres in egress.get(5432, [])) == (name in WITH_DATABASE), name
    # Only grant reaches beyond the cluster on 5432: its provisioning targets.
    for name in PORTS:
        outside = [t for t in _egress_ports(policies[f"lapse-{name}"]).get(5432, []) if "ipBlock" in t]
        assert bool(outside) == (name == "grant"), name
    migrate = policies["lapse-migrate"]["spec"]
    assert migrate["podSelector"] == {"matchLabels": {"app.kubernetes.io/component": "migrate"}}
    assert "ingress" not in migrate
    assert _egress_ports(policies["lapse-migrate"]) == {5432: [postgres]}


def test_network_policies_select_the_pods_they_mean(rendered_production: list[Document]) -> None:
    """A selector that matches no pod would silently allow nothing: check every Lapse one matches."""
    pod_labels = [
        d["spec"]["template"]["metadata"]["labels"]
        for d in rendered_production
        if d["kind"] in {"Deployment", "Job"}
    ]
    for name, policy in _of_kind(rendered_production, "NetworkPolicy").items():
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if (
            not selector
            or set(selector) & {"cnpg.io/cluster"}
            or selector.get("app.kubernetes.io/name") == "lapse-rabbitmq"
        ):
            continue  # every pod, or the operators' pods
        assert any(selector.items() <= labels.items() for labels in pod_labels), name


# --- broker users


def test_the_broker_users_file_is_generated_from_the_setup_grants() -> None:
    committed = (BASE / "rabbitmq-users.yaml").read_text(encoding="utf-8")
    assert committed == broker_manifests.render(), (
        "regenerate: python -m lapse_shared.messaging.broker_manifests"
        " > deploy/kubernetes/base/rabbitmq-users.yaml"
    )


def test_each_service_connects_as_its_own_least_privilege_broker_user(
    rendered_base: list[Document], rendered_production: list[Document]
) -> None:
    for documents in (rendered_base, rendered_production):
        users = _of_kind(documents, "User")
        permissions = _of_kind(documents, "Permission")
        topics = [d for d in documents if d["kind"] == "TopicPermission"]
        deployments = _of_kind(documents, "Deployment")
        for name in PORTS:
            user = users[f"lapse-{name}"]
            secret = user["spec"]["importCredentialsSecret"]["name"]
            assert secret == f"lapse-amqp-{name}"
            [container] = deployments[f"lapse-{name}"]["spec"]["template"]["spec"]["containers"]
            refs = {
                v["valueFrom"]["secretKeyRef"]["name"]
                for v in container["env"]
                if v["name"] in {"AMQP_USERNAME", "AMQP_PASSWORD"}
            }
            assert refs == {secret}, name
            assert permissions[f"lapse-{name}"]["spec"]["permissions"]["configure"] != ".*"
            own = [t for t in topics if t["spec"]["userReference"]["name"] == f"lapse-{name}"]
            exchanges = {t["spec"]["permissions"]["exchange"] for t in own}
            assert {"lapse.events", "lapse.commands", "lapse.delay.deliver"} <= exchanges, name
