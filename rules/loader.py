"""Load a rule file: safe YAML → pydantic structure → reference, type and graph checks.

Every problem of every pass is collected and raised together as one ``RuleError``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path as FilePath
from typing import Any

from pydantic import BaseModel, Discriminator, Tag, ValidationError

from complaintflow.errors import RuleError, RuleProblem
from complaintflow.rules.check import UNREADABLE, check_rule_file, did_you_mean
from complaintflow.rules.model import RuleFile
from complaintflow.rules.ruleset import RuleSet
from complaintflow.rules.source import Path, SourceMap, format_path, read_yaml

__all__ = ["DEFAULT_RULES_NAME", "default_rules_text", "json_schema", "load_rules", "parse_rules"]

DEFAULT_RULES_NAME = "default.yaml"


def default_rules_text() -> str:
    return (resources.files("complaintflow.rules") / DEFAULT_RULES_NAME).read_text("utf-8")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of rule files, generated from the pydantic models."""
    schema = RuleFile.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "complaintflow rule file"
    return schema


def load_rules(path: str | FilePath | None = None) -> RuleSet:
    """Load and check a rule file (``None``: the shipped default)."""
    if path is None:
        return parse_rules(default_rules_text(), f"<default>/{DEFAULT_RULES_NAME}")
    file = FilePath(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise RuleError([RuleProblem(str(file), None, None, "",
                                     f"cannot read: {exc.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RuleError([RuleProblem(str(file), None, None, "",
                                     f"not UTF-8 text (byte {exc.start})")]) from None
    return parse_rules(text, str(file))


def parse_rules(text: str, source_name: str = "<string>", *, stored: bool = False) -> RuleSet:
    """Check ``text`` as a rule file; raise ``RuleError`` listing every problem.
    Rule sets are immutable, so the result is cached by text and source name.

    Values must have their YAML types (``final: 'yes'`` is refused). ``stored`` reads the
    text of a rule set already stored by the engine as the release that stored it did,
    converting types where that one did, so that complaints pinned to it keep running."""
    if not isinstance(source_name, str):
        raise RuleError([RuleProblem("<string>", None, None, "",
                                     "the rule source name must be str, not "
                                     f"{type(source_name).__name__}", "a file name")])
    if not isinstance(text, str):
        hint = " (decode it first, or use load_rules)" if isinstance(
            text, bytes | bytearray | memoryview) else ""
        raise RuleError([RuleProblem(source_name, None, None, "",
                                     f"rule text must be str, not {type(text).__name__}{hint}",
                                     "text (str)")])
    return _parse_cached(text, source_name, bool(stored))


@functools.lru_cache(maxsize=32)
def _parse_cached(text: str, source_name: str, stored: bool) -> RuleSet:
    data, source, read_problems = read_yaml(text, source_name)
    if read_problems and not source.positions:
        raise RuleError(read_problems)  # nothing could be read: malformed, empty, ...
    definition, problems = _validate(data, source, stored)
    if read_problems:
        # the reader skipped what it refused; what follows from that is not a new problem
        problems = read_problems + _not_follow_on(problems, source)
    if problems or definition is None:
        # in the order of the file, as an editor lists them
        problems.sort(key=lambda p: (p.line is None, p.line or 0, p.column or 0))
        raise RuleError(problems)
    version = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return RuleSet.build(definition, version, text, source_name)


def _validate(data: Any, source: SourceMap,
              stored: bool = False) -> tuple[RuleFile | None, list[RuleProblem]]:
    """The structural pass, then the checks: the definition (if the structure is valid) and
    every problem found."""
    if not isinstance(data, dict):
        return None, [source.problem((), "the rule file must be a mapping",
                                     expected="a mapping")]
    try:
        definition = RuleFile.model_validate(data, strict=not stored,
                                             context={"stored": stored})
    except ValidationError as exc:
        problems = _structural_problems(exc, source)
        problems.extend(_check_remainder(exc, data, source, {p.path for p in problems},
                                          stored))
        return None, problems
    return definition, check_rule_file(definition, source)


def _not_follow_on(problems: list[RuleProblem], source: SourceMap) -> list[RuleProblem]:
    """Drop the problems at or under a value the reader refused (it read it as null), and
    the missing keys of a mapping it dropped entries of (a merge key, a complex key)."""
    lost = {format_path(p) for p in source.lost}
    partial = {format_path(p): keys for p, keys in source.partial.items()}

    def follows(path: str) -> bool:
        if path in lost or "" in lost:
            return True
        if any(path[:i] in lost for i, c in enumerate(path) if c in ".["):
            return True
        parent, _, key = path.rpartition(".")
        return parent in partial and key not in partial[parent] and "[" not in key

    return [p for p in problems if not follows(p.path)]


#: what the rest of the file refers to: without one of these, what is left cannot be checked
_DECLARATIONS: frozenset[Path] = frozenset({
    ("states",), ("roles",), ("fields",), ("transitions",), ("calendars",), ("severity",),
    ("severity", "levels"),
})
#: what stands in for a value the structural pass refused where the rest of the file needs
#: one (a key with a default that others depend on, a required key of the whole file): the
#: checks take UNREADABLE for a name already reported. Anything else refused is left out.
_STAND_INS: dict[Path, Any] = {
    ("name",): "?", ("initial",): UNREADABLE, ("calendar",): UNREADABLE,
    ("severity", "default"): UNREADABLE,
}
#: the same for a required reference of a list item, so that the rest of the item is checked
_ITEM_STAND_INS: dict[tuple[str, ...], dict[Path, Any]] = {
    ("transitions",): {("to",): UNREADABLE, ("trigger",): UNREADABLE,
                       ("approval", "by"): UNREADABLE,
                       ("from",): [UNREADABLE], ("roles",): [UNREADABLE]},
    ("severity", "rules"): {("level",): UNREADABLE},
}
_GONE = object()  # a list item left out; the working copy keeps the document's indices
_ROUNDS = 100


def _stand_in(path: Path) -> Any:
    """What stands in for a refused value at ``path`` (``_GONE``: nothing, leave it out)."""
    if path in _STAND_INS:
        return _STAND_INS[path]
    for prefix, keys in _ITEM_STAND_INS.items():
        n = len(prefix)
        if path[:n] == prefix and len(path) > n and isinstance(path[n], int):
            return keys.get(path[n + 1:], _GONE)
    return _GONE


def _shapes_graph(path: Path) -> bool:
    """Whether leaving out ``path`` changes the state graph (its states, edges, finals)."""
    head, rest = path[0], path[2:3]
    if head == "initial":
        return True
    if head == "states":
        return not rest or rest[0] in ("id", "final")
    return head == "transitions" and (not rest or rest[0] in ("from", "to"))


def _compact(value: Any, path: Path, kept: dict[Path, list[int]]) -> Any:
    """A copy of ``value`` without the items left out; ``kept`` gets, per list that lost
    items, the document indices of those that remain."""
    if isinstance(value, dict):
        return {k: _compact(v, (*path, k), kept) for k, v in value.items()}
    if isinstance(value, list):
        indices = [i for i, v in enumerate(value) if v is not _GONE]
        if len(indices) != len(value):
            kept[path] = indices
        return [_compact(value[i], (*path, i), kept) for i in indices]
    return value


def _to_document(path: Path, kept: dict[Path, list[int]]) -> Path:
    out: list[str | int] = []
    for part in path:
        shifted = kept.get(tuple(out))
        if isinstance(part, int) and shifted is not None and 0 <= part < len(shifted):
            part = shifted[part]
        out.append(part)
    return tuple(out)


def _to_checked(path: Path, kept: dict[Path, list[int]]) -> Path:
    """The path in the compacted data; a left-out item gives the list it was in."""
    out: list[str | int] = []
    for n, part in enumerate(path):
        shifted = kept.get(path[:n])
        if isinstance(part, int) and shifted is not None:
            if part not in shifted:
                break
            part = shifted.index(part)
        out.append(part)
    return tuple(out)


class _ShiftedSource(SourceMap):
    """A source map for the compacted data: list indices are mapped back to the document's."""

    def __init__(self, base: SourceMap, kept: dict[Path, list[int]]) -> None:
        super().__init__(base.file, base.positions, base.key_positions, base.via,
                         base.key_via, base.lost, base.partial)
        self.kept = kept

    def problem(self, path: Path, message: str, **kw: Any) -> RuleProblem:
        return super().problem(_to_document(path, self.kept), message, **kw)


class _Remainder:
    """A working copy of the document (in its own coordinates) from which what the structural
    pass refused is left out, item by item, until the rest validates."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.original = data
        self.work: dict[str, Any] = _compact(data, (), {})
        self.left_out: list[Path] = []
        # what a left-out item declares still exists as far as the author is concerned
        self.declared: set[str] = set()
        self.stood_in = False

    def _container(self, path: Path) -> Any:
        node: Any = self.work
        for part in path:
            present = part in node if isinstance(node, dict) else (
                isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
                and node[part] is not _GONE)
            if not present:
                return _GONE
            node = node[part]
        return node

    def _declares(self, path: Path) -> None:
        node: Any = self.original
        for part in path:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return  # a key that only a stand-in gave: it declares nothing
        if isinstance(node, dict):
            self.declared.update(v for k, v in node.items()
                                 if k in ("id", "trigger") and isinstance(v, str))
        elif isinstance(node, str) and (isinstance(path[-1], int) or path[-1] in ("id",
                                                                               "trigger")):
            self.declared.add(node)

    def leave_out(self, path: Path, *, missing: bool = False) -> bool:
        """Take ``path`` out (or what it is missing from); False when nothing sensible would
        be left to check."""
        stand_in = _stand_in(path)
        if stand_in is not _GONE:
            parent = self._container(path[:-1])
            if isinstance(parent, dict):
                if path[-1] in parent:
                    self._declares(path)
                parent[path[-1]] = stand_in
                self.left_out.append(path)
                self.stood_in = True
                return True
        if missing:
            path = path[:-1]
        while path and self._container(path) is _GONE:
            path = path[:-1]  # pydantic's location can go past the document's ('[key]')
        if not path or path in _DECLARATIONS:
            return False
        parent = self._container(path[:-1])
        if isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = _GONE
        self._declares(path)
        self.left_out.append(path)
        return True


def _check_remainder(exc: ValidationError, data: dict[str, Any], source: SourceMap,
                     reported: set[str], stored: bool = False) -> list[RuleProblem]:
    """Leave out what failed the structural pass and check what is left, so that reference,
    type and graph problems are reported in the same run. What only follows from a left-out
    part is not reported: names it declared are not unknown, problems of how the keys of a
    damaged item go together are not reported, and the graph is not checked without it."""
    rest = _Remainder(data)
    kept: dict[Path, list[int]] = {}
    for _ in range(_ROUNDS):
        located = _one_per_union([_locate(e) for e in exc.errors(include_url=False)])
        for item in located:
            path = _to_document(item.path, kept)
            if not rest.leave_out(path, missing=item.err["type"] == "missing"):
                return []
        kept = {}
        pruned = _compact(rest.work, (), kept)
        try:
            definition = RuleFile.model_validate(pruned, strict=not stored,
                                                 context={"stored": stored})
            break
        except ValidationError as again:
            exc = again
    else:
        return []  # pragma: no cover - a bound: every round leaves out or stands in a value
    gone = [format_path(p) for p in rest.left_out]
    ignore = set(rest.declared)
    if rest.stood_in:
        ignore.add(UNREADABLE)

    def follows(path: str) -> bool:
        return path in reported or any(
            path == g or path.startswith((g + ".", g + "[")) for g in gone)

    problems = check_rule_file(
        definition, _ShiftedSource(source, kept),
        graph=not any(_shapes_graph(p) for p in rest.left_out), ignore=ignore,
        damaged=[_to_checked(p, kept) for p in rest.left_out])
    return [p for p in problems if not follows(p.path)]


# -- mapping pydantic's errors back onto the document ---------------------------------------
#
# pydantic's ``loc`` mixes document keys with names that are not in the document: the tag of a
# discriminated union ('compare', 'all', 'ref', 'literal', ...) and, for a union without a
# discriminator, one label per alternative ('list[constrained-str]', "literal['*']", 'str').
# A tag can equal a key (``{all: [...]}`` is reported under 'all', 'all'), so the walk follows
# the models instead of guessing from the names.

def _unwrap(annotation: Any) -> list[Any]:
    """The alternatives an annotation allows, with Annotated/Optional stripped."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            out.extend(_unwrap(arg))
        return out
    return [annotation]


def _tags(annotation: Any) -> dict[str, Any] | None:
    """The alternatives of a discriminated union by tag, or None if it is not one."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        if not any(isinstance(m, Discriminator) for m in meta):
            return _tags(base)
        out: dict[str, Any] = {}
        for alternative in typing.get_args(base):
            inner, *marks = typing.get_args(alternative)
            out.update({m.tag: inner for m in marks if isinstance(m, Tag)})
        return out
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _tags(arg)
            if found is not None:
                return found
    return None


def _alternative(options: list[Any], label: str) -> Any:
    """The alternative of a plain union that pydantic's label names."""
    for option in options:
        origin = typing.get_origin(option)
        if label.startswith("list[") and origin is list:
            return option
        if label.startswith("literal[") and origin is typing.Literal:
            return option
        if isinstance(option, type) and label == option.__name__:
            return option
    return None


def _field_annotation(model: type[BaseModel], key: str) -> Any:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            # pydantic keeps the Annotated metadata of a field (e.g. its Discriminator) apart
            return typing.Annotated[(info.annotation, *info.metadata)] if info.metadata \
                else info.annotation
    return None


def _model_at(loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, Path, tuple[int, ...]]:
    """Walk ``loc`` through the models. Return the model at the end (if any), the path in
    the document, and the positions in ``loc`` that are labels of union alternatives."""
    current: Any = RuleFile
    path: list[str | int] = []
    labels: list[int] = []
    for i, part in enumerate(loc):
        tags = _tags(current)
        if tags is not None and part in tags:
            current = tags[part]
            continue
        options = [o for o in _unwrap(current) if o is not type(None)]
        if len(options) > 1 and isinstance(part, str):
            labels.append(i)
            current = _alternative(options, part)
            continue
        path.append(part)
        if isinstance(part, int):
            seq = next((o for o in options if typing.get_origin(o) is list), None)
            current = typing.get_args(seq)[0] if seq is not None else None
        else:
            models = [o for o in options if isinstance(o, type) and issubclass(o, BaseModel)]
            current = _field_annotation(models[0], str(part)) if models else None
    models = [o for o in _unwrap(current) if isinstance(o, type) and issubclass(o, BaseModel)]
    return (models[0] if len(models) == 1 else None), tuple(path), tuple(labels)


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _accepts(pattern: str, example: str) -> bool:
    try:
        return re.fullmatch(pattern, example) is not None
    except re.error:
        return False


def _describe_alternative(label: str) -> str:
    if label.startswith("literal["):
        return label[len("literal["):-1]
    if label.startswith("list["):
        return "a list"
    return {"str": "text", "int": "an integer", "float": "a number",
            "bool": "true or false"}.get(label, "a mapping")


@dataclass
class _Located:
    err: Any
    loc: tuple[Any, ...]
    model: type[BaseModel] | None
    path: Path
    labels: tuple[int, ...]
    alternatives: list[str] = field(default_factory=list)


def _locate(err: Any) -> _Located:
    loc = tuple(err["loc"])
    target = loc[:-1] if err["type"] == "extra_forbidden" else loc
    model, path, labels = _model_at(target)
    if err["type"] == "extra_forbidden":
        path = (*path, str(loc[-1]))
    return _Located(err, loc, model, path, labels)


def _one_per_union(items: list[_Located]) -> list[_Located]:
    """A union without a discriminator fails once per alternative. Keep the alternative that
    got furthest into the value (the one the author meant); when none got past the value
    itself, report one problem listing what would have been accepted."""
    level = 0
    while True:
        groups: dict[tuple[Any, ...], list[_Located]] = {}
        for item in items:
            if len(item.labels) > level:
                groups.setdefault(item.loc[: item.labels[level]], []).append(item)
        if not groups:
            return items
        dropped: set[int] = set()
        for prefix, members in groups.items():
            at = len(prefix)
            depth: dict[str, int] = {}
            for m in members:
                label = str(m.loc[at])
                depth[label] = max(depth.get(label, 0), len(m.loc) - at - 1)
            deepest = max(depth.values())
            if deepest > 0:
                dropped.update(id(m) for m in members if depth[str(m.loc[at])] < deepest)
            else:
                members[0].alternatives = list(dict.fromkeys(str(m.loc[at]) for m in members))
                dropped.update(id(m) for m in members[1:])
        items = [item for item in items if id(item) not in dropped]
        level += 1


#: what a value of the wrong type should have been (the structural pass is strict: YAML types
#: are not converted, so a quoted number or a 'yes' is reported here)
_EXPECTED = {
    "bool_type": "true or false, without quotes",
    "int_type": "an integer, without quotes or decimal point",
    "float_type": "a number, without quotes",
    "decimal_type": "a number, without quotes",
    "string_type": "text (quote a value that YAML reads as a number, boolean or null)",
    "date_type": "a date such as 2026-10-01",
    "date_from_text": "a date such as 2026-10-01",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
}


def _structural_problems(exc: ValidationError, source: SourceMap) -> list[RuleProblem]:
    problems: list[RuleProblem] = []
    seen: set[tuple[str, str]] = set()
    for item in _one_per_union([_locate(e) for e in exc.errors(include_url=False)]):
        err, kind = item.err, item.err["type"]
        shown = json.dumps(err.get("input"), ensure_ascii=False, default=str)[:60]
        if kind == "extra_forbidden":
            key = str(item.path[-1])
            allowed = _allowed_keys(item.model) if item.model else []
            problem = source.problem(
                item.path, f"unknown key {key!r}",
                expected=("one of " + ", ".join(allowed)) if allowed else None,
                suggestion=did_you_mean(key, allowed), key=True,
            )
        elif item.alternatives:
            accepted = [_describe_alternative(a) for a in item.alternatives]
            problem = source.problem(item.path, f"not a valid value (got {shown})",
                                     expected=" or ".join(dict.fromkeys(accepted)))
        else:
            expected = _EXPECTED.get(kind)
            suggestion = None
            if kind == "literal_error":
                expected = str(err.get("ctx", {}).get("expected", ""))
                options = [o.strip(" '") for o in expected.replace(" or ", ",").split(",")]
                suggestion = did_you_mean(str(err.get("input")), options)
            elif kind == "missing":
                expected = "this key"
            elif kind == "string_pattern_mismatch":
                pattern = str(err.get("ctx", {}).get("pattern", ""))
                # by what the pattern accepts: "-" is also in a class such as [0-5]
                if pattern.startswith("^[a-z]"):
                    expected = "a lower-case identifier such as 'claimed_amount'"
                elif _accepts(pattern, "08:30-12:00"):
                    expected = "an interval such as '08:30-12:00' (24-hour clock)"
                elif _accepts(pattern, "09:00"):
                    expected = "a time of day such as '09:00' (24-hour clock)"
                else:
                    expected = f"text matching {pattern}"
            message = err["msg"] if kind == "missing" else f"{err['msg']} (got {shown})"
            problem = source.problem(item.path, message, expected=expected,
                                     suggestion=suggestion)
        marker = (problem.path, problem.message)
        if marker not in seen:
            seen.add(marker)
            problems.append(problem)
    return problems
