"""Judge prompt templates (package data) and fencing of untrusted text.

A template file has sections ``[system]``, ``[user]`` and, for chain of
thought, ``[verdict]`` (the follow-up question after the rationale). Its
hash is recorded with every label, so editing a template invalidates exactly
the cached calls made with it.

Candidate and prompt text is untrusted: it is put inside tagged blocks whose
tag carries a nonce derived from the block's own content (so the text cannot
contain its own closing tag), and anything in it that looks like one of our
tags or a chat template's control token (look-alikes included) is
neutralised; the stored candidate stays as generated. The verdict parser accepts only the offered tokens.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources

from rlaif.chat import transcript
from rlaif.hashing import content_hash

_SECTION = re.compile(r"^\[(system|user|verdict)\]\s*$", re.M)


@dataclass(frozen=True)
class Template:
    name: str
    system: str
    user: str
    verdict: str | None
    hash: str


@cache
def load_template(name: str) -> Template:
    text = resources.files("rlaif.judges").joinpath("templates", f"{name}.txt").read_text(encoding="utf-8")
    parts = _SECTION.split(text)
    sections = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    return Template(name, sections["system"], sections["user"], sections.get("verdict"), content_hash(text))


# ---- neutralising look-alikes
# Detection runs on a "skeleton" of the text: each character folded on its
# own (NFKC when that gives one character, then a small confusables table
# mapping Cyrillic/Greek look-alike letters and look-alike angle brackets to
# ASCII), with zero-width and bidi control characters dropped. An index map
# takes each match back to the original text, so only the matched spans
# change: ordinary text (plain ASCII or not) reaches the judge unchanged.
# Written by hand: unicodedata has no confusables data and no library in the
# environment offers a span-preserving skeleton.
_IGNORABLE = frozenset("\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u200b\u200c\u200d"
                       "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066"
                       "\u2067\u2068\u2069\u206a\u206b\u206c\u206d\u206e\u206f\u3164\ufeff\uffa0")
_CONFUSABLE = str.maketrans({
    # Cyrillic
    "\u0430": "a", "\u0435": "e", "\u043e": "o", "\u0440": "p", "\u0441": "c", "\u0445": "x", "\u0443": "y",
    "\u0455": "s", "\u0456": "i", "\u0458": "j", "\u0501": "d", "\u04bb": "h", "\u0432": "b", "\u043c": "m",
    "\u0442": "t", "\u043f": "n", "\u0410": "A", "\u0412": "B", "\u0415": "E", "\u041a": "K", "\u041c": "M",
    "\u041d": "H", "\u041e": "O", "\u0420": "P", "\u0421": "C", "\u0422": "T", "\u0425": "X", "\u0405": "S",
    "\u0406": "I", "\u0408": "J",
    # Greek
    "\u03b1": "a", "\u03bf": "o", "\u03c1": "p", "\u03b9": "i", "\u03bd": "v", "\u03c4": "t", "\u03b5": "e",
    "\u0391": "A", "\u0392": "B", "\u0395": "E", "\u0397": "H", "\u0399": "I", "\u039a": "K", "\u039c": "M",
    "\u039d": "N", "\u039f": "O", "\u03a1": "P", "\u03a4": "T", "\u03a7": "X",
    # angle brackets and bars that NFKC leaves alone
    "\u2039": "<", "\u203a": ">", "\u3008": "<", "\u3009": ">", "\u27e8": "<", "\u27e9": ">", "\u02c2": "<",
    "\u02c3": ">", "\u1438": "<", "\u1433": ">", "\u276e": "<", "\u276f": ">", "\u29fc": "<", "\u29fd": ">",
    "\u01c0": "|", "\u2223": "|", "\u23d0": "|", "\u2758": "|",
})
_LT = r"(?:<|&(?:amp;)*(?:lt|#0*60|#x0*3c);)"
_GT = r"(?:>|&(?:amp;)*(?:gt|#0*62|#x0*3e);)"
# Our block tags, closed or not (an unterminated tag ends at the line end).
_TAG = rf"{_LT}\s*/?\s*(?:prompt|response|rationale)\b[^<>\n]{{0,200}}?(?:{_GT}|(?=[<\n])|$)"
# Chat-template control tokens: <|im_end|>, <|eot_id|>, <|start_header_id|>,
# <|endoftext|> (any <|...|>), [INST] [/INST], <<SYS>> <</SYS>>, <s> </s>,
# <bos> <eos>, <start_of_turn> <end_of_turn>, <think> </think>.
_CTRL = (rf"{_LT}\s*\|[^|<>\n]{{1,40}}\|\s*{_GT}"
         rf"|{_LT}\s*/?\s*(?:s|bos|eos|pad|unk|start_of_turn|end_of_turn|think)\s*{_GT}"
         rf"|\[\s*/?\s*INST\s*\]|{_LT}{_LT}\s*/?\s*SYS\s*{_GT}{_GT}")
_DANGER = re.compile(rf"(?P<tag>{_TAG})|(?P<ctrl>{_CTRL})", re.I)


def _fold(ch: str) -> str:
    n = unicodedata.normalize("NFKC", ch)
    return (n if len(n) == 1 else ch).translate(_CONFUSABLE)


def neutralise(text: str) -> str:
    """Defuse text that imitates our block tags or a chat template's control tokens.

    ``</response>`` becomes ``[response]``, ``<|im_end|>`` becomes
    ``(im_end)``; look-alikes (zero-width characters inside, fullwidth,
    small-form, Cyrillic or Greek letters and brackets, HTML entities,
    a missing ``>``) are caught too.
    """
    keep = [i for i, ch in enumerate(text) if ch not in _IGNORABLE]
    skeleton = "".join(_fold(text[i]) for i in keep)
    out, last = [], 0
    for m in _DANGER.finditer(skeleton):
        start, end = keep[m.start()], keep[m.end() - 1] + 1
        words = re.findall(r"[A-Za-z0-9_]+", re.sub(_LT + "|" + _GT, " ", m.group(0), flags=re.I))
        if m.group("tag"):
            rep = "[" + words[0].lower() + "]"
        else:
            rep = "(" + "_".join(words) + ")"
        out.append(text[last:start])
        out.append(rep)
        last = end
    out.append(text[last:])
    return "".join(out)


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
