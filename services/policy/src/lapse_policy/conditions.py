"""CEL conditions of rules: compiled and checked once at load, evaluated per request.

The engine is `common-expression-language` (Rust bindings): measured against the pure-Python
`cel-python`, it compiles about 8x and evaluates about 200x faster (see docs/readme/issue-3.md).
It has no type checker, so `check` stands in for one at load: it refuses variables and fields
that do not exist and evaluates the expression against sample requests, so type errors such as
`request.duration > 5` are load-time errors naming the rule, never surprises at decision time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import cel

# The documented variables and their fields; anything else is refused at load.
VARIABLES: dict[str, frozenset[str]] = {
    "request": frozenset(
        {
            "resource",
            "role",
            "duration",
            "reason",
            "ticket",
            "start",
            "break_glass",
            "submitted_by",
            "extension",
        }
    ),
    "requester": frozenset({"subject", "groups", "attributes", "kind"}),
    "resource": frozenset({"name", "provider", "labels"}),
    "now": frozenset(),
}

_STRING_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_FIELD = re.compile(r"(?<![\w.])(requester|request|resource)\s*\.\s*([A-Za-z_]\w*)")


class ConditionError(ValueError):
    """A condition that does not compile or check; the message says what is wrong."""


@dataclass(frozen=True)
class Facts:
    """What a condition may look at, in plain Python values."""

    resource: str
    role: str
    duration: timedelta
    reason: str
    ticket: str
    start: datetime
    break_glass: bool
    subject: str
    groups: tuple[str, ...]
    attributes: dict[str, str]
    kind: str
    provider: str
    labels: dict[str, str]
    now: datetime
    # The service principal that submitted a request.submit command ("" for HTTP requests).
    submitted_by: str = ""
    # The request asks to lengthen an active grant.
    extension: bool = False

    def variables(self, tz: str | None) -> dict[str, Any]:
        return {
            "request": {
                "resource": self.resource,
                "role": self.role,
                "duration": self.duration,
                "reason": self.reason,
                "ticket": self.ticket,
                "start": self.start,
                "break_glass": self.break_glass,
                "submitted_by": self.submitted_by,
                "extension": self.extension,
            },
            "requester": {
                "subject": self.subject,
                "groups": list(self.groups),
                "attributes": dict(self.attributes),
                "kind": self.kind,
            },
            "resource": {"name": self.resource, "provider": self.provider, "labels": dict(self.labels)},
            "now": local_time(self.now, tz),
        }


def local_time(now: datetime, tz: str | None) -> datetime:
    """`now` in the rule's time zone, as a fixed offset (the form the CEL bindings accept)."""
    moment = now.astimezone(ZoneInfo(tz)) if tz else now.astimezone(UTC)
    offset = moment.utcoffset() or timedelta(0)
    return moment.replace(tzinfo=timezone(offset))


# Sample requests the checker evaluates a condition against: different enough that both sides
# of most `&&`/`||`/`?:` branches run, so a type error in either side shows at load.
_SAMPLE_TIME = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
_SAMPLES = (
    Facts(
        resource="sample-db",
        role="reader",
        duration=timedelta(minutes=30),
        reason="INC-1: sample",
        ticket="INC-1",
        start=_SAMPLE_TIME,
        break_glass=False,
        subject="sample-user",
        groups=("sample-group",),
        attributes={},
        kind="user",
        provider="postgres-role",
        labels={},
        now=_SAMPLE_TIME,
    ),
    Facts(
        resource="",
        role="",
        duration=timedelta(days=3),
        reason="",
        ticket="",
        start=_SAMPLE_TIME + timedelta(days=5, hours=13),
        break_glass=True,
        subject="",
        groups=(),
        attributes={},
        kind="service",
        provider="",
        labels={},
        now=_SAMPLE_TIME + timedelta(days=5, hours=13),
    ),
)


@dataclass(frozen=True)
class Condition:
    source: str
    program: Any  # cel.Program; the bindings ship no type information

    def holds(self, variables: Any) -> bool:
        """Evaluate; raises ConditionError when it cannot be decided (e.g. a missing label)."""
        try:
            result = self.program.execute(variables)
        except Exception as exc:  # noqa: BLE001 - the bindings raise several types; all mean "undecided"
            raise ConditionError(_short(exc)) from None
        if not isinstance(result, bool):
            raise ConditionError(f"the condition gave {type(result).__name__}, not a boolean")
        return result


def _short(exc: Exception) -> str:
    text = str(exc).split("\n")[0].strip()
    if len(text) > 120:  # the bindings append long generic advice; the first sentence says it
        text = text.split(". ")[0]
    if isinstance(exc, KeyError):
        return f"no key {text} (test it with has(...) first)"
    return text


def compile_condition(source: str, tz: str | None = None) -> Condition:
    """Compile and check; raises ConditionError saying what is wrong."""
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (KeyError, ValueError):
            raise ConditionError(f"unknown time zone '{tz}'") from None
    program = _compile(source)
    unknown = sorted(set(program.variables()) - set(VARIABLES))
    if unknown:
        raise ConditionError(
            f"unknown variable {', '.join(repr(u) for u in unknown)};"
            f" the variables are {', '.join(VARIABLES)}"
        )
    without_strings = _STRING_LITERAL.sub("''", source)
    for variable, field in _FIELD.findall(without_strings):
        if field not in VARIABLES[variable]:
            raise ConditionError(
                f"'{variable}' has no field '{field}'; it has {', '.join(sorted(VARIABLES[variable]))}"
            )
    condition = Condition(source, program)
    # Each operand of `&&`/`||` on its own too: short-circuiting would otherwise hide a type
    # error behind a comparison the samples happen to make false.
    for part in [source, *(p for p in _operands(source) if p != source)]:
        try:
            checked = condition if part == source else Condition(part, _compile(part))
        except ConditionError:
            continue  # not an expression on its own (a case the splitter does not know); skip
        for sample in _SAMPLES:
            try:
                checked.holds(sample.variables(tz))
            except ConditionError as exc:
                # A missing map key (a label or attribute) depends on the request, not the rule.
                if "no key" not in str(exc):
                    where = "" if part == source else f" in `{part}`"
                    raise ConditionError(f"type error{where}: {exc}") from None
    return condition


def _compile(source: str) -> Any:
    try:
        return cel.compile(source)
    except Exception as exc:  # noqa: BLE001 - parse errors come as ValueError or RuntimeError
        raise ConditionError(f"does not parse: {_short(exc)}") from None


def _split_top_level(source: str) -> list[str]:
    """Operands of the top-level `&&`/`||` chain; the whole text when there is none or a `?:`."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(source):
        c = source[i]
        if c in "'\"":
            end = _STRING_LITERAL.match(source, i)
            i = end.end() if end else len(source)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and c == "?":
            return [source.strip()]
        elif depth == 0 and source.startswith(("&&", "||"), i):
            parts.append(source[start:i].strip())
            start = i + 2
            i += 1
        i += 1
    parts.append(source[start:].strip())
    return parts


def _wrapped(text: str) -> bool:
    """Whether one pair of parentheses encloses the whole text: `(a || b)`, not `(a) || (b)`."""
    if not (text.startswith("(") and text.endswith(")")):
        return False
    depth = 0
    for i, c in enumerate(_STRING_LITERAL.sub("''", text)):
        depth += (c == "(") - (c == ")")
        if depth == 0 and i < len(_STRING_LITERAL.sub("''", text)) - 1:
            return False
    return True


def _operands(source: str) -> list[str]:
    """Every boolean operand of the condition, nested parentheses and `!` included."""
    found = []
    for part in _split_top_level(source):
        found.append(part)
        inner = part.lstrip("!").strip()
        if _wrapped(inner) and len(_split_top_level(inner[1:-1])) > 1:
            found += _operands(inner[1:-1])
    return found
