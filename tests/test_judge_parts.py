"""The pointwise judge stage works in parts (memory flat as a run grows); the parts change nothing."""

from __future__ import annotations

import pytest
from conftest import CONSTITUTION

from rlaif.constitution import Constitution
from rlaif.hashing import content_hash
from rlaif.judges import run as judge_run
from rlaif.judges.base import JudgeBackend, Verdict
from rlaif.records import Candidate, Prompt
from rlaif.store import Store


class HashJudge(JudgeBackend):
    backend, model, template_hash = "hash", "hash", "hash-v1"

    def score(self, prompts, responses, principle):
        return [Verdict(int(content_hash([principle.id, r], 4), 16) % 9 + 1.0) for r in responses]


def _judged(path, part_size, monkeypatch) -> tuple[list, list, dict]:
    monkeypatch.setattr(judge_run, "PART_CANDIDATES", part_size)
    with Store(path) as s:
        s.put_prompts([Prompt(f"p{i:02d}", f"question {i}", "harmful" if i % 3 == 0 else "helpful")
                       for i in range(20)])
        s.add_candidates([Candidate(f"p{i:02d}-{k}", f"p{i:02d}", k, f"answer {k} to {i % 7}", "pol")
                          for i in range(20) for k in range(4)], "gen")
        s.put_ai_pairs("jh", [("p00", "p00-0", "p00-1", 0.9, "scored", {})])  # an earlier run's pairs: replaced
        info = judge_run.judge_candidates(s, HashJudge().with_cache(s), Constitution.model_validate(CONSTITUTION),
                                          "gen", "jh", "all", 1.0, 8)
        pairs = [(d["prompt_id"], d["chosen_id"], d["rejected_id"], d["confidence"], d["details"])
                 for d in s.ai_pairs("jh")]
        judgements = s.db.execute("SELECT * FROM judgements ORDER BY candidate_id, principle_id").fetchall()
        keys = s.db.execute("SELECT COUNT(*) FROM ai_pairs WHERE pair_key IS NULL").fetchone()[0]
    assert keys == 0
    return pairs, judgements, info


@pytest.mark.parametrize("part_size", [1, 7, 40])
def test_judging_in_parts_gives_the_pairs_of_one_part(tmp_path, monkeypatch, part_size):
    whole = _judged(tmp_path / "whole.sqlite", 10_000, monkeypatch)
    parts = _judged(tmp_path / "parts.sqlite", part_size, monkeypatch)
    assert parts[0] == whole[0] and len(whole[0]) > 20
    assert parts[1] == whole[1]
    assert {k: parts[2][k] for k in ("candidates", "ai_pairs", "calls")} == \
        {k: whole[2][k] for k in ("candidates", "ai_pairs", "calls")}
