"""Reading config YAML as plain data, safely, with the position of every key.

    read_yaml_file(path) -> Document        parse_yaml(text, name) -> Document

A Document is the data (dicts, lists, str, int, float, bool, None) and the
1-based (line, column) of every key path, e.g. ("model", "layers", 0, "units"),
so that a later validation error can point at the spot in the file.

Why not yaml.safe_load: PyYAML follows YAML 1.1, where `1e-3` is a string and
`yes`/`no`/`on`/`off` are booleans, and a repeated key silently overwrites the
first. Configs follow the YAML 1.2 core schema instead, and:

* Only data: the text is composed into nodes (yaml.compose runs no
  constructors), then turned into Python values here from an allow-list of
  tags; any other tag (`!!python/...`, `!!timestamp`, custom `!tags`) is an
  error naming its line. No code path runs anything the file names.
* Duplicate keys are an error naming both lines.
* Caps: at most 1 MiB of text, and at most 10,000 nodes after alias expansion
  (counted on the node graph before anything is expanded, so an alias bomb is
  refused in microseconds); recursive aliases are refused.
* Merge keys (`<<`) are YAML 1.1 only: here `<<` is an ordinary (unknown) key.
* Keys are names: a key is the text as written (`1:` is the key "1").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from bpcli.errors import ConfigError

MAX_BYTES = 1 << 20
MAX_NODES = 10_000
MAX_DEPTH = 64

_CORE = "tag:yaml.org,2002:"
NULL, BOOL, INT, FLOAT, STR = (_CORE + t for t in ("null", "bool", "int", "float", "str"))
MAP, SEQ = _CORE + "map", _CORE + "seq"


class Yaml12Loader(yaml.SafeLoader):
    """SafeLoader resolving plain scalars by the YAML 1.2 core schema (used only to compose nodes)."""

    yaml_implicit_resolvers: dict = {}   # drop every YAML 1.1 resolver (bool yes/no, timestamp, merge, ...)


# The YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution), except that
# true/false are booleans in any case, as the config reference promises.
for _tag, _pattern in (
    (NULL, r"~|null|Null|NULL|"),
    (BOOL, r"(?i:true|false)"),
    (INT, r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+"),
    (FLOAT, r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)"),
):
    Yaml12Loader.add_implicit_resolver(_tag, re.compile(rf"(?:{_pattern})\Z"), None)


class Yaml12Dumper(yaml.SafeDumper):
    """SafeDumper that quotes a string whenever YAML 1.1 or 1.2 would read it as something else.

    Its resolvers are PyYAML's (1.1) plus the 1.2 ones above, so '1e-3' and 'yes'
    are both quoted and the output reads back the same with either kind of reader.
    """


for _tag, _regexp in [(t, r) for resolvers in Yaml12Loader.yaml_implicit_resolvers.values() for t, r in resolvers]:
    Yaml12Dumper.add_implicit_resolver(_tag, _regexp, None)

# Unicode line breaks (NEL, LS, PS) that PyYAML's emitter, with allow_unicode, would leave inside a plain or
# single-quoted scalar, where a reader folds them into a space: such strings are double-quoted (escaped \N, \L, \P).
_UNICODE_BREAKS = re.compile("[\x85\u2028\u2029]")


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = '"' if _UNICODE_BREAKS.search(text) else None
    return dumper.represent_scalar(STR, text, style=style)


Yaml12Dumper.add_representer(str, _represent_str)


def dump_yaml(data, flow: bool = False) -> str:
    """Plain data as YAML (block style, or flow style on one line), keys in order, readable back by parse_yaml.

    Every YAML bpcli writes for itself to read (a run's config.yaml, a sweep's best.yaml,
    `config show`) goes through here: PyYAML's own dumpers follow YAML 1.1 and would
    leave `1e3` bare, which this YAML 1.2 reader takes for a number.
    """
    return yaml.dump(data, Dumper=Yaml12Dumper, sort_keys=False, allow_unicode=True, default_flow_style=flow,
                     width=float("inf") if flow else 80)


class Position(NamedTuple):
    line: int      # 1-based
    column: int    # 1-based

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


@dataclass
class Document:
    data: Any
    positions: dict[tuple, Position] = field(default_factory=dict)


def format_path(path) -> str:
    return ".".join(str(part) for part in path)


def problems_error(name: str, lines: list[str], detail: str = "") -> ConfigError:
    """The one error listing every problem: 'NAME: N problems in the config:' then a line each.

    `detail` (the problems without their positions) is kept on the error as .detail.
    """
    count = f"{len(lines)} problem{'s' if len(lines) != 1 else ''}"
    error = ConfigError(f"{count} in the config:\n" + "\n".join(f"  {line}" for line in lines), file=name)
    error.detail = detail or "; ".join(lines)
    return error


def _error(name: str, message: str, position: Position | None = None) -> ConfigError:
    """A single fatal reading error, 'NAME:LINE:COL: message'; .detail is the message alone."""
    error = ConfigError(f"{name}:{position}: {message}" if position else f"{name}: {message}")
    error.file, error.line, error.detail = name, position.line if position else None, message
    return error


def read_yaml_file(path: str | Path) -> Document:
    """Parse a YAML file (UTF-8, at most MAX_BYTES) into a Document."""
    name = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)   # never read more than the cap, whatever the file
    except OSError as error:
        raise _error(name, f"cannot read the config: {error.strerror or error}") from None
    if len(raw) > MAX_BYTES:
        raise _error(name, f"the file is larger than {MAX_BYTES // 2**20} MiB; a config is a short text file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise _error(name, f"not UTF-8 text (byte {error.start})") from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str = "<config>") -> Document:
    """Parse YAML text into a Document; every problem is a ConfigError naming NAME and the line."""
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise _error(name, f"the text is larger than {MAX_BYTES // 2**20} MiB; a config is a short text file")
    try:
        root = yaml.compose(text, Loader=Yaml12Loader)
        if root is None:
            return Document(None)
        _check_size(root, name)
        builder = _Builder()
        data = builder.build(root, ())
    except yaml.MarkedYAMLError as error:
        raise _syntax_error(name, error) from None
    except yaml.YAMLError as error:   # e.g. a control character the reader refuses
        raise _error(name, f"YAML error: {error}") from None
    except RecursionError:
        raise _error(name, f"nested too deeply (more than {MAX_DEPTH} levels)") from None
    if builder.problems:
        lines = [f"{name}:{where}: {message}" for where, message in builder.problems]
        raise problems_error(name, lines, "; ".join(message for _, message in builder.problems))
    return Document(data, builder.positions)


def _position(mark) -> Position:
    return Position(mark.line + 1, mark.column + 1)


def _syntax_error(name: str, error: yaml.MarkedYAMLError) -> ConfigError:
    mark = error.problem_mark or error.context_mark
    problem = error.problem or "invalid YAML"
    context = f" ({error.context})" if error.context and error.problem else ""
    return _error(name, f"YAML syntax error: {problem}{context}", _position(mark) if mark else None)


def _check_size(root: yaml.Node, name: str) -> None:
    """Refuse recursive aliases and documents over MAX_NODES nodes once aliases are expanded.

    Aliases share node objects, so sizes are memoized per node: the count is of the
    expanded tree, but the work is linear in the text.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node, depth: int) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in active:
            raise _error(name, "a recursive alias (an anchor used inside itself)", _position(node.start_mark))
        if depth > MAX_DEPTH:
            raise RecursionError
        active.add(id(node))
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else (
            node.value if isinstance(node, yaml.SequenceNode) else [])
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > MAX_NODES:
                raise _error(name, f"more than {MAX_NODES} values once aliases are expanded "
                                   "(an alias bomb?); a config is small")
        active.discard(id(node))
        sizes[id(node)] = total
        return total

    size(root, 0)


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag


class _Builder:
    """Nodes to Python values, collecting problems (disallowed tags, duplicate keys) as it goes."""

    def __init__(self):
        self.positions: dict[tuple, Position] = {}
        self.problems: list[tuple[str, str]] = []      # ("LINE:COL key.path", message)

    def problem(self, node, path, message: str) -> None:
        self.problems.append((f"{_position(node.start_mark)}" + (f" {format_path(path)}" if path else ""), message))

    def build(self, node, path: tuple):
        self.positions.setdefault(path, _position(node.start_mark))
        expected = MAP if isinstance(node, yaml.MappingNode) else SEQ if isinstance(node, yaml.SequenceNode) else None
        if expected and node.tag != expected or not expected and node.tag not in _SCALARS:
            self.problem(node, path, f"the tag {_short_tag(node.tag)} is not allowed: a config holds plain "
                                     "data only (mappings, lists, strings, numbers, true/false, null)")
            return None
        if isinstance(node, yaml.MappingNode):
            return self.build_mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        try:
            return _SCALARS[node.tag](node.value)
        except ValueError:
            self.problem(node, path, f"cannot read {node.value!r} as {_short_tag(node.tag)}")
            return None

    def build_mapping(self, node, path: tuple) -> dict:
        out: dict[str, Any] = {}
        seen: dict[str, Position] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _SCALARS:
                self.problem(key_node, path, "a key must be a plain name (no list, mapping or tag)")
                continue
            key, where = key_node.value, _position(key_node.start_mark)
            if key in seen:
                self.problem(key_node, path + (key,), f"duplicate key: first on line {seen[key].line}, "
                                                      f"again on line {where.line}")
                continue
            seen[key] = self.positions[path + (key,)] = where
            out[key] = self.build(value_node, path + (key,))
        return out


def _to_int(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    base = 8 if digits[:2] == "0o" else 16 if digits[:2] in ("0x", "0X") else 10
    return sign * int(digits[2:] if base != 10 else digits, base)   # YAML 1.2: 010 is ten, not octal


def _to_float(text: str) -> float:
    special = {".inf": "inf", "+.inf": "inf", "-.inf": "-inf", ".nan": "nan"}
    return float(special.get(text.lower(), text))


def _to_bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(text)
    return text.lower() == "true"


def _to_null(text: str) -> None:
    if text not in ("", "~", "null", "Null", "NULL"):
        raise ValueError(text)


_SCALARS = {STR: str, INT: _to_int, FLOAT: _to_float, BOOL: _to_bool, NULL: _to_null}
