"""The compose deployment stays valid: the image recipe, the compose-spec schema, the policy directory.

Nothing here needs Docker: check-jsonschema validates docker-compose.yml against its vendored
compose-spec schema (offline), the Dockerfile is checked for its shape, and the compose policy
files are loaded with the real policy loader. The Kubernetes manifests: test_kubernetes_manifests.py.
"""

from __future__ import annotations

import importlib.util
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
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
SERVICES = {"request": 8080, "policy": 8081, "grant": 8082, "audit": 8083}
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


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
    for name, port in SERVICES.items():
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/docker/Dockerfile", name
        # One image; the command chooses the service.
        assert service["image"] == "lapse:local", name
        assert service["command"] == ["python", "-m", f"lapse_{name}"], name
        assert service["restart"] == "unless-stopped", name
        assert "./deploy/compose/policies:/etc/lapse/policies:ro" in service["volumes"], name
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
        assert services[name]["restart"] == "unless-stopped", name


def test_compose_infrastructure_keeps_its_data_and_shows_the_management_ui() -> None:
    compose = _compose()
    rabbitmq, postgres = compose["services"]["rabbitmq"], compose["services"]["postgres"]
    assert rabbitmq["image"].endswith("-management"), rabbitmq["image"]
    assert "127.0.0.1:15672:15672" in rabbitmq["ports"]
    assert "rabbitmq-data:/var/lib/rabbitmq" in rabbitmq["volumes"]
    assert "postgres-data:/var/lib/postgresql/data" in postgres["volumes"]
    assert {"rabbitmq-data", "postgres-data"} <= set(compose["volumes"])
    # Every Lapse process runs the one image built from the Dockerfile.
    built = {n: s for n, s in compose["services"].items() if "build" in s}
    assert {s["image"] for s in built.values()} == {"lapse:local"}, built.keys()


# --- deploy/docker


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_is_multi_stage_and_runs_as_a_non_root_user_with_a_health_check() -> None:
    instructions = _dockerfile_instructions()
    stages = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert len(stages) >= 2, "a build stage and a slim runtime stage"
    runtime = instructions[stages[-1] :]
    assert instructions[stages[-1]][1].endswith("AS runtime")
    assert ("COPY", "--from=build /opt/venv /opt/venv") in runtime
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users, "the runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    # Numeric, so that Kubernetes' runAsNonRoot can verify it; 10001 as in the manifests.
    assert uid == "10001", users
    [healthcheck] = [rest for keyword, rest in runtime if keyword == "HEALTHCHECK"]
    assert "/opt/lapse/healthcheck.py" in healthcheck
    [cmd] = [rest for keyword, rest in runtime if keyword == "CMD"]
    assert cmd == '["python", "-m", "lapse_request"]'
    # No ADD (it can fetch URLs) and no fetching tools: only pip downloads, from the registry,
    # at the versions pinned in constraints.txt.
    assert "ADD" not in {keyword for keyword, _ in instructions}
    for keyword, rest in instructions:
        if keyword == "RUN":
            assert not re.search(r"\b(curl|wget|git|apt-get|apk)\b", rest), rest
            for command in re.split(r"&&|;", rest):
                if "pip install" in command:
                    assert "-c constraints.txt" in command, command
                    assert not re.search(r"(https?://|--index-url|--extra-index-url|git\+)", command)
    installs = " ".join(rest for keyword, rest in instructions if keyword == "RUN" and "pip install" in rest)
    for name in SERVICES:
        assert f"./services/{name}" in installs, f"the image does not install {name}"


def _healthcheck_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "lapse_healthcheck", ROOT / "deploy" / "docker" / "healthcheck.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("command", "port"),
    [
        (["python", "-m", "lapse_request"], 8080),
        (["python", "-m", "lapse_policy"], 8081),
        (["python", "-m", "lapse_grant"], 8082),
        (["/opt/venv/bin/python", "-m", "lapse_audit"], 8083),
        (["python", "-m", "lapse_request.notifier"], 8084),
        (["python", "/app/examples/webhook_sink.py"], 8080),
        (["python", "-m"], 8080),
        ([], 8080),
    ],
)
def test_healthcheck_probes_the_port_of_the_service_pid1_runs(command: list[str], port: int) -> None:
    assert _healthcheck_module().default_port(command) == port


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


# --- deploy/kubernetes: see tests/test_kubernetes_manifests.py


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


def test_compose_migrates_once_before_any_service_starts() -> None:
    services = _compose()["services"]
    migrate = services["migrate"]
    assert migrate["restart"] == "no"
    command = " ".join(migrate["command"])
    for module in ("lapse_request", "lapse_grant", "lapse_audit", "lapse_request.notifier"):
        assert f"python -m {module} migrate" in command, module
    for name in ("request", "policy", "grant", "audit", "notifier"):
        service = services[name]
        assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
        assert service["environment"]["LAPSE_MIGRATE_ON_START"] == "false", name


def test_compose_services_connect_as_their_own_broker_users_made_by_the_setup_one_shot() -> None:
    services = _compose()["services"]
    setup = services["broker-setup"]
    assert "python -m lapse_shared.messaging.broker_setup" in " ".join(setup["command"])
    assert setup["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    users = {}
    for name in [*SERVICES, "notifier"]:
        service = services[name]
        url = urlsplit(service["environment"]["LAPSE_AMQP_URL"])
        users[name] = url.username
        assert service["depends_on"]["broker-setup"]["condition"] == "service_completed_successfully", name
        # Each password is one the setup one-shot sets for that very user.
        password_var = re.findall(r"\$\{([A-Z_]+):-", service["environment"]["LAPSE_AMQP_URL"])
        assert password_var == [f"RABBITMQ_{name.upper()}_PASSWORD"], name
        given = setup["environment"][f"LAPSE_BROKER_PASSWORD_{name.upper()}"]
        assert given.startswith(f"${{RABBITMQ_{name.upper()}_PASSWORD:-"), name
    assert users == {name: f"lapse-{name}" for name in users}, "the users LAPSE_BROKER_USERS names by default"
