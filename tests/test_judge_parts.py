"""The pointwise judge stage works in parts (memory flat as a run grows); the parts change nothing."""

from __future__ import annotations

import pytest
from conftest import CONSTITUTION, verdict_during_write

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


def test_a_viewer_verdict_committed_while_the_judge_works_on_a_part_does_not_fail_the_stage(tmp_path, monkeypatch):
    """A viewer in another process commits a verdict while the pointwise judge scores its first part. The judge
    read its candidates through one query left open across the parts, which kept its connection's read snapshot:
    its next write (the call cache, the part's judgements) then failed at once with "database is locked"
    (SQLITE_BUSY_SNAPSHOT), however long the busy timeout."""
    from rlaif.records import HumanLabel
    from rlaif.vocab import viewer_source

    path = tmp_path / "store.sqlite"
    viewer = Store(path)

    class ViewerMeanwhile(HashJudge):
        given = 0

        def score(self, prompts, responses, principle):
            if not self.given:  # the reviewer's key, while the first part is judged
                viewer.add_human_labels([HumanLabel("q", "a", "b", source=viewer_source("ann"))])
                self.given += 1
            return super().score(prompts, responses, principle)

    monkeypatch.setattr(judge_run, "PART_CANDIDATES", 8)
    monkeypatch.setattr("rlaif.store._PAGE", 5)  # pages smaller than parts, and not dividing them
    try:
        with Store(path) as s:
            s.put_prompts([Prompt(f"p{i:02d}", f"question {i}", "helpful") for i in range(10)])
            s.add_candidates([Candidate(f"p{i:02d}-{k}", f"p{i:02d}", k, f"answer {k} to {i}", "pol")
                              for i in range(10) for k in range(4)], "gen")
            info = judge_run.judge_candidates(s, ViewerMeanwhile().with_cache(s),
                                              Constitution.model_validate(CONSTITUTION), "gen", "jh", "all", 1.0, 8)
            assert info["candidates"] == 40 and s.human_label_count() == 1
            assert [c.id for c in s.iter_candidates("gen")] == sorted(f"p{i:02d}-{k}" for i in range(10)
                                                                      for k in range(4))
    finally:
        viewer.close()


@pytest.mark.parametrize("bad", [False, True], ids=["pairs-stored", "bad-row-changes-nothing"])
def test_a_verdict_given_while_the_judge_encodes_its_pairs_is_not_refused(tmp_path, bad):
    """Two connections, as the judge stage and `rlaif view` in two processes: the judge's pairs are produced
    (slowly, here: the rows wait for the verdict) while the viewer writes with a short busy timeout. The pairs
    were encoded and keyed inside the write transaction, so the verdict failed with "database is locked";
    staged, they take the lock for SQLite's copy only. A bad row leaves the earlier pairs as they were."""

    from rlaif.errors import RlaifError
    from rlaif.records import HumanLabel
    from rlaif.vocab import viewer_source

    path = tmp_path / "store.sqlite"
    with Store(path) as s:
        s.put_prompts([Prompt(f"p{i}", f"question {i}", "helpful") for i in range(3)])
        s.add_candidates([Candidate(f"p{i}-{k}", f"p{i}", k, f"answer {k} to {i}", "pol")
                          for i in range(3) for k in range(2)], "gen")
        s.put_ai_pairs("jh", [("p0", "p0-1", "p0-0", 0.6, "scored", {})])  # an earlier run's pair
    rows = [(f"p{i}", f"p{i}-0", f"p{i}-1", 0.9, "scored", {}) for i in range(3)]
    errors = verdict_during_write(path, lambda s, stream: s.put_ai_pairs("jh", stream), rows,
                                  HumanLabel("q", "a", "b", source=viewer_source("ann")),
                                  RlaifError("a judge verdict that cannot be stored") if bad else None)
    with Store(path) as s:
        got = [(d["prompt_id"], d["chosen_id"]) for d in s.iter_ai_pairs("jh", raw=True)]
        assert s.human_label_count() == 1
        assert s.db.execute("SELECT COUNT(*) FROM ai_pairs WHERE pair_key IS NULL").fetchone()[0] == 0
    assert got == ([("p0", "p0-1")] if bad else [("p0", "p0-0"), ("p1", "p1-0"), ("p2", "p2-0")])
    assert [type(e) for e in errors] == ([RlaifError] if bad else [])


def test_replacing_pairs_deletes_the_earlier_ones_in_batches(tmp_path, monkeypatch):
    monkeypatch.setattr("rlaif.store._DELETE_BATCH", 3)
    with Store(tmp_path / "store.sqlite") as s:
        s.put_prompts([Prompt("p", "question", "helpful")])
        s.add_candidates([Candidate(f"c{k}", "p", k, f"answer {k}", "pol") for k in range(5)], "gen")
        old = [("p", f"c{a}", f"c{b}", 0.9, "scored", {}) for a in range(5) for b in range(5) if a < b]  # 10
        s.put_ai_pairs("jh", old)
        s.put_ai_pairs("other", old[:2])
        s.put_ai_pairs("jh", old[:1])
        assert s.ai_pair_counts("jh")[0] == 1 and s.ai_pair_counts("other")[0] == 2
