"""Judge prompt templates (package data) and fencing of untrusted text.

A template file has sections ``[system]``, ``[user]`` and, for chain of
thought, ``[verdict]`` (the follow-up question after the rationale). Its
hash is recorded with every label, so editing a template invalidates exactly
the cached calls made with it.

Candidate and prompt text is untrusted: it is put inside tagged blocks whose
tag carries a nonce derived from the block's own content (so the text cannot
contain its own closing tag), and anything in it that looks like one of our
tags is neutralised. The verdict parser accepts only the offered tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from rlaif.chat import transcript
from rlaif.hashing import content_hash

_SECTION = re.compile(r"^\[(system|user|verdict)\]\s*$", re.M)
_TAGLIKE = re.compile(r"<\s*/?\s*(prompt|response|rationale)\b[^>]*>", re.I)


@dataclass(frozen=True)
class Template:
    name: str
    system: str
    user: str
    verdict: str | None
    hash: str


@lru_cache(maxsize=None)
def load_template(name: str) -> Template:
    text = resources.files("rlaif.judges").joinpath("templates", f"{name}.txt").read_text(encoding="utf-8")
    parts = _SECTION.split(text)
    sections = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    return Template(name, sections["system"], sections["user"], sections.get("verdict"), content_hash(text))


def neutralise(text: str) -> str:
    """Defuse text that imitates our block tags."""
    return _TAGLIKE.sub(lambda m: "[" + m.group(0).strip("<>").replace("/", "").strip() + "]", text)


def fence(text: str, tag: str, label: str | None = None) -> str:
    body = neutralise(text)
    nonce = content_hash([tag, label, body], 8)
    attrs = f' id="{nonce}"' + (f' label="{label}"' if label else "")
    return f'<{tag}{attrs}>\n{body}\n</{tag} id="{nonce}">'


def pairwise_messages(t: Template, principle: str, prompt: str, first: str, second: str) -> list[dict]:
    user = t.user.format(principle=principle, prompt=fence(transcript(prompt), "prompt"),
                         response_a=fence(first, "response", "A"), response_b=fence(second, "response", "B"))
    return [{"role": "system", "content": t.system}, {"role": "user", "content": user}]


def pointwise_messages(t: Template, principle: str, prompt: str, response: str) -> list[dict]:
    user = t.user.format(principle=principle, prompt=fence(transcript(prompt), "prompt"),
                         response=fence(response, "response"))
    return [{"role": "system", "content": t.system}, {"role": "user", "content": user}]


def verdict_followup(t: Template, messages: list[dict], rationale: str) -> list[dict]:
    """Messages for the second CoT step: the rationale as the assistant's turn, then the question."""
    assert t.verdict is not None
    return messages + [{"role": "assistant", "content": rationale}, {"role": "user", "content": t.verdict}]
