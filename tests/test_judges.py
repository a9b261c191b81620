from __future__ import annotations

import copy

import pytest
from conftest import CONSTITUTION, ScriptedJudge

from rlaif.constitution import Constitution
from rlaif.judges.core import Item, score_items
from rlaif.judges.ranking import aggregate, confidence, rank_pairs
from rlaif.store import Store


@pytest.mark.parametrize("mode,expected", [
    ("best_worst", [("a", "d")]),
    ("adjacent", [("a", "b"), ("b", "c"), ("c", "d")]),
    ("all", [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]),
])
def test_rank_pairs(mode, expected):
    totals = [("c", 0.1), ("a", 0.9), ("d", -1.0), ("b", 0.5)]
    assert [(c, r) for c, r, _ in rank_pairs(totals, mode)] == expected
    assert all(gap > 0 for _, _, gap in rank_pairs(totals, mode))


def test_equal_scores_make_no_pair():
    assert rank_pairs([("a", 0.5), ("b", 0.5)], "best_worst") == []


def test_confidence_grows_with_gap():
    assert 0.5 < confidence(0.01, 0.1) < confidence(0.1, 0.1) < confidence(1.0, 0.1) <= 1.0


def test_aggregate_weights_and_applies_to():
    c = Constitution.model_validate(CONSTITUTION)
    scores = {"refuse-harm": 1.0, "helpful": -1.0, "concise": 0.0}
    assert aggregate(scores, c, "harmful") == pytest.approx((2 * 1.0 + 0.5 * 0.0) / 2.5)
    assert aggregate(scores, c, "helpful") == pytest.approx((1 * -1.0) / 1.5)


def items():
    return [Item("How do I make a fake ID?", "harmful", "Sure, here is how you could do it."),
            Item("How do I make a fake ID?", "harmful", "I can't help with that, but here is something safe."),
            Item("How do I boil pasta?", "helpful", "I am not able to help with that."),
            Item("How do I boil pasta?", "helpful", "Here is a clear answer: boil water, then add the pasta."),
            Item("How do I boil pasta?", "helpful", "")]


def test_scores_prefer_better_examples_and_unscored_is_recorded():
    c = Constitution.model_validate(CONSTITUTION)
    its = items()
    stats = score_items(ScriptedJudge(), c, its)
    assert its[1].total(c) > its[0].total(c)
    assert its[3].total(c) > its[2].total(c)
    assert its[4].verdicts["helpful"].status == "unscored" and its[4].verdicts["helpful"].raw == "empty response"
    assert stats.unscored == 2  # helpful + concise on the empty response
    assert "refuse-harm" not in its[2].verdicts  # applies_to: harmful only


def test_cache_rerun_is_free_and_edit_rejudges_only_that_principle(tmp_path):
    c = Constitution.model_validate(CONSTITUTION)
    with Store(tmp_path / "s.sqlite") as store:
        j = ScriptedJudge()
        first = score_items(j.with_cache(store), c, items())
        assert first.calls == len(j.calls) > 0 and first.cache_hits == 0
        j2 = ScriptedJudge()
        again = score_items(j2.with_cache(store), c, items())
        assert again.calls == 0 and len(j2.calls) == 0 and again.cache_hits == first.calls
        edited = copy.deepcopy(CONSTITUTION)
        edited["principles"][2]["text"] = "Prefer the response with fewer words."
        c2 = Constitution.model_validate(edited)
        j3 = ScriptedJudge()
        third = score_items(j3.with_cache(store), c2, items())
        assert {pid for pid, _ in j3.calls} == {"concise"}
        assert third.calls == len(items())  # 'concise' applies to every item


def test_changing_a_principle_changes_dependent_labels():
    c = Constitution.model_validate(CONSTITUTION)
    its = items()[2:4]
    score_items(ScriptedJudge(), c, its)
    before = its[1].total(c) > its[0].total(c)
    flipped = copy.deepcopy(CONSTITUTION)
    ex = flipped["principles"][1]["examples"]
    ex["better"], ex["worse"] = ex["worse"], ex["better"]
    c2 = Constitution.model_validate(flipped)
    its2 = items()[2:4]
    score_items(ScriptedJudge(), c2, its2)
    after = its2[1].total(c2) > its2[0].total(c2)
    assert before and not after


@pytest.mark.slow
def test_embedding_judge_prefers_refusal_for_harmful_principle():
    from conftest import ROOT

    from rlaif.constitution import load_constitution
    from rlaif.judges.embedding import EmbeddingJudge

    c = load_constitution(ROOT / "constitutions" / "helpful_harmless.yaml")
    j = EmbeddingJudge()
    its = [Item("How can I make a fake ID?", "harmful",
                "Sure, here is how you could do that: first you gather some materials and then follow the steps."),
           Item("How can I make a fake ID?", "harmful",
                "I can't help with making fake identification. If you need an ID, your local office can help.")]
    score_items(j, c, its)
    assert its[1].total(c) > its[0].total(c)
    # Editing the examples of a principle changes its scores.
    p = c.principles[0]
    s1 = j.score(["q"], [its[0].response], p)[0].score
    p2 = p.model_copy(update={"examples": p.examples.model_copy(update={"better": p.examples.worse,
                                                                       "worse": p.examples.better})}) \
        if p.examples else p
    if p.examples:
        s2 = j.score(["q"], [its[0].response], p2)[0].score
        assert s2 != pytest.approx(s1)
