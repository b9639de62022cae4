"""The resource catalogue: what can be asked for, read from the YAML files of the policy directory.

The request service checks submissions against it, the policy service decides with it and the
grant service finds each resource's provider and target in it, so its model lives here.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from lapse_shared.durations import Duration

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"

DurationText = Annotated[
    Duration,
    # What a policy file may write; `format: duration` would refuse the short form ("8h").
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(P[0-9WDTHMS.]+|([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?)$",
            "description": "ISO 8601 (`PT30M`, `P1D`) or short (`30m`, `1h30m`, `2d`).",
            "examples": ["30m", "8h", "PT1H"],
        }
    ),
]
"""A duration field of a policy file, with a JSON Schema that editors can check."""

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

TARGET_ENV_PREFIX = "LAPSE_TARGET_"
"""The only environment variables a target's `${VAR}` may name.

Whoever can change the policy files must not be able to read the grant service's other
variables (its credentials key, its database URL) into a target and send them to a webhook.
A fixed prefix, not a setting: every service checks references when it loads the catalogue, and
they must agree; a deployment whose secret has another name sets `LAPSE_TARGET_X=$OTHER`. No
Lapse setting starts with it (tests/test_target_variables.py keeps it so), so no `LAPSE_*` setting can
be expanded.
"""


class TargetVariableError(KeyError):
    """A `${VAR}` reference that may not be expanded, or whose variable is not set."""

    def __str__(self) -> str:
        return str(self.args[0])


def target_variable_problem(name: str) -> str | None:
    """Why `${name}` may not appear in a target; None when it may."""
    if name.startswith(TARGET_ENV_PREFIX) and len(name) > len(TARGET_ENV_PREFIX):
        return None
    hint = "" if name.startswith("LAPSE_") else f" (e.g. ${{{TARGET_ENV_PREFIX}{name}}})"
    return (
        f"${{{name}}} may not be expanded: a target may refer only to environment variables named"
        f" {TARGET_ENV_PREFIX}*{hint}, never to other variables or Lapse settings"
    )


def target_references(value: Any) -> list[str]:
    """Every `${VAR}` name in a target's settings, nested values included."""
    if isinstance(value, str):
        return _ENV_REF.findall(value)
    if isinstance(value, dict):
        return [name for v in value.values() for name in target_references(v)]
    if isinstance(value, list):
        return [name for v in value for name in target_references(v)]
    return []


# Roles a catalogue must never offer on a PostgreSQL target, whatever the policy author meant:
# the `pg_` prefix is reserved for predefined roles (pg_read_server_files, pg_execute_server_program:
# files and commands on the database host), and these are the usual superuser or administrator
# roles of a self-hosted or managed server. The grant service also asks the target itself
# (superuser, CREATEROLE, BYPASSRLS, REPLICATION, predefined) before each GRANT.
_ADMIN_ROLES = frozenset(
    {"postgres", "rds_superuser", "rdsadmin", "cloudsqlsuperuser", "azure_pg_admin", "azuresu"}
)
POSTGRES_IDENTIFIER_BYTES = 63
"""PostgreSQL truncates longer identifiers (NAMEDATALEN - 1) instead of refusing them."""


def predefined_or_admin(name: str) -> bool:
    """Whether `name` is a PostgreSQL predefined role (`pg_*`) or a known administrator role."""
    return name.lower().startswith("pg_") or name.lower() in _ADMIN_ROLES


def reserved_role_problem(provider: str, role: str) -> str | None:
    """Why `role` may never be granted through `provider`, or None; checked at catalogue load and
    again by the grant service for every approval (an event may name any role)."""
    if not provider.startswith("postgres"):
        return None
    if role.lower().startswith("pg_"):
        return f"role '{role[:80]}' is a PostgreSQL predefined role (pg_*): Lapse never grants those"
    if role.lower() in _ADMIN_ROLES:
        return f"role '{role[:80]}' is a database administrator role: Lapse never grants it"
    if "\x00" in role or len(role.encode()) > POSTGRES_IDENTIFIER_BYTES:
        return f"role '{role[:80]}' is not a PostgreSQL role name (at most 63 bytes, no NUL)"
    return None


class Resource(BaseModel):
    """One thing access can be granted to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME, description="Name requesters use, e.g. `orders-db`.")
    description: str = ""
    provider: str = Field(description="Provider kind that provisions it, e.g. `postgres-role`.")
    target: dict[str, Any] = Field(
        default_factory=dict,
        description="Provider settings; `${LAPSE_TARGET_NAME}` is replaced from the grant service's"
        " environment. Only `LAPSE_TARGET_*` variables may be referred to (others fail the load).",
    )
    roles: list[str] = Field(min_length=1, description="Roles or actions it offers.")
    max_duration: DurationText = Field(description="No request may ask for longer than this.")
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("target")
    @classmethod
    def _allowed_references(cls, target: dict[str, Any]) -> dict[str, Any]:
        # Refused when the policy loads, in every service, so a bad reference never goes live.
        problems = [p for name in target_references(target) if (p := target_variable_problem(name))]
        if problems:
            raise ValueError("; ".join(dict.fromkeys(problems)))
        return target

    @field_validator("roles")
    @classmethod
    def _unique_roles(cls, roles: list[str]) -> list[str]:
        if len(set(roles)) != len(roles):
            raise ValueError("roles are listed twice")
        return roles

    @field_validator("roles")
    @classmethod
    def _no_reserved_roles(cls, roles: list[str], info: ValidationInfo) -> list[str]:
        provider = info.data.get("provider")  # validated before `roles` (declared first)
        if isinstance(provider, str):
            problems = [p for role in roles if (p := reserved_role_problem(provider, role))]
            if problems:
                raise ValueError("; ".join(problems))
        return roles

    def expanded_target(self, env: dict[str, str] | None = None) -> dict[str, Any]:
        """Target settings with `${VAR}` references resolved; a missing variable is an error."""
        return expand_target(self.target, env)


def expand_target(target: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Resolve `${VAR}` in string settings from `env` (default: the environment).

    Kept apart from the catalogue so a grant can store its target unexpanded (no secrets) and
    still be revoked after its resource changed or left the catalogue. Only `LAPSE_TARGET_*`
    variables are expanded: checked again here, because a grant's stored target did not
    necessarily pass this version's load check. Raises TargetVariableError (a KeyError).
    """
    source = os.environ if env is None else env

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        problem = target_variable_problem(name)
        if problem is not None:
            raise TargetVariableError(problem)
        if name not in source:
            raise TargetVariableError(f"environment variable {name} is not set")
        return source[name]

    return {
        key: _ENV_REF.sub(one, value) if isinstance(value, str) else value for key, value in target.items()
    }


class PolicyDirError(ValueError):
    """A policy directory that cannot be used; the message names the file."""


@dataclass(frozen=True)
class PolicyFile:
    name: str
    text: str
    content: dict[str, Any]


@dataclass(frozen=True)
class PolicyDirectory:
    """A loaded snapshot of the YAML files in `LAPSE_POLICY_DIR`."""

    path: Path
    files: tuple[PolicyFile, ...]
    version: str
    """sha256 over every file's name and content: names the policy a decision used."""

    @classmethod
    def load(cls, path: Path) -> PolicyDirectory:
        if not path.is_dir():
            raise PolicyDirError(f"policy directory {path} does not exist")
        digest = hashlib.sha256()
        files = []
        for file in sorted([*path.glob("*.yaml"), *path.glob("*.yml")]):
            text = file.read_text(encoding="utf-8")
            digest.update(file.name.encode() + b"\0" + text.encode() + b"\0")
            try:
                content = yaml.safe_load(text) or {}
            except yaml.YAMLError as exc:
                raise PolicyDirError(f"{file.name}: not valid YAML: {exc}") from None
            if not isinstance(content, dict):
                raise PolicyDirError(f"{file.name}: the top level must be a mapping")
            files.append(PolicyFile(file.name, text, content))
        return cls(path, tuple(files), "sha256:" + digest.hexdigest())

    @staticmethod
    def fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
        """Cheap change detector: names, sizes and modification times."""
        return tuple(
            sorted(
                (f.name, f.stat().st_mtime_ns, f.stat().st_size)
                for f in [*path.glob("*.yaml"), *path.glob("*.yml")]
            )
        )


def format_validation_error(file: str, exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
    )
    return f"{file}: {problems}"


class Catalogue:
    """Resources by name."""

    def __init__(self, resources: list[Resource]) -> None:
        self.resources = {r.name: r for r in resources}

    @classmethod
    def from_directory(cls, directory: PolicyDirectory) -> Catalogue:
        resources: list[Resource] = []
        for file in directory.files:
            for index, raw in enumerate(file.content.get("resources") or []):
                try:
                    resource = Resource.model_validate(raw)
                except ValidationError as exc:
                    raise PolicyDirError(
                        format_validation_error(f"{file.name} resources[{index}]", exc)
                    ) from None
                if resource.name in {r.name for r in resources}:
                    raise PolicyDirError(f"{file.name}: resource {resource.name} is defined twice")
                resources.append(resource)
        return cls(resources)

    def get(self, name: str) -> Resource | None:
        return self.resources.get(name)


class CatalogueSource:
    """The catalogue of a directory, re-read when its files change (checked at most every second)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fingerprint = PolicyDirectory.fingerprint(path)
        self._catalogue = Catalogue.from_directory(PolicyDirectory.load(path))
        self._checked = 0.0

    def current(self, now: float) -> Catalogue:
        if now - self._checked >= 1.0:
            self._checked = now
            fingerprint = PolicyDirectory.fingerprint(self._path)
            if fingerprint != self._fingerprint:
                try:
                    self._catalogue = Catalogue.from_directory(PolicyDirectory.load(self._path))
                    self._fingerprint = fingerprint
                except PolicyDirError:
                    pass  # keep the last good catalogue; the policy service reports the error
        return self._catalogue
