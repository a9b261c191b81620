"""The label vocabulary, defined once: human label words, label sources and record kinds.

A human label (``human_labels.label``) says how its two texts compare:
``chosen`` (the first, ``chosen``, text is better), ``tie`` or ``both_bad``.
Its ``source`` says where it came from, as ``PREFIX + detail``:
``file:NAME:LINE`` (a labels file of the config, re-read every run),
``import:NAME@PATHHASH:LINE`` (`rlaif labels import`; ``import-human:`` with ``--human``; ``import_name``),
``viewer:ANNOTATOR`` (`rlaif view`).
An exported AI label's source is ``ai:BACKEND``. Preference pairs and
exported records are of kind ``ai`` or ``human``.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

# Human label words.
PREFERENCE = "chosen"  # the label's chosen text is better than its rejected one
TIE = "tie"
BOTH_BAD = "both_bad"
LABELS = (PREFERENCE, TIE, BOTH_BAD)

# Kinds of single-response human feedback (``human_feedback.kind``): a thumbs up/down
# (value 1 up, 0 down), a rating (value 1..scale) or a place in a ranking (value 1 = best).
THUMBS = "thumbs"
RATING = "rating"
RANK = "rank"
FEEDBACK_KINDS = (THUMBS, RATING, RANK)

# Label source prefixes.
FILE = "file:"
IMPORT = "import:"  # `rlaif labels import`: may train, never in the held-out human eval split
IMPORT_HUMAN = "import-human:"  # `rlaif labels import --human`: the user vouches that people made them
VIEWER = "viewer:"
AI_SOURCE = "ai:"

# Kinds of pairs and exported records.
AI = "ai"
HUMAN = "human"
REVISION = "revision"  # a critique stage's revision chosen over the policy's first answer (rlaif/critique.py)


def file_source(origin: str) -> str:
    """``labels.jsonl:12`` -> ``file:labels.jsonl:12``."""
    return FILE + origin


def import_name(path: str | Path) -> str:
    """How `labels import` names the file ``path`` in its sources: its name and a hash of its absolute path
    (``rank.jsonl@1f2e3d4c``). Two files of the same name in different folders are two imports (their
    rankings two groups, their labels two sets); the same path imported again replaces what it stored.
    Runs from before this stored the bare name (``import:rank.jsonl:3``); `labels import` supersedes
    those of the file it imports again (rlaif/viewer/commands.py)."""
    p = os.path.abspath(path)  # not resolved: a symlink re-pointed to a new version is the same import
    return f"{Path(p).name}@{hashlib.sha256(p.encode()).hexdigest()[:IMPORT_PATH_HASH_CHARS]}"


IMPORT_PATH_HASH_CHARS = 8  # hex digits of the path hash in ``import_name``


def import_names_start(file_name: str, human: bool = False) -> str:
    """The start of the sources `labels import` gives the records of every file called ``file_name``, whatever
    its folder (``import:rank.jsonl@``): then the path hash of ``import_name``, ``:``, the line."""
    return f"{IMPORT_HUMAN if human else IMPORT}{file_name}@"


def import_prefix(name: str, human: bool = False) -> str:
    """The start of the sources `labels import` gives the records of the file named ``name`` (``import_name``;
    a bare file name in runs from before it)."""
    return f"{IMPORT_HUMAN if human else IMPORT}{name}:"


def import_source(name: str, line: int, human: bool = False) -> str:
    return f"{import_prefix(name, human)}{line}"


def viewer_source(annotator: str) -> str:
    return VIEWER + annotator


def ai_source(backend: str | None) -> str:
    return AI_SOURCE + (backend or "judge")


def source_group(source: str) -> str:
    """``file:x.jsonl:12`` -> ``file:x.jsonl``; ``viewer:alice`` stays."""
    return re.sub(r":\d+$", "", source)


# Field of an exported TRL row saying who labelled it (TRL itself reads prompt/chosen/rejected only).
PROVENANCE = "rlaif_source"


def is_ai_record(obj: dict) -> bool:
    """Whether a label record says it is an AI label: an export's ``kind``, a TRL export's
    ``rlaif_source`` or an ``ai:`` source (any case, spaces ignored). Such records are never
    read as human labels (a labels file, `rlaif labels import`)."""

    def said(k: str) -> str:
        return str(obj.get(k) or "").strip().lower()

    return said("kind") == AI or said(PROVENANCE) == AI or said("source").startswith(AI_SOURCE)
