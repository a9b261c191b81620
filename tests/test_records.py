from __future__ import annotations

import json

import pytest

from rlaif.errors import RlaifError
from rlaif.records import load_human_labels, load_prompts, pair_key


def test_trl_and_ab_formats(tmp_path):
    p = tmp_path / "l.jsonl"
    rows = [{"prompt": "q", "chosen": "good", "rejected": "bad"},
            {"prompt": "q2", "response_a": "x", "response_b": "y", "label": "B"},
            {"prompt": "q3", "response_a": "x", "response_b": "y", "label": "A"},
            {"prompt": "q4", "response_a": "x", "response_b": "y", "label": "tie"}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    labels = load_human_labels(p)
    assert [(h.chosen, h.rejected, h.label) for h in labels] == [
        ("good", "bad", "chosen"), ("y", "x", "chosen"), ("x", "y", "chosen"), ("x", "y", "tie")]
    assert labels[1].source == "l.jsonl:2"


def test_pair_key_is_order_free():
    assert pair_key("p", "a", "b") == pair_key("p ", "b", "a")
    assert pair_key("p", "a", "b") != pair_key("q", "a", "b")


BAD_LABELS = {
    "not-json": ('{"prompt": "q", "chosen": ', 1, "invalid JSON"),
    "not-object": ('["q", "a", "b"]', 1, "expected a JSON object"),
    "missing-rejected": ('{"prompt": "q", "chosen": "a"}', 1, "'rejected'"),
    "bad-label": ('{"prompt": "q", "response_a": "a", "response_b": "b", "label": "C"}', 1, "'label'"),
    "unknown-format": ('{"prompt": "q", "text": "a"}', 1, "unknown label format"),
    "empty-chosen": ('{"prompt": "q", "chosen": " ", "rejected": "b"}', 1, "'chosen'"),
    "second-line": ('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": 3}', 2, "'prompt'"),
}


@pytest.mark.parametrize("case", sorted(BAD_LABELS), ids=str)
def test_bad_labels_name_file_and_record(case, tmp_path):
    text, line, msg = BAD_LABELS[case]
    p = tmp_path / "labels.jsonl"
    p.write_text(text + "\n")
    with pytest.raises(RlaifError) as e:
        load_human_labels(p)
    assert e.value.message.startswith(f"{p}:{line}:"), e.value.message
    assert msg in e.value.message


def test_prompts_duplicate_ids_and_empty(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(RlaifError, match=":2: duplicate prompt id"):
        load_prompts(p)
    p.write_text("\n")
    with pytest.raises(RlaifError, match="no prompts"):
        load_prompts(p)
