"""The quickstart's generated demo data: reproducible from its script, and its three prompt splits kept apart."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"


def _generator():
    spec = importlib.util.spec_from_file_location("make_demo", DEMO / "make_demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_make_demo_reproduces_the_committed_files(tmp_path):
    subprocess.run([sys.executable, str(DEMO / "make_demo.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert "dev_prompts.jsonl" in written and "eval_prompts.jsonl" in written
    for name in written:
        assert (tmp_path / name).read_bytes() == (DEMO / name).read_bytes(), name


def _texts(name: str) -> set[str]:
    return {json.loads(line)["text"] for line in (DEMO / name).read_text().splitlines()}


@pytest.mark.parametrize("split", ["eval_prompts.jsonl", "dev_prompts.jsonl"], ids=["held-out", "dev"])
def test_held_out_and_dev_prompts_occur_in_no_training_file(split):
    texts = _texts(split)
    assert len(texts) == 99
    training = (DEMO / "sft.jsonl").read_text() + (DEMO / "prompts.jsonl").read_text() + "".join(
        (DEMO / f).read_text() for f in ("human_labels.jsonl", "human_labels_ab.jsonl", "human_thumbs.jsonl",
                                         "human_ratings.jsonl", "human_rankings.jsonl"))
    assert not [t for t in texts if json.dumps(t)[1:-1] in training]


def test_dev_split_shares_no_object_or_phrasing_with_the_held_out_or_training_split():
    mk = _generator()
    splits = {s: mk.requests(s) for s in ("train", "heldout", "dev")}
    objects = {s: {r[3] for r in rows} for s, rows in splits.items()}
    assert not objects["dev"] & (objects["train"] | objects["heldout"])
    assert not set(mk.PHRASINGS_DEV) & (set(mk.PHRASINGS_TRAIN) | set(mk.PHRASINGS_HELDOUT))
    assert not _texts("dev_prompts.jsonl") & _texts("eval_prompts.jsonl")
    # the same kinds in the same proportions as the held-out split
    cats = [json.loads(line)["category"] for line in (DEMO / "dev_prompts.jsonl").read_text().splitlines()]
    assert cats.count("harmful") == 45 and cats.count("helpful") == 54
