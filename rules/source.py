"""Safe YAML reading that keeps where every value came from.

PyYAML only *composes* the document into nodes here; it never constructs Python objects,
so tags such as ``!!python/object`` cannot run anything: any explicit tag is a problem.
Scalars are resolved by a small YAML-1.2-core-like resolver of our own, so that ``on``,
``off``, ``yes``, ``no`` stay strings and ``13:00`` does not become the sexagesimal 780.

A value that comes from an alias (``*name``) is located where the alias is used, and its
problems name the place of the aliased text as well: PyYAML's composer hands back the
anchored node itself for every alias, so our composer wraps it with the alias's own mark.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from complaintflow.errors import RuleProblem

__all__ = ["Located", "Path", "SourceMap", "Via", "format_path", "read_yaml"]

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


@dataclass(frozen=True)
class Via:
    """A value reached through an alias: the alias's name and where the value really is."""

    alias: str
    origin: Located

    def note(self) -> str:
        return f"via alias *{self.alias}, from line {self.origin.line}, " \
               f"column {self.origin.column}"


@dataclass
class SourceMap:
    """Where each key path of the document starts (1-based line and column).

    Inside an aliased value the position is the alias's, and ``via`` (``key_via`` for keys)
    keeps where the text is. ``lost`` are the paths whose value the reader refused (it reads
    them as null) and ``partial`` the mappings it dropped entries of (with the keys kept), so
    that the loader does not report their consequences as further problems."""

    file: str
    positions: dict[Path, Located] = field(default_factory=dict)
    key_positions: dict[Path, Located] = field(default_factory=dict)
    via: dict[Path, Via] = field(default_factory=dict)
    key_via: dict[Path, Via] = field(default_factory=dict)
    lost: set[Path] = field(default_factory=set)
    partial: dict[Path, frozenset[str]] = field(default_factory=dict)

    def locate(self, path: Path, *, key: bool = False) -> Located | None:
        """The position of ``path``, or of its nearest located ancestor."""
        return self._find(path, key=key)[0]

    def _find(self, path: Path, *, key: bool) -> tuple[Located | None, Via | None]:
        probe = tuple(path)
        if key and probe in self.key_positions:
            return self.key_positions[probe], self.key_via.get(probe)
        while True:
            if probe in self.positions:
                return self.positions[probe], self.via.get(probe)
            if not probe:
                return None, None
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
        loc, via = self._find(path, key=key)
        return RuleProblem(
            file=self.file,
            line=loc.line if loc else None,
            column=loc.column if loc else None,
            path=format_path(path),
            message=f"{message} ({via.note()})" if via else message,
            expected=expected,
            suggestion=suggestion,
        )


class _AliasNode(yaml.Node):
    """One use of an anchor: the node it stands for (``value``), marked where ``*name`` is."""

    def __init__(self, target: yaml.Node, anchor: str, mark: Any) -> None:
        super().__init__(target.tag, target, mark, mark)
        self.anchor = anchor


class _Composer(yaml.composer.Composer):
    """PyYAML's composer, except that an alias gives an ``_AliasNode``: PyYAML's returns the
    anchored node itself, so every use of it would be located at the anchor; and the nodes
    written with a tag are remembered (``tagged``: ``id`` to the tag written): a composed
    node carries the same tag whether ``!!str`` was written or the resolver chose it."""

    tagged: dict[int, str]

    if TYPE_CHECKING:  # supplied by the parser it is mixed with
        def check_event(self, *choices: Any) -> bool: ...
        def get_event(self) -> Any: ...
        def peek_event(self) -> Any: ...

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.get_event()
            if event.anchor not in self.anchors:
                raise yaml.composer.ComposerError(
                    None, None, f"found undefined alias {event.anchor!r}", event.start_mark)
            return _AliasNode(self.anchors[event.anchor], event.anchor, event.start_mark)
        written = self.peek_event().tag  # "!" too: the non-specific tag
        node = super().compose_node(parent, index)
        if written is not None and node is not None:
            self.tagged[id(node)] = written
        return node


if yaml.__with_libyaml__:
    # libyaml's parser (an order of magnitude faster; same events and marks) under our composer
    class _Loader(_Composer, yaml.CSafeLoader):
        def __init__(self, stream: str) -> None:
            yaml.CSafeLoader.__init__(self, stream)
            self.anchors: dict[Any, yaml.Node] = {}
            self.tagged = {}
else:  # pragma: no cover - PyYAML built without libyaml
    class _Loader(_Composer, yaml.SafeLoader):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            yaml.SafeLoader.__init__(self, stream)
            self.tagged = {}


class _Reader:
    def __init__(self, source: SourceMap, tagged: dict[int, str]) -> None:
        self.source = source
        self.tagged = tagged  # the nodes written with a tag (``_Composer``)
        self.problems: list[RuleProblem] = []
        self.budget = _MAX_VALUES

    @staticmethod
    def here(node: yaml.Node) -> Located:
        return Located(node.start_mark.line + 1, node.start_mark.column + 1)

    def fail(self, path: Path, at: Located, via: Via | None, message: str,
             expected: str | None = None) -> None:
        if via is not None:
            message = f"{message} ({via.note()})"
        self.problems.append(
            RuleProblem(self.source.file, at.line, at.column, format_path(path), message,
                        expected)
        )

    def lose(self, path: Path, at: Located, via: Via | None, message: str,
             expected: str | None = None) -> None:
        """Report a value that cannot be read; it is read as null."""
        self.fail(path, at, via, message, expected)
        self.source.lost.add(path)

    def value(self, node: yaml.Node, path: Path, active: set[int],
              alias: tuple[str, Located] | None = None) -> Any:
        """The plain data of ``node``. ``alias``: the outermost alias this value is reached
        through (its name and where it is used); everything inside is located there."""
        if isinstance(node, _AliasNode):
            alias = alias or (node.anchor, self.here(node))
            node = node.value
        self.budget -= 1
        at, via = self.place(node, alias)
        if self.budget == 0:
            self.lose(path, at, via, f"the document expands to more than {_MAX_VALUES} values",
                      "fewer aliases")
        if self.budget <= 0:
            self.source.lost.add(path)
            return None
        self.source.positions[path] = at
        if via is not None:
            self.source.via[path] = via
        if len(path) > _MAX_DEPTH or id(node) in active:
            self.lose(path, at, via, "document nests too deeply or refers to itself")
            return None
        tag = self.tagged.get(id(node))
        if tag is not None or node.tag not in _STANDARD_TAGS:
            self.lose(path, at, via, f"YAML tag {tag or node.tag!r} is not allowed in rule files",
                      "plain YAML without tags")
            return None
        if isinstance(node, yaml.ScalarNode):
            try:
                return self.scalar(node)
            except ValueError:  # an integer longer than Python converts
                self.lose(path, at, via, "the number has too many digits",
                          f"at most {sys.get_int_max_str_digits()} digits")
                return None
        active = active | {id(node)}
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, (*path, i), active, alias)
                    for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path, active, alias)
        self.lose(path, at, via, "unsupported YAML node")  # pragma: no cover - 3 kinds only
        return None

    def mapping(self, node: yaml.MappingNode, path: Path, active: set[int],
                alias: tuple[str, Located] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        partial = False
        for key_node, value_node in node.value:
            key_alias = alias
            if isinstance(key_node, _AliasNode):
                key_alias = alias or (key_node.anchor, self.here(key_node))
                key_node = key_node.value
            key_at, key_via = self.place(key_node, key_alias)
            merge = key_node.tag == "tag:yaml.org,2002:merge"
            if not isinstance(key_node, yaml.ScalarNode) or merge:
                self.fail(path, key_at, key_via, "mapping keys must be plain strings")
                partial = True
                continue
            key = str(key_node.value)
            child = (*path, key)
            tag = self.tagged.get(id(key_node))
            if tag is not None or key_node.tag not in _STANDARD_TAGS:
                # read as the plain key it carries
                self.fail(child, key_at, key_via,
                          f"YAML tag {tag or key_node.tag!r} is not allowed in rule files",
                          "plain YAML without tags")
            if key in out:
                self.fail(child, key_at, key_via, f"duplicate key {key!r}")
                continue
            self.source.key_positions[child] = key_at
            if key_via is not None:
                self.source.key_via[child] = key_via
            out[key] = self.value(value_node, child, active, alias)
        if partial:
            self.source.partial[path] = frozenset(out)
        return out

    def place(self, node: yaml.Node, alias: tuple[str, Located] | None
              ) -> tuple[Located, Via | None]:
        """Where a problem in ``node`` is reported: at the alias it is reached through."""
        if alias is None:
            return self.here(node), None
        return alias[1], Via(alias[0], self.here(node))

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


#: the composer's context for an anchor defined twice
_DUPLICATE_ANCHOR = re.compile(r"found duplicate anchor (.+); first occurrence$")


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
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = f"malformed YAML: {exc.problem or exc.context}"
        duplicate = _DUPLICATE_ANCHOR.match(exc.context or "")
        if duplicate and exc.context_mark is not None:  # PyYAML: "second occurrence"
            first = exc.context_mark
            message = (f"anchor {duplicate.group(1)} is defined twice (first at line "
                       f"{first.line + 1}, column {first.column + 1})")
        problem = RuleProblem(
            file,
            mark.line + 1 if mark else None,
            mark.column + 1 if mark else None,
            "",
            message,
            "well-formed YAML" if not duplicate else "each anchor name defined once",
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
    finally:
        loader.dispose()
    if node is None:
        return None, source, [RuleProblem(file, 1, 1, "", "the rule file is empty",
                                          "a mapping")]
    reader = _Reader(source, loader.tagged)
    data = reader.value(node, (), set())
    return data, source, reader.problems
