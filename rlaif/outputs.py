"""Stage outputs that are checked, not assumed: a file list recorded when a stage finishes, the
one-line translation of a full disk, and the files a command writes where the user says
(``check_target``, ``write_json``).

A stage's output folder records ``{relative path: size}`` of every file in the stage's info
(``output_files``); the stage counts as done only while every listed file is still there with
its size, so deleting ``reward_model/model.safetensors`` makes the stage run again instead of
crashing the next one. Only stdlib imports.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
from pathlib import Path

MAX_FILES = 10_000  # a larger output is checked by its marker file only


def manifest(path: Path) -> dict[str, int] | None:
    """``{relative path: size}`` of the files of an output (a folder or one file); None when
    it does not exist or has more than MAX_FILES files."""
    path = Path(path)
    if path.is_file():
        return {path.name: path.stat().st_size}
    if not path.is_dir():
        return None
    out = {}
    for f in sorted(path.rglob("*")):
        if f.is_file():
            out[f.relative_to(path).as_posix()] = f.stat().st_size
            if len(out) > MAX_FILES:
                return None
    return out


def intact(path: Path, files: dict[str, int] | None) -> bool:
    """Whether every recorded file of the output at ``path`` is still there with its size."""
    if not files:
        return True  # nothing recorded (an output from before this check): its marker decides
    path = Path(path)
    base = path.parent if path.is_file() or (len(files) == 1 and path.name in files) else path
    for rel, size in files.items():
        try:
            if (base / rel).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def write_whole(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed over it): a kill mid-write leaves the
    old file, never a cut one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except BaseException:  # a full disk, a directory at ``path``: no temporary file left behind
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def check_target(path: Path, option: str = "-o") -> None:
    """A file the user names for a command's output (``option``) must be a new file or a writable regular
    file in a writable folder (never a device, a FIFO or a folder: the output is renamed over it)."""
    from rlaif.errors import RlaifError

    if path.exists() or path.is_symlink():
        if path.is_dir():
            raise RlaifError(f"{path}: is a directory; {option} takes a file name")
        if not path.is_file():
            raise RlaifError(f"{path}: exists and is not a regular file; {option} takes a (new) file name")
        if not os.access(path, os.W_OK):
            raise RlaifError(f"{path}: is not writable; pick another {option}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RlaifError(f"{path}: folder {parent} is not writable; pick another {option}")


def write_json(obj, out: str | Path, option: str = "--json") -> None:
    """A command's figures as JSON at ``out`` (its folder made), written whole; an unwritable target is one line."""
    from rlaif.errors import RlaifError

    path = Path(out)
    check_target(path, option)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_whole(path, json.dumps(obj, indent=2))
    except OSError as e:
        raise RlaifError(f"{path}: could not write the figures ({e.strerror or e}); pick another {option}") from None


def disk_full(e: BaseException) -> bool:
    """Whether ``e`` (or an exception behind it) says the disk is full: ENOSPC/EDQUOT, sqlite's
    "database or disk is full", safetensors' StorageFull, torch.save's failed write."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e)
        if isinstance(e, sqlite3.OperationalError) and "disk is full" in text:
            return True
        if "No space left on device" in text or "StorageFull" in text or "file write failed" in text:
            return True
        e = e.__cause__ or e.__context__
    return False
