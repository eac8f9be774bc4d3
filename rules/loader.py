"""Load a rule file: safe YAML → pydantic structure → reference, type and graph checks.

Every problem of every pass is collected and raised together as one ``RuleError``.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from importlib import resources
from pathlib import Path as FilePath
from typing import Any

from pydantic import BaseModel, ValidationError

from complaintflow.errors import RuleError, RuleProblem
from complaintflow.rules.check import check_rule_file, did_you_mean
from complaintflow.rules.model import RuleFile
from complaintflow.rules.ruleset import RuleSet
from complaintflow.rules.source import Path, SourceMap, read_yaml

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


def parse_rules(text: str, source_name: str = "<string>") -> RuleSet:
    """Check ``text`` as a rule file; raise ``RuleError`` listing every problem."""
    data, source, problems = read_yaml(text, source_name)
    if problems:
        raise RuleError(problems)
    if not isinstance(data, dict):
        raise RuleError([source.problem((), "the rule file must be a mapping", "a mapping")])
    try:
        definition = RuleFile.model_validate(data)
    except ValidationError as exc:
        problems = _structural_problems(exc, data, source)
        problems.extend(_check_remainder(exc, data, source, {p.path for p in problems}))
        raise RuleError(problems) from None
    problems = check_rule_file(definition, source)
    if problems:
        raise RuleError(problems)
    version = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return RuleSet.build(definition, version, text, source_name)


_LISTS: tuple[tuple[str, ...], ...] = (
    ("states",), ("roles",), ("fields",), ("transitions",), ("separation_of_duties",),
    ("severity", "rules"),
)


class _ShiftedSource(SourceMap):
    """A source map for pruned data: list indices are mapped back to the document's."""

    def __init__(self, base: SourceMap, kept: dict[tuple[str, ...], list[int]]) -> None:
        super().__init__(base.file, base.positions, base.key_positions)
        self.kept = kept

    def translate(self, path: Path) -> Path:
        for prefix, kept in self.kept.items():
            n = len(prefix)
            if tuple(path[:n]) == prefix and len(path) > n and isinstance(path[n], int):
                return (*path[:n], kept[path[n]], *path[n + 1:])
        return path

    def problem(self, path: Path, message: str, **kw: Any) -> RuleProblem:
        return super().problem(self.translate(path), message, **kw)


def _check_remainder(exc: ValidationError, data: dict[str, Any], source: SourceMap,
                     reported: set[str]) -> list[RuleProblem]:
    """Drop the list items that failed the structural pass and check what is left, so that
    reference and graph problems are reported in the same run."""
    bad: dict[tuple[str, ...], set[int]] = {}
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        prefix = next((p for p in _LISTS if loc[: len(p)] == p and len(loc) > len(p)
                       and isinstance(loc[len(p)], int)), None)
        if prefix is None:
            return []  # a top-level problem: nothing sensible is left to check
        bad.setdefault(prefix, set()).add(int(loc[len(prefix)]))
    pruned: dict[str, Any] = dict(data)
    kept: dict[tuple[str, ...], list[int]] = {}
    for prefix, indices in bad.items():
        parent: dict[str, Any] = pruned
        for key in prefix[:-1]:
            parent[key] = dict(parent[key])
            parent = parent[key]
        items = parent[prefix[-1]]
        kept[prefix] = [i for i in range(len(items)) if i not in indices]
        parent[prefix[-1]] = [items[i] for i in kept[prefix]]
    try:
        definition = RuleFile.model_validate(pruned)
    except ValidationError:
        return []
    shifted = _ShiftedSource(source, kept)
    return [p for p in check_rule_file(definition, shifted, graph=False) if p.path not in reported]


# -- mapping pydantic's errors back onto the document ---------------------------------------

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


def _field_annotation(model: type[BaseModel], key: str) -> Any:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info.annotation
    return None


def _model_at(loc: tuple[Any, ...], data: Any) -> tuple[type[BaseModel] | None, Path]:
    """Walk ``loc`` through the models and the data; return the model at the end and the
    path in the document (pydantic's union tags are not part of the document)."""
    current: Any = RuleFile
    node: Any = data
    path: list[str | int] = []
    for part in loc:
        options = [o for o in _unwrap(current) if o is not type(None)]
        models = [o for o in options if isinstance(o, type) and issubclass(o, BaseModel)]
        if isinstance(part, int):
            seq = [o for o in options if typing.get_origin(o) is list]
            if seq and isinstance(node, list) and part < len(node):
                current, node = typing.get_args(seq[0])[0], node[part]
                path.append(part)
                continue
            return None, tuple(path)
        if isinstance(node, dict) and part in node and models:
            model = next((m for m in models if _field_annotation(m, part) is not None),
                         models[0])
            current, node = _field_annotation(model, part), node[part]
            path.append(part)
            continue
        by_name = [m for m in models if m.__name__ == part]
        if by_name:
            current = by_name[0]
            continue
        if isinstance(node, dict) and models:
            # a union tag such as 'compare' or 'literal': stay on this node
            current = models[0] if part in ("compare", "all", "any", "not", "ref") else current
            if part not in ("compare", "all", "any", "not", "ref", "literal"):
                path.append(part)
                return None, tuple(path)
            continue
        if part in ("literal", "ref"):
            continue
        path.append(part)
        return None, tuple(path)
    models = [o for o in _unwrap(current) if isinstance(o, type) and issubclass(o, BaseModel)]
    return (models[0] if models else None), tuple(path)


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _structural_problems(exc: ValidationError, data: Any,
                         source: SourceMap) -> list[RuleProblem]:
    problems: list[RuleProblem] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            parent, path = _model_at(loc[:-1], data)
            key = str(loc[-1])
            full: Path = (*path, key)
            allowed = _allowed_keys(parent) if parent else []
            problem = source.problem(
                full, f"unknown key {key!r}",
                expected=("one of " + ", ".join(allowed)) if allowed else None,
                suggestion=did_you_mean(key, allowed), key=True,
            )
        else:
            _, path = _model_at(loc, data)
            expected = None
            suggestion = None
            if kind == "literal_error":
                expected = str(err.get("ctx", {}).get("expected", ""))
                options = [o.strip(" '") for o in expected.replace(" or ", ",").split(",")]
                suggestion = did_you_mean(str(err.get("input")), options)
            elif kind == "missing":
                expected = "this key"
            elif kind == "string_pattern_mismatch":
                expected = "a lower-case identifier such as 'claimed_amount'"
            value = err.get("input")
            shown = json.dumps(value, ensure_ascii=False, default=str)[:60]
            message = err["msg"] if kind == "missing" else f"{err['msg']} (got {shown})"
            problem = source.problem(path, message, expected=expected, suggestion=suggestion)
        marker = (problem.path, problem.message)
        if marker not in seen:
            seen.add(marker)
            problems.append(problem)
    return problems
