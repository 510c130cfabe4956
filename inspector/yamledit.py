"""Round-trip edits of YAML files people wrote: one value changes, every comment, key order and format stays.

`set_value(text, ("decision", "threshold"), 0.42)` returns `text` with only that value's line changed (ruamel.yaml
round-trip). A missing key is added as the first key of its section; a missing section at the end of the file.
"""

from __future__ import annotations

import io

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError
from ruamel.yaml.util import load_yaml_guess_indent

from inspector.errors import ConfigError

Scalar = bool | int | float | str | None


def _yaml(text: str) -> tuple[YAML, object]:
    _, indent, block_seq_indent = load_yaml_guess_indent(text)  # the file's own indentation, kept
    y = YAML()  # round-trip mode
    y.preserve_quotes = True
    y.width = 4096  # never fold a long line
    y.indent(mapping=indent or 2, sequence=max(indent or 2, (block_seq_indent or 0) + 2), offset=block_seq_indent or 0)
    return y, y.load(text)


def set_value(text: str, key_path: tuple[str, ...], value: Scalar, where: str = "<yaml>") -> str:
    """`text` with the value at `key_path` (sections, then the key) set to `value`; nothing else changes."""
    if not key_path:
        raise ValueError("set_value needs at least one key")
    try:
        y, data = _yaml(text) if text.strip() else (YAML(), None)
    except YAMLError as exc:
        raise ConfigError(f"{where}: YAML syntax error ({' '.join(str(exc).split())}); fix the file first") from None
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap):
        raise ConfigError(f"{where}:1: expected a mapping of keys at the top level, got {type(data).__name__}")
    node = data
    for depth, key in enumerate(key_path[:-1]):
        child = node.get(key)
        if child is None:  # absent, or an empty `key:` line
            child = CommentedMap()
            node[key] = child
        if not isinstance(child, CommentedMap):
            dotted = ".".join(key_path[: depth + 1])
            raise ConfigError(f"{where}: {dotted}: is a {type(child).__name__}, expected a section of keys")
        node = child
    last = key_path[-1]
    if last in node:
        node[last] = value
    else:
        node.insert(0, last, value)  # first in its section: the section's last key may carry trailing comments
    buf = io.StringIO()
    y.dump(data, buf)
    return buf.getvalue()
