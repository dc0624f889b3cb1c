"""Read a policy file: YAML -> schema -> compiled policy, every error with file:line and key.

PyYAML's composed node tree keeps the line of every key; pydantic reports error
locations as key paths. Joining the two is the part no library does for us.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import PolicyError
from .compiled import CompiledPolicy, compile_policy
from .schema import KeyedValueError, Policy

KeyPath = tuple[str | int, ...]


def default_policy_path() -> Path:
    """The shipped default policy, packaged so a non-editable install finds it."""
    return Path(str(resources.files("hydraguard") / "policies" / "default.yaml"))


def load_policy(source: str | Path | None = None) -> CompiledPolicy:
    """Load and compile a policy file (``None``: the shipped default). Raises PolicyError."""
    path = default_policy_path() if source is None else Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([f"{path}: cannot read policy: {exc}"]) from None
    return compile_policy(parse_policy(text, str(path)), source=str(path))


def parse_policy(text: str, filename: str = "<policy>") -> Policy:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark is not None else filename
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError([f"{where}: invalid YAML: {problem}"]) from None
    if data is None:
        data = {}
    lines: dict[KeyPath, int] = {}
    problems = list(_index_lines(node, (), lines, filename)) if node is not None else []
    if not isinstance(data, dict):
        problems.append(
            f"{filename}:1: (top level): a policy is a mapping of keys, not {type(data).__name__}"
        )
    if problems:
        raise PolicyError(problems)
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        found = [_describe(error, lines, filename) for error in exc.errors(include_url=False)]
        raise PolicyError(sorted(found, key=_line_of)) from None


def _index_lines(
    node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], filename: str
) -> Iterator[str]:
    """Record the line of every key path; report duplicate keys (YAML would keep the last)."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                yield f"{filename}:{key_node.start_mark.line + 1}: {_dotted((*path, key))}: duplicate key"
            seen.add(key)
            lines[(*path, key)] = key_node.start_mark.line + 1
            yield from _index_lines(value_node, (*path, key), lines, filename)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _index_lines(item, (*path, index), lines, filename)


def _describe(error: Any, lines: dict[KeyPath, int], filename: str) -> str:
    loc: KeyPath = tuple(error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, KeyedValueError):
        loc = (*loc, *cause.key_path)
    # pydantic may add non-data steps (validator names); keep the longest real key path.
    path: KeyPath = ()
    for step in loc:
        if (*path, step) in lines:
            path = (*path, step)
    line = lines.get(path, 1)
    if error["type"] in ("extra_forbidden", "missing") and loc and loc[-1] != (path or (None,))[-1]:
        path = (*path, loc[-1])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "missing":
        message = "required key is missing"
    return f"{filename}:{line}: {_dotted(path)}: {message}"


def _line_of(problem: str) -> int:
    parts = problem.split(":", 2)
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0


def _dotted(path: KeyPath) -> str:
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
    return text or "(top level)"
