"""YAML loading that remembers where every key came from, so validation errors can name file:line.

`load_with_lines(path)` returns the plain data plus a map from key path (tuple of str/int) to 1-based line.
`validate(model_cls, path)` loads, validates with pydantic and turns every error into one line in the user's
words, in file order: ``FILE:LINE: key.path: what is wrong; got VALUE`` (an unknown key names the nearest valid
one: ``decision.treshold: unknown key; did you mean threshold?``).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from inspector.errors import ConfigError

KeyPath = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


def _walk(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _walk(value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), lines)


def load_with_lines(path: Path) -> tuple[Any, dict[KeyPath, int]]:
    """Parse a YAML (or JSON) file; raise ConfigError with file:line on any read or syntax problem."""
    if not path.exists():
        raise ConfigError(f"{path}: file not found; give the path of an existing YAML file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; give the path of a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc}); check permissions and that it is UTF-8 text") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: YAML syntax error: {exc.problem}; fix the syntax at that line") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {' '.join(str(exc).split())}; fix the file") from None
    lines: dict[KeyPath, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return data, lines


def _line_for(loc: KeyPath, lines: dict[KeyPath, int]) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _fields_at(model_cls: type[BaseModel] | None, loc: KeyPath) -> list[str]:
    """The keys allowed in the section at `loc` of `model_cls` ([] when it is not a section of a model)."""
    model: Any = model_cls
    for part in loc:
        if model is None or isinstance(part, int):
            return []
        field = model.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        options = [a for a in get_args(ann) if a is not type(None)] if get_origin(ann) in (Union, UnionType) else [ann]
        model = next((a for a in options if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return [] if model is None else list(model.model_fields)


def _shown(value: Any) -> str:
    """A value as the user wrote it, short."""
    if isinstance(value, dict):
        return "a section of keys"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "nothing (an empty value)"}[value]
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


_MUST_BE: dict[str, str] = {
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text (quote it)",
    "list_type": "must be a list in brackets, e.g. [a, b]",
    "tuple_type": "must be a list in brackets, e.g. [a, b]",
    "dict_type": "must be a section of keys (indented key: value lines)",
    "model_type": "must be a section of keys (indented key: value lines)",
    "model_attributes_type": "must be a section of keys (indented key: value lines)",
    "string_too_short": "must not be empty",
    "path_type": "must be a file path",
    "finite_number": "must be a finite number",
}
_BOUNDS = (("gt", "greater than"), ("ge", "at least"), ("lt", "less than"), ("le", "at most"))


def _plain(err: Any) -> str:
    """What pydantic found wrong, in the user's words (no library terms)."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _MUST_BE:
        return _MUST_BE[kind]
    for key, words in _BOUNDS:
        if key in ctx:
            bound = ctx[key]
            return f"must be {words} {bound:g}" if isinstance(bound, int | float) else f"must be {words} {bound}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("True", "true").replace("False", "false")
        return f"must be {expected}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"takes at most {ctx.get('max_length')} item(s)"
    msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return msg.replace("Input should be", "must be").replace("input should be", "must be")


def _problem(err: Any, loc: KeyPath, model_cls: type[BaseModel] | None) -> str:
    kind = err["type"]
    if kind == "missing" and loc and isinstance(loc[-1], int):  # a fixed-length list that is too short
        return f"too few items: item {loc[-1] + 1} is missing"
    if kind == "missing":
        return "required key missing; add it"
    if kind == "extra_forbidden":
        valid = _fields_at(model_cls, loc[:-1])
        near = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
        if near:
            return f"unknown key; did you mean {near[0]}?"
        return f"unknown key; the keys here are {', '.join(valid)}" if valid else "unknown key; remove it"
    if kind in ("value_error", "assertion_error"):  # our validators' own words, which say what to do
        return _plain(err)
    value = err.get("input")
    return f"{_plain(err)}; got {_shown(value)}"


def _loc(err: Any) -> KeyPath:
    return tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))


def _dotted(loc: KeyPath) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def problems_in_words(exc: ValidationError) -> list[str]:
    """Every problem as ``key.path: what is wrong[; got VALUE]`` (for values that come from options, not a file)."""
    out = []
    for err in exc.errors():
        loc = _loc(err)
        out.append(f"{_dotted(loc)}: {_problem(err, loc, None)}")
    return out


def format_validation_error(
    exc: ValidationError, path: Path, lines: dict[KeyPath, int], model_cls: type[BaseModel] | None = None
) -> str:
    """Every problem as one line, in file order: FILE:LINE: key.path: what is wrong[; got VALUE]."""
    out: list[tuple[int, int, str]] = []
    for i, err in enumerate(exc.errors()):
        loc = _loc(err)
        problem = _problem(err, loc, model_cls)
        if err["type"] == "missing" and loc and isinstance(loc[-1], int):
            loc = loc[:-1]  # an item missing from a list: the list is where the mistake is
        line = _line_for(loc, lines)
        where = f"{path}:{line}" if line is not None else str(path)
        out.append((line or 0, i, f"{where}: {_dotted(loc)}: {problem}"))
    return "\n".join(text for _, _, text in sorted(out))


def validate(model_cls: type[M], path: Path) -> M:
    """Load `path` and validate it as `model_cls`, raising ConfigError with one line per problem."""
    data, lines = load_with_lines(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping of keys at the top level, got {type(data).__name__}")
    try:
        return model_cls.model_validate(data, context={"base_dir": path.parent})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, path, lines, model_cls)) from None
