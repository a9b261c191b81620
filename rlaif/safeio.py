"""Bounded reading of user-supplied files: every limit on input lives here.

Every reader of a user file (YAML configs and constitutions, JSONL prompts,
labels, SFT data, ``labels import``) goes through this module, so that a
device node, a FIFO, a directory, a huge file, a huge line, invalid UTF-8, a
lone-surrogate escape or a deeply nested JSON value is refused with one line
naming the file and the fix, before anything is read or written.

Limits (generous for real data; override with environment variables):

- ``RLAIF_MAX_FILE_BYTES``   (default 1 GiB): size of one input file.
- ``RLAIF_MAX_LINE_BYTES``   (default 8 MiB): one JSONL record.
- ``RLAIF_MAX_TEXT_CHARS``   (default 200,000): one text field (prompt,
  response, chosen, rejected...).
- ``RLAIF_MAX_YAML_BYTES``   (default 16 MiB): one YAML file.
- ``MAX_DEPTH`` (64): nesting of a YAML or JSON value.
- ``MAX_YAML_NODES`` (100,000): YAML nodes after alias expansion.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlaif.errors import RlaifError


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise RlaifError(f"environment variable {name}={raw!r}: expected a positive integer") from None
    if v <= 0:
        raise RlaifError(f"environment variable {name}={raw!r}: expected a positive integer")
    return v


def max_file_bytes() -> int:
    return _env_int("RLAIF_MAX_FILE_BYTES", 1 << 30)


def max_line_bytes() -> int:
    return _env_int("RLAIF_MAX_LINE_BYTES", 8 << 20)


def max_text_chars() -> int:
    return _env_int("RLAIF_MAX_TEXT_CHARS", 200_000)


def max_yaml_bytes() -> int:
    return _env_int("RLAIF_MAX_YAML_BYTES", 16 << 20)


MAX_DEPTH = 64
MAX_YAML_NODES = 100_000


def check_regular_file(path: str | Path, what: str, limit: int | None = None) -> Path:
    """Refuse a missing path, a directory, a device, a FIFO or a too-large file.

    Uses ``os.stat`` only, so a FIFO is never opened (opening one blocks).
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise RlaifError(f"{p}: {what} not found (check the path)") from None
    except OSError as e:
        raise RlaifError(f"{p}: cannot read {what} ({e.strerror}); check the path and its permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise RlaifError(f"{p}: is a directory, expected a {what} file (give the path of a file)")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or special file"
        raise RlaifError(f"{p}: is {kind}, not a regular file; copy the {what} to a regular file and pass that")
    limit = max_file_bytes() if limit is None else limit
    if st.st_size > limit:
        raise RlaifError(f"{p}: {what} is {st.st_size:,} bytes, over the limit of {limit:,} "
                         f"(split it, or raise RLAIF_MAX_FILE_BYTES / RLAIF_MAX_YAML_BYTES)")
    return p


def _open_nofollow_special(p: Path):
    # O_NONBLOCK: if the path was swapped for a FIFO after the stat, open
    # returns at once instead of hanging; we re-check the type on the fd.
    fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RlaifError(f"{p}: not a regular file; pass a regular file")
    return os.fdopen(fd, "rb")


def read_text(path: str | Path, what: str, limit: int | None = None) -> str:
    """Whole file as UTF-8 text, bounded; RlaifError on any hostile input."""
    p = check_regular_file(path, what, limit)
    limit = max_file_bytes() if limit is None else limit
    with _open_nofollow_special(p) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise RlaifError(f"{p}: {what} is over the limit of {limit:,} bytes (split it)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise RlaifError(f"{p}:{line}: not UTF-8 text ({e.reason}); save the {what} as UTF-8") from None


def iter_lines(path: str | Path, what: str) -> Iterator[tuple[int, str]]:
    """Yield (line number, decoded line) with each line bounded in bytes."""
    p = check_regular_file(path, what)
    limit = max_line_bytes()
    with _open_nofollow_special(p) as f:
        n = 0
        while True:
            raw = f.readline(limit + 1)
            if not raw:
                return
            n += 1
            if len(raw) > limit and not raw.endswith(b"\n"):
                raise RlaifError(f"{p}:{n}: record is over the limit of {limit:,} bytes "
                                 "(shorten it, or raise RLAIF_MAX_LINE_BYTES)")
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte order mark ("UTF-8 with BOM": Notepad, Excel) is not part of the text
            try:
                yield n, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise RlaifError(f"{p}:{n}: not UTF-8 text ({e.reason}); save the {what} as UTF-8") from None


def json_depth_ok(obj: Any, limit: int = MAX_DEPTH) -> bool:
    stack = [(obj, 1)]
    while stack:
        cur, d = stack.pop()
        if d > limit:
            return False
        if isinstance(cur, dict):
            stack.extend((v, d + 1) for v in cur.values())
        elif isinstance(cur, list):
            stack.extend((v, d + 1) for v in cur)
    return True


def _raw_depth(line: str) -> int:
    # Bracket depth outside strings, computed without recursion, so that
    # json.loads is never asked to recurse past MAX_DEPTH.
    depth = best = 0
    in_str = esc = False
    for ch in line:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


# A JSON escape of a UTF-16 surrogate (\\uD800-\\uDFFF): json.loads turns an unpaired one into a lone
# surrogate, a str that cannot be encoded as UTF-8 (every hash, store write and output file would fail).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
                                    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def utf8_ok(value: str) -> bool:
    """Whether ``value`` can be written as UTF-8 (no lone surrogate, as an escape in JSON or YAML makes)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


LONE_SURROGATE_FIX = ("holds an escape of half a UTF-16 surrogate pair (\\uD800-\\uDFFF alone), which is not "
                      "Unicode text; fix or remove that escape")


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def loads_reply(raw: str | bytes) -> Any:
    """A server's JSON reply, each half of a surrogate pair it escaped alone (a model that emits half an
    emoji) replaced by U+FFFD: a lone surrogate in a completion is text nothing can hash or store."""
    obj = json.loads(raw)
    if b"\\u" in (raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")):
        text = json.dumps(obj, ensure_ascii=False)
        if not utf8_ok(text):  # json.loads joined the valid pairs: what is left is alone
            obj = json.loads(_LONE_SURROGATE.sub("\ufffd", text))
    return obj


def loads_bounded(line: str, where: str) -> Any:
    """json.loads with a depth bound (no RecursionError traceback) that refuses lone surrogates."""
    if line.count("[") + line.count("{") > MAX_DEPTH and _raw_depth(line) > MAX_DEPTH:
        raise RlaifError(f"{where}: JSON nested deeper than {MAX_DEPTH} levels; flatten the record")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        raise
    except ValueError:  # an integer over Python's int_max_str_digits: ValueError, not JSONDecodeError
        raise RlaifError(f"{where}: holds a number of more than {sys.get_int_max_str_digits()} digits; "
                         "write numbers with fewer digits") from None
    if "\\u" in line and _SURROGATE_ESCAPE.search(line) and not utf8_ok(json.dumps(obj, ensure_ascii=False)):
        lone = _LONE_SURROGATE_ESCAPE.search(line)
        if lone is not None and "\n" in line.rstrip("\n"):  # a whole JSON document: name the line
            n = line.count("\n", 0, lone.start()) + 1
            where = f"{where}:{n}"
        raise RlaifError(f"{where}: {LONE_SURROGATE_FIX}")
    return obj


def check_text(value: str, where: str, field: str, limit: int | None = None) -> str:
    """``value`` if it is within ``limit`` characters (default: ``max_text_chars()``, read per call)."""
    limit = max_text_chars() if limit is None else limit
    if len(value) > limit:
        raise RlaifError(f"{where}: field {field!r} has {len(value):,} characters, over the limit of {limit:,} "
                         "(shorten it, or raise RLAIF_MAX_TEXT_CHARS)")
    return value
