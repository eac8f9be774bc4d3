"""Safe YAML reading that keeps where every value came from.

PyYAML only *composes* the document into nodes here; it never constructs Python objects,
so tags such as ``!!python/object`` cannot run anything: any explicit tag is a problem.
Scalars are resolved by a small YAML-1.2-core-like resolver of our own, so that ``on``,
``off``, ``yes``, ``no`` stay strings and ``13:00`` does not become the sexagesimal 780.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from complaintflow.errors import RuleProblem

__all__ = ["Located", "Path", "SourceMap", "format_path", "read_yaml"]

Path = tuple[str | int, ...]

_STANDARD_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:merge",
    "tag:yaml.org,2002:value",
}
_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_MAX_DEPTH = 64
#: libyaml's composer when available (an order of magnitude faster; same nodes and marks)
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# aliases are expanded: without a budget, 20 lines of nested aliases expand to millions of values
_MAX_VALUES = 100_000


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True)
class Located:
    line: int
    column: int


@dataclass
class SourceMap:
    """Where each key path of the document starts (1-based line and column)."""

    file: str
    positions: dict[Path, Located] = field(default_factory=dict)
    key_positions: dict[Path, Located] = field(default_factory=dict)

    def locate(self, path: Path, *, key: bool = False) -> Located | None:
        """The position of ``path``, or of its nearest located ancestor."""
        probe = tuple(path)
        if key and probe in self.key_positions:
            return self.key_positions[probe]
        while True:
            if probe in self.positions:
                return self.positions[probe]
            if not probe:
                return None
            probe = probe[:-1]

    def problem(
        self,
        path: Path,
        message: str,
        *,
        expected: str | None = None,
        suggestion: str | None = None,
        key: bool = False,
    ) -> RuleProblem:
        loc = self.locate(path, key=key)
        return RuleProblem(
            file=self.file,
            line=loc.line if loc else None,
            column=loc.column if loc else None,
            path=format_path(path),
            message=message,
            expected=expected,
            suggestion=suggestion,
        )


class _Reader:
    def __init__(self, source: SourceMap) -> None:
        self.source = source
        self.problems: list[RuleProblem] = []
        self.budget = _MAX_VALUES

    def here(self, node: yaml.Node) -> Located:
        return Located(node.start_mark.line + 1, node.start_mark.column + 1)

    def fail(self, path: Path, node: yaml.Node, message: str, expected: str | None = None) -> None:
        loc = self.here(node)
        self.problems.append(
            RuleProblem(self.source.file, loc.line, loc.column, format_path(path), message,
                        expected)
        )

    def value(self, node: yaml.Node, path: Path, active: set[int]) -> Any:
        self.budget -= 1
        if self.budget == 0:
            self.fail(path, node, f"the document expands to more than {_MAX_VALUES} values",
                      "fewer aliases")
        if self.budget <= 0:
            return None
        self.source.positions[path] = self.here(node)
        if len(path) > _MAX_DEPTH or id(node) in active:
            self.fail(path, node, "document nests too deeply or refers to itself")
            return None
        if node.tag not in _STANDARD_TAGS:
            self.fail(path, node, f"YAML tag {node.tag!r} is not allowed in rule files",
                      "plain YAML without tags")
            return None
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        active = active | {id(node)}
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, (*path, i), active) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                merge = key_node.tag == "tag:yaml.org,2002:merge"
                if not isinstance(key_node, yaml.ScalarNode) or merge:
                    self.fail(path, key_node, "mapping keys must be plain strings")
                    continue
                key = str(key_node.value)
                child = (*path, key)
                if key in out:
                    self.fail(child, key_node, f"duplicate key {key!r}")
                    continue
                self.source.key_positions[child] = self.here(key_node)
                out[key] = self.value(value_node, child, active)
            return out
        self.fail(path, node, "unsupported YAML node")  # pragma: no cover - PyYAML has 3 kinds
        return None

    @staticmethod
    def scalar(node: yaml.ScalarNode) -> Any:
        text: str = node.value
        if node.style not in (None, ""):  # quoted or block scalars are always strings
            return text
        if text in ("", "~", "null", "Null", "NULL"):
            return None
        if text in ("true", "True", "TRUE"):
            return True
        if text in ("false", "False", "FALSE"):
            return False
        if _INT.fullmatch(text):
            return int(text)
        if _FLOAT.fullmatch(text) and any(c.isdigit() for c in text):
            return float(text)
        return text


def read_yaml(text: str, file: str) -> tuple[Any, SourceMap, list[RuleProblem]]:
    """Parse ``text`` safely; return the plain data, its source map and any problems."""
    source = SourceMap(file)
    # YAML's own test, done here because libyaml reports the place as a byte offset; lines
    # are counted at "\n" only (str.splitlines would also break at \x1c-\x1e, \v, \f)
    bad = yaml.reader.Reader.NON_PRINTABLE.search(text)
    if bad is not None:
        at = bad.start()
        line, column = text.count("\n", 0, at) + 1, at - (text.rfind("\n", 0, at) + 1) + 1
        return None, source, [RuleProblem(
            file, line, column, "",
            f"malformed YAML: control character U+{ord(bad.group()):04X} is not allowed",
            "well-formed YAML")]
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = RuleProblem(
            file,
            mark.line + 1 if mark else None,
            mark.column + 1 if mark else None,
            "",
            f"malformed YAML: {exc.problem or exc.context}",
            "well-formed YAML",
        )
        return None, source, [problem]
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow; no mark
        # libyaml counts exc.position in UTF-8 bytes, PyYAML in characters: find it ourselves
        found = yaml.reader.Reader.NON_PRINTABLE.search(text)
        position = found.start() if found else 0
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        shown = f"character U+{ord(found.group()):04X}" if found else f"input ({exc})"
        problem = RuleProblem(file, line, column, "", f"malformed YAML: {shown} is not allowed",
                              "printable text")
        return None, source, [problem]
    except yaml.YAMLError as exc:
        return None, source, [RuleProblem(file, None, None, "", f"malformed YAML: {exc}")]
    if node is None:
        return None, source, [RuleProblem(file, 1, 1, "", "the rule file is empty",
                                          "a mapping")]
    reader = _Reader(source)
    data = reader.value(node, (), set())
    return data, source, reader.problems
