"""YAML loading that remembers where every value came from.

PyYAML's ``safe_load`` forgets line numbers, and pydantic reports errors by
field path; to print ``FILE:LINE: field: message`` we compose the node tree
ourselves and keep a map from field path to line. Duplicate keys (which
``safe_load`` silently merges) are reported too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlaif import safeio
from rlaif.errors import RlaifError

Loc = tuple[Any, ...]


@dataclass
class LoadedYaml:
    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)
    duplicates: list[tuple[Loc, int]] = field(default_factory=list)
    nodes: int = 0

    def line_of(self, loc: Loc) -> int:
        """Line of the deepest known prefix of ``loc`` (1-based)."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), 1)


def _walk(node: yaml.Node, loc: Loc, out: LoadedYaml) -> Any:
    # Aliases are expanded here (compose keeps them shared), so the node
    # budget bounds an alias bomb ("billion laughs") and the depth bound
    # keeps deep nesting from reaching Python's recursion limit.
    out.nodes += 1
    if out.nodes > safeio.MAX_YAML_NODES:
        raise RlaifError(f"{out.path}:{node.start_mark.line + 1}: YAML expands to more than "
                         f"{safeio.MAX_YAML_NODES:,} values (alias bomb?); remove the repeated aliases")
    if len(loc) > safeio.MAX_DEPTH:
        raise RlaifError(f"{out.path}:{node.start_mark.line + 1}: YAML nested deeper than "
                         f"{safeio.MAX_DEPTH} levels; flatten it")
    out.lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        merged: dict[Any, Any] = {}
        own_lines: dict[Loc, int] = {}  # a merge walked after a key must not move that key's line
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:  # `<<: *base` (or a list of them): keys the mapping does not set itself
                merged = _merge_sources(value_node, loc, out) | merged
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise RlaifError(f"{out.path}:{key_node.start_mark.line + 1}: a mapping key must be a plain value")
            key = _scalar(key_node)
            if isinstance(key, str) and not safeio.utf8_ok(key):
                raise RlaifError(f"{out.path}:{key_node.start_mark.line + 1}: a key {safeio.LONE_SURROGATE_FIX}")
            if key in result:
                out.duplicates.append((loc + (key,), key_node.start_mark.line + 1))
            out.lines[loc + (key,)] = own_lines[loc + (key,)] = key_node.start_mark.line + 1
            result[key] = _walk(value_node, loc + (key,), out)
        if not merged:
            return result
        out.lines.update(own_lines)
        return {**merged, **result}
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, loc + (i,), out) for i, item in enumerate(node.value)]
    value = _scalar(node)
    if isinstance(value, str) and not safeio.utf8_ok(value):  # a "\\ud800" escape in a double-quoted scalar
        field_name = ".".join(map(str, loc)) or "(top level)"
        raise RlaifError(f"{out.path}:{node.start_mark.line + 1}: {field_name}: {safeio.LONE_SURROGATE_FIX}")
    return value


MERGE_TAG = "tag:yaml.org,2002:merge"


def _merge_sources(node: yaml.Node, loc: Loc, out: LoadedYaml) -> dict[Any, Any]:
    """The keys a merge key (``<<``) brings in: a mapping, or a list of mappings where an earlier one wins
    (the YAML merge-key type; PyYAML's safe_load lets a later one win)."""
    sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
    merged: dict[Any, Any] = {}
    for src in reversed(sources):
        if not isinstance(src, yaml.MappingNode):
            raise RlaifError(f"{out.path}:{src.start_mark.line + 1}: `<<` merges a mapping (or a list of "
                             "mappings) into this one; give it a mapping, e.g. `<<: *defaults`")
        merged.update(_walk(src, loc, out))
    return merged


def _scalar(node: yaml.ScalarNode) -> Any:
    # Resolve the scalar with SafeLoader's own rules (ints, floats, bools, null).
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def load_yaml(path: str | Path, what: str = "file") -> LoadedYaml:
    """Load a YAML file; raise RlaifError naming the file and line on failure."""
    p = Path(path)
    text = safeio.read_text(p, what, safeio.max_yaml_bytes())
    out = LoadedYaml(path=p, data=None)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise RlaifError(f"{p}: YAML nested too deeply; flatten it (at most {safeio.MAX_DEPTH} levels)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RlaifError(f"{p}:{line}: invalid YAML: {problem}") from None
    if node is None:
        out.data = None
        return out
    try:
        out.data = _walk(node, (), out)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise RlaifError(f"{p}:{line}: invalid YAML value: {getattr(e, 'problem', e)}") from None
    return out


def _override_of(field_name: str, overridden) -> str | None:
    """The ``--set`` argument that set ``field_name`` (or a key under or above it)."""
    for k in overridden:
        if field_name == k or field_name.startswith(k + ".") or k.startswith(field_name + "."):
            return overridden[k] if isinstance(overridden, dict) else k
    return None


def format_pydantic_errors(loaded: LoadedYaml, exc: Exception, overridden=frozenset()) -> list[str]:
    """One ``FILE:LINE: field: message`` line per pydantic validation error.

    Fields named in ``overridden`` (set with ``--set``; a set of keys or a
    {key: "KEY=VALUE"} map) are reported as ``--set KEY=VALUE: field:
    message`` since no file line holds them.
    """
    lines = []
    for err in exc.errors():  # type: ignore[attr-defined]
        loc = _clean_loc(loaded.data, tuple(err.get("loc", ())))
        field_name = ".".join(str(x) for x in loc) or "(top level)"
        msg = err.get("msg", "invalid value").removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key (remove it or check its spelling)"
        elif err.get("type") == "missing":
            msg = "required field is missing"
        arg = _override_of(field_name, overridden)
        if arg is not None:
            lines.append(f"--set {arg}: {field_name}: {msg}")
        else:
            lines.append(f"{loaded.path}:{loaded.line_of(loc)}: {field_name}: {msg}")
    return lines


def _clean_loc(data: Any, loc: Loc) -> Loc:
    """Drop the parts of a pydantic error path that are not in the data
    (discriminated-union tags like ``regex`` in ``checks.0.regex.pattern``)."""
    out: list[Any] = []
    cur = data
    for i, part in enumerate(loc):
        if isinstance(cur, dict) and part not in cur and i < len(loc) - 1:
            continue  # a union tag, not a key
        out.append(part)
        if isinstance(cur, dict):
            cur = cur.get(part)
        elif isinstance(cur, list) and isinstance(part, int) and part < len(cur):
            cur = cur[part]
        else:
            cur = None
    return tuple(out)
