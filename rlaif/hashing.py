"""Stable content hashes for provenance and caching."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Built once: json.dumps with these options builds an encoder per call (a third of a pair key's cost).
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal content, equal text."""
    return _ENCODE(obj)


def content_hash(obj: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON of ``obj`` (strings hashed as-is)."""
    data = obj if isinstance(obj, str) else canonical_json(obj)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:length]


def content_hash_of_items(items: Iterable[Any], length: int = 16) -> str:
    """``content_hash(list(items))``, streamed: the canonical JSON of a list is its items' joined by commas."""
    h = hashlib.sha256(b"[")
    for i, x in enumerate(items):
        h.update(((("," if i else "") + _ENCODE(x))).encode("utf-8"))
    h.update(b"]")
    return h.hexdigest()[:length]


def file_hash(path: str | Path, length: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def dir_hash(path: str | Path, length: int = 16) -> str:
    """Hash of every file's relative name and content under ``path``."""
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(file_hash(p, 64).encode())
    return h.hexdigest()[:length]
