"""Reading a policy directory with line numbers, so every problem points at file and line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lapse_policy.model import PolicyDocument
from lapse_shared.catalogue import PolicyDirectory


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


@dataclass(frozen=True)
class SourceFile:
    """One validated policy file and its YAML node tree (for line numbers of later checks)."""

    name: str
    document: PolicyDocument
    node: yaml.Node

    def line_of(self, *loc: str | int) -> int:
        return line_of(self.node, loc)


def line_of(node: yaml.Node, loc: tuple[str | int, ...] | list[str | int]) -> int:
    """1-based line of the deepest node the path reaches (the parent when a key is missing)."""
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node = child
    return int(node.start_mark.line) + 1


def _loc_text(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def read_file(name: str, text: str) -> tuple[SourceFile | None, list[Problem]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        content: Any = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        return None, [Problem(name, line, f"not valid YAML: {exc.problem or exc}")]
    except yaml.YAMLError as exc:
        return None, [Problem(name, None, f"not valid YAML: {exc}")]
    if node is None or content is None:
        # An empty file is an empty policy document.
        node, content = yaml.MappingNode("tag:yaml.org,2002:map", []), {}
    if not isinstance(content, dict):
        return None, [Problem(name, 1, "the top level must be a mapping (resources:, rules:)")]
    try:
        document = PolicyDocument.model_validate(content)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            # pydantic adds the name of the union member tried ("BreakGlass"); keep the data path.
            loc = tuple(p for p in error["loc"] if isinstance(p, int) or p[:1].islower())
            problems.append(Problem(name, line_of(node, loc), f"{_loc_text(loc)}: {error['msg']}"))
        return None, problems
    return SourceFile(name, document, node), []


@dataclass(frozen=True)
class PolicySources:
    files: tuple[SourceFile, ...]
    problems: tuple[Problem, ...]
    version: str


def read_directory(path: Path) -> PolicySources:
    """Validate every file; collect every problem rather than stopping at the first."""
    if not path.is_dir():
        return PolicySources((), (Problem(str(path), None, "policy directory does not exist"),), "")
    files: list[SourceFile] = []
    problems: list[Problem] = []
    for file in sorted([*path.glob("*.yaml"), *path.glob("*.yml")]):
        loaded, found = read_file(file.name, file.read_text(encoding="utf-8"))
        problems += found
        if loaded is not None:
            files.append(loaded)
    # The version is the one every service computes for the same directory.
    version = PolicyDirectory.load(path).version if not problems else ""
    return PolicySources(tuple(files), tuple(problems), version)
