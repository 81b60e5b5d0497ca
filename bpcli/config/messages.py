"""Config problems in plain words: what `load_config` reports, one line per problem.

    problem(error, data, root) -> (key path, message)     one pydantic error, reworded
    located(problems, name, positions, applied) -> lines   'FILE:LINE:COL key.path: message', sorted
    show(value) -> str                                     a value as written in YAML, cut to 60 characters

A message says what is allowed, from the declared type ("must be a number in
[0, 1) (got 1.5)", "unknown key; allowed: ... Did you mean 'model'?"), and a
problem is placed at the line and column of its key in the file, or at the
`--set` override that put it there.
"""

from typing import get_args, get_origin

from pydantic import BaseModel

from bpcli.errors import did_you_mean
from bpcli.config.schema import describe_type, is_optional, tag_key, unwrap, variants_of, with_article
from bpcli.config.yamlio import Position, dump_yaml, format_path


def problem(error: dict, data: dict, root) -> tuple[tuple, str]:
    """(key path, plain message) for one pydantic error of validating `data` against the model `root`."""
    loc, kind, value = error["loc"], error["type"], error.get("input")
    path = _key_path(loc, data)
    if kind == "extra_forbidden":
        parent = unwrap(_type_at(root, loc[:-1]))
        allowed = sorted(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
        return path, f"unknown key; allowed: {', '.join(allowed) or 'none'}.{did_you_mean(loc[-1], allowed)}"
    if kind == "literal_error":
        return path, _unknown_value(value, get_args(unwrap(_type_at(root, loc))))
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        key = error["ctx"]["discriminator"].strip("'")
        tags = tuple(variants_of(_type_at(root, loc)))
        if kind == "union_tag_not_found":
            return path + (key,), f"required key is missing; one of: {', '.join(sorted(tags))}"
        written_as_mapping = isinstance(_value_at(data, path), dict)   # not a bare name like `activation: relu`
        return path + ((key,) if written_as_mapping else ()), _unknown_value(error["ctx"]["tag"], tags)
    if kind == "missing":
        return path, "required key is missing"
    if kind in ("unknown_dataset", "folder_name"):
        return path, error["msg"]
    return path, f"must be {_must_be(root, loc) or _PLAIN.get(kind, error['msg'])} (got {show(value)})"


_PLAIN = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false", "string_type": "a string",
          "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
          "model_attributes_type": "a mapping", "finite_number": "a finite number"}


def _unknown_value(value, allowed) -> str:
    return f"unknown value {show(value)}; allowed: {', '.join(sorted(allowed))}.{did_you_mean(value, allowed)}"


def _value_at(data, path: tuple):
    for part in path:
        data = data[part] if isinstance(data, (dict, list)) else None
    return data


def _key_path(loc: tuple, data) -> tuple:
    """pydantic's loc as the key path in the file: drop the union tags pydantic inserts into it."""
    path, node = [], data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and (part in node or (i == len(loc) - 1 and isinstance(part, str))):
            path.append(part)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
    return tuple(path)


def located(problems, name: str, positions: dict, applied: list) -> list[str]:
    """Each problem as 'FILE:LINE:COL key.path: message' (or '--set ...: message'), file lines sorted."""
    rows = []
    for path, message in problems:
        source = _override_source(path, applied, positions)
        if source:
            where = f"--set {source[1]}" + (f" {format_path(path)}" if path != applied[source[0]][0] else "")
            rows.append(((1, source[0], 0), f"{where}: {message}"))
            continue
        prefix = next(path[:n] for n in range(len(path), -1, -1) if path[:n] in positions or n == 0)
        position = positions.get(prefix, Position(1, 1))
        key = f" {format_path(path)}" if path else ""
        rows.append(((0, position.line, position.column), f"{name}:{position}{key}: {message}"))
    return [line for _, line in sorted(rows, key=lambda row: row[0])]


def _override_source(path: tuple, applied: list, positions: dict) -> tuple[int, str] | None:
    """(index, text) of the last --set that put the problem's key there, or None if the file did.

    A --set owns the value it set and everything inside it, and also the keys it had to
    create on the way: `--set optimiser.lr=0.1` made the (unknown) key `optimiser`, which
    is in no line of the file, so the problem is the argument's, not the file's first line.
    """
    for i, (opath, text) in reversed(list(enumerate(applied))):
        if path[:len(opath)] == opath or (opath[:len(path)] == path and path not in positions):
            return i, text
    return None


def show(value) -> str:
    """A value as written in YAML (strings quoted, lists and mappings in flow style), cut to 60 characters."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = repr(value)
    else:
        text = dump_yaml(value, flow=True).strip().removesuffix("\n...").strip()
    return text if len(text) <= 60 else text[:57] + "..."


def _type_at(root, loc: tuple):
    """The declared type at a pydantic loc (which names union tags) under the model `root`, or None."""
    tp = root
    for part in loc:
        tp = unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            tp = tp.model_fields[part].annotation if part in tp.model_fields else None
        elif get_origin(tp) is list and isinstance(part, int):
            tp = get_args(tp)[0]
        else:
            tp = variants_of(tp).get(part)
        if tp is None:
            return None
    return tp


def _must_be(root, loc: tuple) -> str | None:
    """'a number in [0, 1)' for the field or list item at loc, from its declaration; None if unknown."""
    parent = unwrap(_type_at(root, loc[:-1]))
    if isinstance(parent, type) and issubclass(parent, BaseModel) and loc[-1] in parent.model_fields:
        annotation, metadata = parent.model_fields[loc[-1]].annotation, parent.model_fields[loc[-1]].metadata
    elif get_origin(parent) is list and isinstance(loc[-1], int):
        annotation, metadata = get_args(parent)[0], ()
    else:
        return None
    kind, allowed = describe_type(annotation, metadata)
    union = bool(variants_of(annotation))
    text = with_article(f"{kind} with '{tag_key(annotation)}'" if union else kind)
    if allowed:
        text += f" (one of: {allowed})" if union else f" in {allowed}" if allowed[0] in "[(" else f" {allowed}"
    return f"null or {text}" if is_optional(annotation) else text
