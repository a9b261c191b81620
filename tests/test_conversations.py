"""The data formats people have, read into conversations: TRL standard/conversational (explicit and implicit
prompt), A/B, HH-RLHF multi-turn text; bad records are one FILE:LINE error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rlaif import chat
from rlaif.errors import RlaifError
from rlaif.records import load_human_labels, load_prompts, load_sft

_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RLAIF_SHARED_DATA") or next(
    (d for d in (_ROOT.parent / "shared" / "data", _ROOT.parents[1] / "shared" / "data") if d.exists()),
    _ROOT.parent / "shared" / "data"))  # a git worktree sits one level deeper
HH = "\n\nHuman: what are pranks with a pen?\n\nAssistant: Practical jokes?\n\nHuman: yep\n\nAssistant:"
HH_MSGS = [{"role": "user", "content": "what are pranks with a pen?"},
           {"role": "assistant", "content": "Practical jokes?"}, {"role": "user", "content": "yep"}]


def _write(tmp_path, rows, name="f.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


def test_prompts_in_every_format(tmp_path):
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    p = _write(tmp_path, [{"text": " plain "}, {"prompt": conv}, {"id": "m", "messages": conv + [
        {"role": "assistant", "content": "dropped"}]}, {"text": HH}])
    got = [chat.messages(x.text) for x in load_prompts(p)]
    assert got[0] == [{"role": "user", "content": "plain"}]
    assert got[1] == conv and got[2] == conv
    assert got[3] == HH_MSGS
    assert load_prompts(p)[0].text == "plain"  # one user turn is stored as plain text, as before


def test_sft_in_every_format(tmp_path):
    p = _write(tmp_path, [
        {"prompt": "q", "response": " a "},
        {"prompt": "q", "completion": "a"},
        {"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"text": "\n\nHuman: q\n\nAssistant: a"},
    ])
    assert load_sft(p) == [{"prompt": "q", "response": "a"}] * 5
    p = _write(tmp_path, [{"text": HH + " sure, here"}])
    (row,) = load_sft(p)
    assert chat.messages(row["prompt"]) == HH_MSGS and row["response"] == "sure, here"


def test_preferences_in_every_format(tmp_path):
    user = [{"role": "user", "content": "q"}]
    p = _write(tmp_path, [
        {"prompt": "q", "chosen": "a", "rejected": "b"},  # TRL standard, explicit prompt
        {"prompt": user, "chosen": [{"role": "assistant", "content": "a"}],
         "rejected": [{"role": "assistant", "content": "b"}]},  # TRL conversational, explicit prompt
        {"chosen": user + [{"role": "assistant", "content": "a"}],
         "rejected": user + [{"role": "assistant", "content": "b"}]},  # TRL conversational, implicit prompt
        {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"},  # HH-RLHF
        {"prompt": "q", "response_a": "b", "response_b": "a", "label": "B"},  # A/B
        {"prompt": "q", "response_a": "a", "response_b": "b", "label": "tie"},
    ])
    got = [(h.prompt, h.chosen, h.rejected, h.label) for h in load_human_labels(p)]
    assert got == [("q", "a", "b", "chosen")] * 5 + [("q", "a", "b", "tie")]


@pytest.mark.skipif(not (SHARED / "prefs" / "hh_rlhf_harmless_test.jsonl").exists(), reason="no shared data")
def test_shared_hh_rlhf_prompts_are_multi_turn(tmp_path):
    lines = (SHARED / "prefs" / "hh_rlhf_harmless_test.jsonl").read_text().splitlines()[:40]
    labels = load_human_labels(_write(tmp_path, lines))
    convs = [chat.messages(h.prompt) for h in labels]
    assert len(labels) == 40 and all(c[-1]["role"] == "user" for c in convs)
    assert any(len(c) > 1 for c in convs) and all(c[0]["role"] == "user" for c in convs)
    assert not any("\n\nHuman:" in m["content"] or "\n\nAssistant:" in m["content"] for c in convs for m in c)


BAD = {
    "bad-role": ("prefs", {"prompt": [{"role": "bot", "content": "q"}], "chosen": "a", "rejected": "b"}, "message 0"),
    "completion-with-user": ("prefs", {"prompt": "q", "chosen": [{"role": "user", "content": "a"}],
                                       "rejected": "b"}, "assistant messages"),
    "implicit-mismatch": ("prefs", {"chosen": "\n\nHuman: q\n\nAssistant: a",
                                    "rejected": "\n\nHuman: other\n\nAssistant: b"}, "share every turn"),
    "implicit-no-answer": ("prefs", {"chosen": [{"role": "user", "content": "q"}],
                                     "rejected": [{"role": "user", "content": "q"}]}, "assistant turn"),
    "prompt-number": ("prompts", {"prompt": 3}, "'prompt'"),
    "prompt-only-system": ("prompts", {"prompt": [{"role": "system", "content": "s"}]}, "no user message"),
    "sft-plain-text": ("sft", {"text": "just text"}, "HH-style"),
    "sft-no-response": ("sft", {"prompt": "q"}, "'response' or 'completion'"),
    "sft-messages-end-user": ("sft", {"messages": [{"role": "user", "content": "q"}]}, "assistant turn"),
    "too-many-turns": ("prompts", {"prompt": [{"role": "user", "content": "q"}] * 65}, "at most"),
    # an empty turn is refused as the empty string prompt is (it was stored as the prompt "")
    "prompt-empty-message": ("prompts", {"prompt": [{"role": "user", "content": ""}]}, "message 0 (user) is empty"),
    "prompt-blank-user-after-system": ("prompts", {"messages": [{"role": "system", "content": "s"},
                                                                {"role": "user", "content": " \n"}]},
                                       "message 1 (user) is empty"),
    "sft-empty-middle-turn": ("sft", {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""},
                                                   {"role": "user", "content": "q2"},
                                                   {"role": "assistant", "content": "a"}]}, "message 1 (assistant)"),
    "prefs-empty-prompt-turn": ("prefs", {"prompt": [{"role": "user", "content": ""}], "chosen": "a", "rejected": "b"},
                                "message 0 (user) is empty"),
    "hh-empty-human-turn": ("prompts", {"text": "Human: \n\nAssistant:"}, "no user message with text"),
    # an HH dialogue's turns count against the same limit, and the error names FILE:LINE (it said "prompt:")
    "hh-too-many-turns": ("prompts", {"text": "".join(f"\n\nHuman: q{i}\n\nAssistant: a{i}" for i in range(40))},
                          "field 'text': conversation has 80 messages; at most 64"),
}


@pytest.mark.parametrize("case", sorted(BAD), ids=str)
def test_bad_records_are_one_file_line_error(case, tmp_path):
    kind, row, msg = BAD[case]
    p = _write(tmp_path, [{"prompt": "ok", "chosen": "a", "rejected": "b", "response": "r"}, row])
    reader = {"prefs": load_human_labels, "prompts": load_prompts, "sft": load_sft}[kind]
    with pytest.raises(RlaifError) as e:
        reader(p)
    assert e.value.message.startswith(f"{p}:2:") and msg in e.value.message, e.value.message
