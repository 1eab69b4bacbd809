"""YAML with positions: a scenario file as plain data plus where each value stands.

PyYAML's composer keeps the start mark of every node; this module builds the plain
Python value from the node tree itself and records, for every JSON path, the line
and column of the value (and of the key, for mapping entries). Validation problems
can then say ``line 12, column 5`` next to ``$.timeline[2].fault.type``. Duplicate
keys, which YAML silently resolves to the last one, are reported, as are non-string
keys (``on:`` is the boolean true in YAML 1.1).

A scenario file comes from anyone, so loading it is bounded: its size, its nesting
depth (checked while composing, before any recursion can run away), the number of
aliases, and the number of values the aliases expand to (a "billion laughs" file of a
few hundred bytes would otherwise take gigabytes). Numbers must be finite and fit in
64 bits. Each limit is one ``YamlSyntaxError`` with the line where it was crossed.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterator
from typing import Any, Final

import msgspec
import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

PathPart = str | int
Path = tuple[PathPart, ...]

_MAX_DEPTH: Final = 64
MAX_BYTES: Final = 512 * 1024
"""Largest scenario file; the shipped ones are a few KiB."""
MAX_ALIASES: Final = 1_000
MAX_VALUES: Final = 50_000
"""Values a document may expand to, aliases included."""
_MAX_INT: Final = 2**63 - 1
_LONG_SCALAR: Final = 64
_LONG_INT: Final = re.compile(r"[-+]?[0-9_]+")
_LONG_FLOAT: Final = re.compile(r"[-+]?[0-9_]*\.?[0-9_]*(?:[eE][-+]?[0-9]+)?")


class Position(msgspec.Struct, frozen=True):
    """A place in the file, 1-based."""

    line: int
    column: int

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}"


class SourceProblem(msgspec.Struct, frozen=True, kw_only=True):
    """Something wrong with the file itself (syntax, duplicate or bad keys)."""

    path: str
    message: str
    position: Position | None


class YamlSyntaxError(Exception):
    """The text is not YAML; carries the position PyYAML reported."""

    def __init__(self, message: str, position: Position | None) -> None:
        self.message = message
        self.position = position
        where = f"{position}: " if position else ""
        super().__init__(f"{where}{message}")


class Located:
    """A loaded document: ``data`` and the position of every value in it.

    Args:
        data: the plain value (dicts, lists, str, int, float, bool, None).
        values: position of the value at each path.
        keys: position of the key of each mapping entry, by the entry's path.
        problems: duplicate or non-string keys found while loading.
    """

    def __init__(
        self, data: Any, values: dict[Path, Position], keys: dict[Path, Position],
        problems: list[SourceProblem],
    ) -> None:
        self.data = data
        self.values = values
        self.keys = keys
        self.problems = problems

    def position(self, path: Path, *, key: bool = False) -> Position | None:
        """Where ``path`` stands; the nearest enclosing value when it does not exist
        (a missing property points at the object that lacks it)."""
        if key and path in self.keys:
            return self.keys[path]
        for end in range(len(path), -1, -1):
            found = self.values.get(path[:end])
            if found is not None:
                return found
        return None


def json_path(path: Path) -> str:
    """``("timeline", 2, "fault")`` as ``$.timeline[2].fault``."""
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier() or part.replace("-", "_").isidentifier():
            out += f".{part}"
        else:
            out += f"[{part!r}]"
    return out


def _position(node: Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


def _mark_position(mark: Any) -> Position | None:
    return Position(mark.line + 1, mark.column + 1) if mark is not None else None


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, composing nodes only (nothing is constructed here), that
    refuses deep nesting before the composer's recursion could exhaust the stack, and
    more than ``MAX_ALIASES`` aliases."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        # PyYAML's implicit int and float patterns (sexagesimal 1:30) backtrack
        # quadratically: a 5000-digit number took seconds. A long plain scalar is
        # typed here with linear patterns instead.
        if kind is ScalarNode and implicit[0] and len(value) > _LONG_SCALAR:
            if _LONG_INT.fullmatch(value):
                return "tag:yaml.org,2002:int"
            if _LONG_FLOAT.fullmatch(value):
                return "tag:yaml.org,2002:float"
            return "tag:yaml.org,2002:str"
        tag: str = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
        return tag

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise YamlSyntaxError(f"more than {MAX_ALIASES} aliases (*name); write the "
                                      "values out", _mark_position(event.start_mark))
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                raise YamlSyntaxError(f"nested deeper than {_MAX_DEPTH} levels",
                                      _mark_position(event.start_mark))
            node: Node | None = super().compose_node(parent, index)
            return node
        finally:
            self._depth -= 1


class _Builder:
    def __init__(self) -> None:
        self.constructor = SafeConstructor()
        self.values: dict[Path, Position] = {}
        self.keys: dict[Path, Position] = {}
        self.problems: list[SourceProblem] = []
        self._active: set[int] = set()
        self._built = 0

    def build(self, node: Node, path: Path) -> Any:
        self._built += 1
        if self._built > MAX_VALUES:
            raise YamlSyntaxError(
                f"the document expands to more than {MAX_VALUES:,} values (aliases of "
                "aliases?); a scenario is far smaller", _position(node))
        self.values[path] = _position(node)
        if len(path) > _MAX_DEPTH:
            self._problem(path, f"nested deeper than {_MAX_DEPTH} levels", node)
            return None
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._active:
            # An alias of an enclosing node: a cycle, which JSON cannot hold.
            self._problem(path, "recursive alias", node)
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
        finally:
            self._active.discard(id(node))
        self._problem(path, f"unsupported YAML node {type(node).__name__}", node)
        return None

    def _scalar(self, node: ScalarNode, path: Path) -> Any:
        try:
            value = self.constructor.construct_object(node, deep=True)
        except ConstructorError as exc:
            self._problem(path, str(exc.problem or exc), node)
            return None
        except (ValueError, OverflowError):
            # int() refuses more than 4300 digits; report it as a bad number.
            self._problem(path, f"{_clip(node.value)} is not a number cdb can use "
                                "(too many digits)", node)
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self._problem(path, f"{node.value!r} is not a finite number", node)
            return None
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_INT:
            self._problem(path, f"{_clip(node.value)} is out of range (at most 2^63 - 1)",
                          node)
            return None
        if isinstance(value, dt.datetime | dt.date):
            return value.isoformat()  # JSON has no dates; the schema sees a string
        if isinstance(value, bytes | set):
            self._problem(path, f"{type(value).__name__} values are not allowed", node)
            return None
        return value

    def _mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        try:
            self.constructor.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
        except ConstructorError as exc:
            self._problem(path, str(exc.problem or exc), node)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._scalar(key_node, path) if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str):
                shown = key_node.value if isinstance(key_node, ScalarNode) else "a collection"
                self._problem(
                    path, f"key {shown!r} is not a string (quote it: {str(shown)!r})", key_node
                )
                continue
            child = (*path, key)
            if key in out:
                self._problem(child, f"duplicate key {key!r} (first at {self.keys[child]})",
                              key_node)
            self.keys[child] = _position(key_node)
            out[key] = self.build(value_node, child)
        return out

    def _problem(self, path: Path, message: str, node: Node) -> None:
        self.problems.append(
            SourceProblem(path=json_path(path), message=message, position=_position(node))
        )


def _clip(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:20] + "..." + text[-8:])


def load(text: str) -> Located:
    """Parse one YAML document with positions.

    Raises:
        YamlSyntaxError: not YAML, more than one document, or over a bound (size,
            depth, aliases, expanded values).
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        line = text.count("\n", 0, MAX_BYTES) + 1
        raise YamlSyntaxError(f"the file is {size:,} bytes, more than the {MAX_BYTES:,} a "
                              "scenario may have", Position(line, 1))
    try:
        nodes = list(yaml.compose_all(text, Loader=_BoundedLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        position = Position(mark.line + 1, mark.column + 1) if mark else None
        message = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        raise YamlSyntaxError(message, position) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(str(exc), None) from None
    except RecursionError:  # not reachable with the depth bound; kept as a last guard
        raise YamlSyntaxError(f"nested deeper than {_MAX_DEPTH} levels", None) from None
    if len(nodes) > 1:
        raise YamlSyntaxError(
            "more than one YAML document (one scenario per file)", _position(nodes[1])
        )
    builder = _Builder()
    data = builder.build(nodes[0], ()) if nodes else None
    return Located(data, builder.values, builder.keys, builder.problems)


def walk_strings(value: Any, path: Path = ()) -> Iterator[tuple[Path, str]]:
    """Every string in ``value`` with its path (for substitutions)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from walk_strings(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from walk_strings(item, (*path, i))
