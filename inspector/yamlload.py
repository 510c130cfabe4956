"""YAML loading that remembers where every key came from, so validation errors can name file:line.

`load_with_lines(path)` returns the plain data plus a map from key path (tuple of str/int) to 1-based line.
`validate(model_cls, path)` loads, validates with pydantic and turns every error into one line:
``FILE:LINE: key.path: got VALUE; allowed: ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

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


def _allowed(err: Any) -> str:
    ctx = err.get("ctx") or {}
    kind = err["type"]
    if "expected" in ctx:
        return f"one of {ctx['expected']}"
    for key, words in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if key in ctx:
            return f"a number {words} {ctx[key]}"
    if kind == "extra_forbidden":
        return "remove it or check its spelling (see deploy/config.example.yaml for every key)"
    if kind == "missing":
        return "add this key"
    return err["msg"]


def format_validation_error(exc: ValidationError, path: Path, lines: dict[KeyPath, int]) -> str:
    """Every pydantic error as one line: FILE:LINE: key.path: got VALUE; allowed: WHAT."""
    out = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        line = _line_for(loc, lines)
        where = f"{path}:{line}" if line is not None else str(path)
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "value_error":  # our validators' own words, which say what to do; the input may be a section
            out.append(f"{where}: {key}: {err['msg'].removeprefix('Value error, ')}")
            continue
        value = err.get("input")
        got = "" if err["type"] == "missing" else f" got {value!r};"
        msg = err["msg"] if err["type"] not in ("extra_forbidden", "missing") else err["type"].replace("_", " ")
        out.append(f"{where}: {key}: {msg};{got} allowed: {_allowed(err)}")
    return "\n".join(out)


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
        raise ConfigError(format_validation_error(exc, path, lines)) from None
