"""Constitutions: YAML principle files.

Schema (see README "Constitution files")::

    name: helpful_harmless
    version: "1.0"
    description: ...
    principles:
      - id: refuse-harm
        text: Prefer the response that ...
        weight: 2.0
        tags: [harmless]
        applies_to: [harmful]        # prompt categories; omitted = all
        examples: {better: [...], worse: [...]}
        checks:
          - {type: regex, pattern: "(?i)sure, here is how", effect: -0.5}
          - {type: max_words, limit: 120, effect: -0.3}

Every constitution and principle has a content hash over its meaning (not
its formatting): editing a comment changes nothing, editing a principle's
text changes that principle's hash and the constitution's.
"""

from __future__ import annotations

import json
import math
import re
import re._constants as _sre_constants
import re._parser as _sre_parser
from pathlib import Path
from typing import Annotated, Literal

import regex
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FiniteFloat,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from rlaif import safeio
from rlaif.config_base import no_bool
from rlaif.errors import RlaifError
from rlaif.hashing import content_hash
from rlaif.yamlio import LoadedYaml, format_pydantic_errors, load_yaml

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"


def _within_text_limit(v: str) -> str:
    """A text field of a constitution is bounded like every text field of an input (``safeio.max_text_chars``)."""
    limit = safeio.max_text_chars()
    if len(v) > limit:
        raise ValueError(f"{len(v):,} characters, over the limit of {limit:,} (shorten it, or raise "
                         "RLAIF_MAX_TEXT_CHARS)")
    return v


Text = Annotated[str, AfterValidator(_within_text_limit)]
# Numbers that refuse YAML's true/false (pydantic reads them as 1/0).
Effect = Annotated[FiniteFloat, BeforeValidator(no_bool)]
Count = Annotated[int, BeforeValidator(no_bool)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    _hash: str | None = PrivateAttr(default=None)

    def _content_hash(self) -> str:
        """The content hash of the model, computed once (the judge asks it per call: a million times
        at scale). The model is frozen; ``model_copy`` forgets it, since an update changes the content."""
        memo = self.__pydantic_private__  # read directly: pydantic's attribute lookup costs more than a hash here
        if memo.get("_hash") is None:
            memo["_hash"] = content_hash(self.model_dump(mode="json"))
        return memo["_hash"]

    def model_copy(self, *, update=None, deep: bool = False):
        copy = super().model_copy(update=update, deep=deep)
        copy._hash = None
        return copy


class RegexCheck(_Strict):
    """Adds ``effect`` to the principle's score when ``pattern`` matches."""

    type: Literal["regex"]
    pattern: Text
    effect: Effect

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        shown = repr(v) if len(v) <= 80 else repr(v[:77]) + "..."
        try:
            parsed = _sre_parser.parse(v)
            regex.compile(v)
            nested = _nested_quantifier(parsed)
        except (re.error, regex.error) as e:
            raise ValueError(f"bad regex {shown}: {e}") from None
        except RecursionError:  # both parsers recurse per group: a few hundred nested groups exhaust the stack
            raise ValueError(f"regex {shown} nests its groups too deeply to compile; flatten it") from None
        if nested:
            raise ValueError(f"regex {shown} repeats a group that itself contains a repeat (like (a+)+), which can "
                             "take exponential time; rewrite it without the nested repeat")
        return v

    def apply(self, text: str) -> float:
        # Backstop for slow patterns the lint heuristic misses: bounded text
        # and a time bound (the ``regex`` package; ``re`` has no timeout).
        try:
            hit = regex.search(self.pattern, text[:REGEX_MAX_CHARS], timeout=REGEX_TIMEOUT_S)
        except TimeoutError:
            raise RlaifError(f"regex check {self.pattern!r} took over {REGEX_TIMEOUT_S}s on one text; "
                             "simplify the pattern in the constitution") from None
        return self.effect if hit else 0.0


# Regex checks run on at most this many characters, for at most this long.
REGEX_MAX_CHARS = 200_000
REGEX_TIMEOUT_S = 1.0
_REPEATS = (_sre_constants.MAX_REPEAT, _sre_constants.MIN_REPEAT, getattr(_sre_constants, "POSSESSIVE_REPEAT", None))


def _nested_quantifier(items, inside: bool = False) -> bool:
    """True when a repeated group contains a variable repeat: ``(a+)+``,
    ``(\\w*x?)*``, ``(?:a{1,9})+``. A documented heuristic for catastrophic
    backtracking (alternations like ``(a|a)+`` are left to the time bound)."""
    for op, av in items:
        if op in _REPEATS:
            lo, hi, sub = av
            if inside and hi != lo:
                return True
            if _nested_quantifier(sub, inside or hi > 1):
                return True
        elif op is _sre_constants.SUBPATTERN:
            if _nested_quantifier(av[-1], inside):
                return True
        elif op is _sre_constants.BRANCH:
            if any(_nested_quantifier(b, inside) for b in av[1]):
                return True
        elif op in (_sre_constants.ASSERT, _sre_constants.ASSERT_NOT):
            if _nested_quantifier(av[1], inside):
                return True
        elif op is getattr(_sre_constants, "ATOMIC_GROUP", None):
            if _nested_quantifier(av, inside):
                return True
    return False


class MaxWordsCheck(_Strict):
    """Adds ``effect`` when the response has more than ``limit`` words."""

    type: Literal["max_words"]
    limit: Count = Field(gt=0)
    effect: Effect

    def apply(self, text: str) -> float:
        return self.effect if len(text.split()) > self.limit else 0.0


class MinWordsCheck(_Strict):
    """Adds ``effect`` when the response has fewer than ``limit`` words."""

    type: Literal["min_words"]
    limit: Count = Field(gt=0)
    effect: Effect

    def apply(self, text: str) -> float:
        return self.effect if len(text.split()) < self.limit else 0.0


Check = Annotated[RegexCheck | MaxWordsCheck | MinWordsCheck, Field(discriminator="type")]


class Examples(_Strict):
    better: list[Text] = Field(default_factory=list)
    worse: list[Text] = Field(default_factory=list)


class Principle(_Strict):
    id: str = Field(pattern=ID_PATTERN)
    text: Text
    weight: Annotated[float, BeforeValidator(no_bool)] = 1.0
    tags: list[str] = Field(default_factory=list)
    applies_to: list[str] | None = None
    examples: Examples | None = None
    checks: list[Check] = Field(default_factory=list)
    # The revision request of critique/revision (CAI-style) files; judges ignore it.
    revision: Text | None = None

    @field_validator("text")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text is empty; write the instruction the judge should read")
        return v.strip()

    @field_validator("weight")
    @classmethod
    def _positive(cls, v: float) -> float:
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"weight must be a positive number, got {v}")
        return v

    @property
    def hash(self) -> str:
        return self._content_hash()

    def applies(self, category: str | None) -> bool:
        return self.applies_to is None or category is None or category in self.applies_to

    def check_effect(self, text: str) -> float:
        try:
            return sum(c.apply(text) for c in self.checks)
        except RlaifError as e:  # a slow regex: say which principle holds it
            raise RlaifError(f"principle {self.id!r}: {e.message}") from None


class Constitution(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: str = "1"
    description: Text = ""
    principles: list[Principle] = Field(min_length=1)

    @field_validator("version", mode="before")
    @classmethod
    def _version_str(cls, v):
        if isinstance(v, float):  # YAML reads 1.10 as the number 1.1: the written version would be lost
            raise PydanticCustomError("version_number", "write the version in quotes (version: \"{v}\" was read as "
                                      "the number {v}; 1.10 would read as 1.1)", {"v": v})
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    def idle_principles(self, categories: set[str | None]) -> list[str]:
        """The principles that apply to none of ``categories`` (an ``applies_to`` typo turns one off)."""
        return [p.id for p in self.principles if not any(p.applies(c) for c in categories)]

    @model_validator(mode="after")
    def _unique_ids(self) -> Constitution:
        seen: set[str] = set()
        for p in self.principles:
            if p.id in seen:
                raise ValueError(f"duplicate principle id {p.id!r}")
            seen.add(p.id)
        return self

    @property
    def hash(self) -> str:
        return self._content_hash()

    def principle(self, pid: str) -> Principle:
        for p in self.principles:
            if p.id == pid:
                return p
        raise KeyError(pid)


def _duplicate_id_problems(loaded: LoadedYaml) -> list[str]:
    problems = []
    data = loaded.data
    if not isinstance(data, dict) or not isinstance(data.get("principles"), list):
        return problems
    seen: dict[str, int] = {}
    for i, p in enumerate(data["principles"]):
        if isinstance(p, dict) and isinstance(p.get("id"), str):
            pid = p["id"]
            line = loaded.line_of(("principles", i, "id"))
            if pid in seen:
                problems.append(
                    f"{loaded.path}:{line}: principles.{i}.id: duplicate id {pid!r} "
                    f"(first used on line {seen[pid]}); give each principle its own id"
                )
            else:
                seen[pid] = line
    return problems


def lint_constitution(path: str | Path) -> tuple[Constitution | None, list[str]]:
    """Validate a constitution file; return (constitution or None, problems)."""
    try:
        loaded = load_yaml(path, "constitution")
    except RlaifError as e:
        return None, [e.message]
    problems = [
        f"{loaded.path}:{line}: {'.'.join(map(str, loc))}: duplicate key (YAML keeps only the last one)"
        for loc, line in loaded.duplicates
    ]
    if not isinstance(loaded.data, dict):
        return None, problems + [f"{loaded.path}:1: (top level): expected a mapping with name, version, principles"]
    problems += _duplicate_id_problems(loaded)
    try:
        c = Constitution.model_validate(loaded.data)
    except ValidationError as e:
        for line in format_pydantic_errors(loaded, e):
            # The duplicate-id model error is already reported with its line.
            if "duplicate principle id" in line and any("duplicate id" in p for p in problems):
                continue
            problems.append(line)
        return None, problems
    return (c if not problems else None), problems


def load_constitution(path: str | Path) -> Constitution:
    c, problems = lint_constitution(path)
    if c is None:
        first = problems[0] if problems else f"{path}: invalid constitution"
        more = f" (and {len(problems) - 1} more; run `rlaif constitution lint {path}`)" if len(problems) > 1 else ""
        raise RlaifError(first + more, problems=problems)
    return c


# ---------------------------------------------------------------- import

def _slug(text: str, n: int) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    stop = {"the", "a", "an", "and", "or", "of", "to", "in", "is", "it", "any", "whether", "that", "if"}
    words = [w for w in words if w not in stop][:4] or ["principle"]
    return f"p{n:02d}-" + "-".join(words)


def import_llm_swarm(path: str | Path, name: str | None = None) -> Constitution:
    """Convert llm-swarm's critique/revision JSON into a Constitution.

    Each ``{"critic", "revision"}`` entry becomes a principle whose ``text`` is
    the critique request (what a judge should look for) and whose
    ``revision`` keeps the revision request. ``system_chat`` few-shot
    dialogues are not principles and are dropped (their count is noted in
    the description).
    """
    p = Path(path)
    data = _read_llm_swarm(p)
    entries = data.get("constitutions") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise RlaifError(f"{p}: expected a JSON object with a non-empty 'constitutions' list (llm-swarm format)")
    chats = data.get("system_chat")
    if chats is not None and not isinstance(chats, list):
        raise RlaifError(f"{p}: system_chat: expected a list of few-shot dialogues, got {type(chats).__name__}; "
                         "fix or remove it")
    principles = []
    for i, e in enumerate(entries, 1):
        if not isinstance(e, dict) or not isinstance(e.get("critic"), str) or not e["critic"].strip():
            raise RlaifError(f"{p}: constitutions[{i - 1}]: expected an object with a non-empty 'critic' string")
        if e.get("revision") is not None and not isinstance(e["revision"], str):
            raise RlaifError(f"{p}: constitutions[{i - 1}].revision: expected a string (the revision request), "
                             f"got {type(e['revision']).__name__}; fix or remove it")
        try:
            principles.append(Principle(id=_slug(e["critic"], i), text=e["critic"].strip(), weight=1.0,
                                        tags=["imported"], revision=(e.get("revision") or None)))
        except ValidationError as err:
            first = err.errors()[0]
            field = "critic" if first["loc"][0] == "text" else first["loc"][0]
            raise RlaifError(f"{p}: constitutions[{i - 1}].{field}: {first['msg'].removeprefix('Value error, ')}; "
                             "fix or drop the entry") from None
    n_chat = len(chats or [])
    # A constitution name starts with a letter or digit (Constitution.name); the rest is made to fit.
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name or p.stem).lstrip("_.-") or "imported"
    return Constitution(
        name=stem,
        version="1",
        description=f"Imported from {p.name} (llm-swarm critique/revision format); "
        f"{n_chat} few-shot dialogue(s) not imported"
        + (f" (the critique stage reads them: critique.examples: {p.name})." if n_chat else "."),
        principles=principles,
    )


def _read_llm_swarm(p: Path):
    text = safeio.read_text(p, "JSON constitution", safeio.max_yaml_bytes())
    try:
        return safeio.loads_bounded(text, str(p))
    except json.JSONDecodeError as e:
        raise RlaifError(f"{p}:{e.lineno}: invalid JSON: {e.msg}") from None


def llm_swarm_dialogues(path: str | Path) -> list[list[dict[str, str]]]:
    """The few-shot critique/revision dialogues (``system_chat``) of an llm-swarm file: each a conversation of
    user and assistant turns ending with the assistant's (prompt, answer, critique request, critique, revision
    request, revision). ``rlaif constitution import`` leaves them out; the critique stage reads them
    (``critique.examples``)."""
    from rlaif import chat

    p = Path(path)
    data = _read_llm_swarm(p)
    dialogues = data.get("system_chat") if isinstance(data, dict) else None
    if not isinstance(dialogues, list) or not dialogues:
        raise RlaifError(f"{p}: expected a JSON object with a non-empty 'system_chat' list of dialogues "
                         "(llm-swarm format); or unset critique.examples")
    out = []
    for i, d in enumerate(dialogues):
        msgs = chat.check_messages(d, f"{p}: system_chat[{i}]")
        # Spliced between the prompt's system message and its first user turn, a dialogue must alternate
        # user/assistant from a user turn (chat templates such as Mistral's refuse anything else).
        if len(msgs) % 2 or any(m["role"] != ("user", "assistant")[j % 2] for j, m in enumerate(msgs)):
            raise RlaifError(f"{p}: system_chat[{i}]: a dialogue is user and assistant turns, alternating from the "
                             "user's and ending with the assistant's; fix or drop it")
        out.append(msgs)
    return out


def dump_constitution(c: Constitution) -> str:
    import yaml

    data = c.model_dump(mode="json", exclude_none=True, exclude_defaults=False)
    for pr in data["principles"]:
        for key in ("tags", "checks"):
            if not pr.get(key):
                pr.pop(key, None)
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    if yaml.safe_load(text) != data:  # PyYAML writes a NEL (U+0085) raw, which its reader folds into a space
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=False, width=100)
    return text
