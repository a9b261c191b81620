"""The records that flow through the pipeline, and the JSONL readers for them.

Prompt -> Candidate -> judgement (a per-principle ``rlaif.judges.base.Verdict``,
stored in the ``judgements`` table) -> PreferencePair; HumanLabel comes from
files (or the viewer) and joins at the mix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from rlaif import conversations, safeio
from rlaif.errors import RlaifError
from rlaif.hashing import content_hash
from rlaif.vocab import IMPORT, PREFERENCE, RATING, THUMBS, is_ai_record


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    category: str | None = None
    split: str = "train"  # "train" (generate + judge) or "eval" (held out for policy eval)


@dataclass(frozen=True)
class Candidate:
    id: str
    prompt_id: str
    index: int
    text: str
    policy_hash: str


@dataclass(frozen=True)
class HumanLabel:
    """A human label, read from a file or stored in the run (``human_labels`` table)."""

    prompt: str
    chosen: str
    rejected: str
    label: str = PREFERENCE  # one of rlaif.vocab.LABELS; PREFERENCE: ``chosen`` wins
    source: str = ""  # rlaif.vocab prefix + detail, e.g. "viewer:alice"
    annotator: str | None = None
    note: str | None = None  # the annotator's comment
    created_at: float | None = field(default=None, compare=False)  # when stored; None before
    # Pairs made from single-response feedback (rlaif/feedback.py), never stored: the reward-model
    # margin and the feedback kind they came from.
    margin: float = field(default=0.0, compare=False)
    feedback: str | None = field(default=None, compare=False)

    @cached_property
    def key(self) -> str:  # computed once (and carried along when a label is pickled: rlaif/labels_reader.py)
        return pair_key(self.prompt, self.chosen, self.rejected)

    @property
    def train_only(self) -> bool:
        """Imported without ``--human``: may train, never enters the held-out human eval split
        (nothing proves a human made it, and an AI label there would measure the AI by itself)."""
        return self.source.startswith(IMPORT)


@dataclass(frozen=True)
class Feedback:
    """Human feedback on one response (``human_feedback`` table): a thumbs up/down, a rating or a place
    in a ranking (``kind``: rlaif.vocab.FEEDBACK_KINDS). ``value``: thumbs 1 up / 0 down; rating 1..scale;
    rank 1 = best. ``scale``: 2 for thumbs, the rating scale, or a ranking's worst rank (at least 2).
    A ranking's completions share its ``source`` (one record); rlaif.feedback turns feedback into pairs."""

    prompt: str
    completion: str
    kind: str
    value: int
    scale: int
    source: str = ""
    annotator: str | None = None
    comment: str | None = None
    created_at: float | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return feedback_key(self.prompt, self.completion)

    @property
    def train_only(self) -> bool:
        return self.source.startswith(IMPORT)

    @property
    def up(self) -> bool:
        """A thumbs up (``kind`` THUMBS only)."""
        return self.kind == THUMBS and self.value == 1

    @property
    def graded(self) -> bool:
        """A rating or rank (ordered within its group); thumbs are not."""
        return self.kind != THUMBS

    @property
    def goodness(self) -> float:
        """0 (worst) .. 1 (best) on the record's own scale: a rating's (value-1)/(scale-1), a rank's
        (scale-value)/(scale-1), a thumbs' value."""
        if self.kind == THUMBS:
            return float(self.value)
        if self.kind == RATING:
            return (self.value - 1) / (self.scale - 1)
        return (self.scale - self.value) / (self.scale - 1)


@dataclass
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    source: str  # rlaif.vocab.AI | rlaif.vocab.HUMAN
    weight: float = 1.0
    confidence: float | None = None
    prompt_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    margin: float = 0.0  # trl RewardTrainer's margin: the reward gap the pair asks for (feedback pairs)

    @property
    def key(self) -> str:
        return pair_key(self.prompt, self.chosen, self.rejected)

    def to_row(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies ``meta`` only for it to be serialised (a third of the mix's
        # time at 100k pairs).
        row = {f: getattr(self, f) for f in self.__dataclass_fields__}
        row["meta"] = json.dumps(self.meta, sort_keys=True)
        return row


def feedback_key(prompt: str, completion: str) -> str:
    """Key of one response to one prompt (what single-response feedback is on)."""
    return content_hash([prompt.strip(), completion.strip()])


def pair_key(prompt: str, a: str, b: str) -> str:
    """Order-free key of a comparison: same prompt and same two texts."""
    return content_hash([prompt.strip(), sorted([a.strip(), b.strip()])])


def iter_jsonl(path: str | Path, what: str) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object); RlaifError naming file:line on bad JSON."""
    p = Path(path)
    for n, line in safeio.iter_lines(p, f"{what} file"):
        if not line.strip():
            continue
        try:
            obj = safeio.loads_bounded(line, f"{p}:{n}")
        except json.JSONDecodeError as e:
            raise RlaifError(f"{p}:{n}: invalid JSON ({e.msg}); each line must be one JSON object") from None
        if not isinstance(obj, dict):
            raise RlaifError(f"{p}:{n}: expected a JSON object, got {type(obj).__name__}")
        yield n, obj


def _need_str(p, n, obj, key, what) -> str:
    v = obj.get(key)
    if not isinstance(v, str) or not v.strip():
        raise RlaifError(f"{p}:{n}: {what} record needs a non-empty string field {key!r}")
    return safeio.check_text(v, f"{p}:{n}", key)


def load_prompts(path: str | Path) -> list[Prompt]:
    out, seen = [], set()
    for n, obj in iter_jsonl(path, "prompts"):
        text = conversations.prompt_of(path, n, obj)  # plain, TRL conversational or HH multi-turn
        safeio.check_text(text, f"{path}:{n}", "prompt")
        pid = str(obj.get("id") or content_hash(text, 12))
        if pid in seen:
            raise RlaifError(f"{path}:{n}: duplicate prompt id {pid!r}; ids must be unique")
        seen.add(pid)
        cat = obj.get("category")
        if cat is not None and not isinstance(cat, str):
            raise RlaifError(f"{path}:{n}: 'category' must be a string")
        out.append(Prompt(id=pid, text=text.strip(), category=cat))
    if not out:
        raise RlaifError(f"{path}: no prompts found; expected JSON lines like {{\"text\": \"...\"}}")
    return out


def load_sft(path: str | Path) -> list[dict[str, str]]:
    out = []
    for n, obj in iter_jsonl(path, "SFT data"):
        row = conversations.sft_of(path, n, obj)  # rlaif, TRL (standard/conversational) or HH
        for key in ("prompt", "response"):
            safeio.check_text(row[key], f"{path}:{n}", key)
        out.append(row)
    if not out:
        raise RlaifError(f"{path}: no SFT examples; expected JSON lines {{\"prompt\": ..., \"response\": ...}}")
    return out


def _optional_str(path, n, obj: dict, key: str) -> str | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise RlaifError(f"{path}:{n}: field {key!r} must be a string, got {type(v).__name__}")
    return safeio.check_text(v, f"{path}:{n}", key).strip() or None


def load_label_file(path: str | Path) -> tuple[list[HumanLabel], list[Feedback]]:
    """Read a human labels file: pairs (TRL prompt/chosen/rejected, A/B response_a/response_b/label) and
    single-response feedback (thumbs, ratings, rankings: ``conversations.feedback_of``), any mix of them,
    each with an optional ``comment`` (a pair's is its ``note``) and ``annotator``. Sources are ``NAME:LINE``."""
    labels, feedback = [], []
    for _, _, label, items in iter_label_file(path):
        if label is not None:
            labels.append(label)
        feedback += items
    if not labels and not feedback:
        raise RlaifError(f"{path}: no labels found")
    return labels, feedback


def iter_label_file(path: str | Path) -> Iterator[tuple[int, dict, HumanLabel | None, list[Feedback]]]:
    """``load_label_file`` streamed: (line, record, its pair or None, its feedback items) per record."""
    src, limit = Path(path).name, safeio.max_text_chars()
    for n, obj in iter_jsonl(path, "human labels"):
        if is_ai_record(obj):
            raise RlaifError(f"{path}:{n}: an AI label (marked by `rlaif labels export` as AI); a labels file "
                             "holds human labels only (export with --source human)")
        comment, annotator = _optional_str(path, n, obj, "comment"), _optional_str(path, n, obj, "annotator")
        if conversations.feedback_kind(obj) is not None:
            prompt, kind, items, scale = conversations.feedback_of(path, n, obj)
            safeio.check_text(prompt, f"{path}:{n}", "prompt")
            out = []
            for text, value in items:
                safeio.check_text(text, f"{path}:{n}", "completion")
                out.append(Feedback(prompt, text, kind, value, scale, f"{src}:{n}", annotator, comment))
            yield n, obj, None, out
            continue
        prompt, first, second, label = conversations.preference_of(path, n, obj)  # TRL, A/B or HH
        where = f"{path}:{n}"
        for key, text in (("prompt", prompt), ("chosen", first), ("rejected", second)):
            safeio.check_text(text, where, key, limit)
        yield n, obj, HumanLabel(prompt, first, second, label, f"{src}:{n}", annotator, comment), []


def load_human_labels(path: str | Path) -> list[HumanLabel]:
    """The pairs of a labels file (TRL or A/B records); single-response feedback is refused."""
    labels, feedback = load_label_file(path)
    if feedback:
        line = feedback[0].source.rsplit(":", 1)[1]
        raise RlaifError(f"{path}:{line}: a {feedback[0].kind} record (single-response feedback); this command "
                         "takes preference pairs only: list the file under mix.human_labels instead")
    return labels
