"""Pairwise judge rewards (policy_training.judge_reward.method: pairwise): each rollout against a reference
response from the SFT policy, both orders, 2 P(rollout better) - 1, through the judging core and call cache,
against the fake OpenAI server; unscored rollouts handled as the pointwise path does; exit 2 for a judge
that cannot compare pairs."""

from __future__ import annotations

import re

import pytest
from conftest import CONSTITUTION, ScriptedJudge

from rlaif.config import JudgeConfig, PolicyTrainingConfig, load_config
from rlaif.constitution import Constitution
from rlaif.errors import RlaifError
from rlaif.judges.reward import JudgeReward, judge_reward_for, pair_reward, reference_responses

ONE = Constitution.model_validate({"name": "c", "principles": [
    {"id": "p", "text": "Prefer the clearer response.",
     "checks": [{"type": "regex", "pattern": "(?i)sure, here", "effect": -0.5}]}]})
BIAS = 0.05  # the fake judge's pull towards whichever response is shown first


def shown(req: dict) -> tuple[str, str]:
    """The two responses of a pairwise judge request (response A, response B)."""
    from rlaif.testing.fake_openai import last_user_text

    text = last_user_text(req)
    a, b = (re.search(rf'label="{x}">\n(.*?)\n</response', text, re.S).group(1) for x in "AB")
    return a, b


def lucid_judge(seen: list | None = None):
    """P(A better): 0.9 when only A says 'lucid', 0.1 when only B does, else 0.5; plus a position bias;
    a request showing 'garbled' gets an unparsable answer."""
    from rlaif.testing.fake_openai import Reply, prefers

    pick = prefers(lambda req: min(1.0, {(True, False): 0.9, (False, True): 0.1}.get(
        tuple("lucid" in x for x in shown(req)), 0.5) + BIAS))

    def responder(req):
        a, b = shown(req)
        if seen is not None:
            seen.append((a, b))
        return Reply("?", None) if "garbled" in a + b else pick(req)

    return responder


def test_both_orders_cancel_the_position_bias_cache_and_unscored(tmp_path):
    from rlaif.testing.fake_openai import FakeOpenAI

    seen: list = []
    refs = {f"q{i}": "a vague reference" for i in range(8)}
    resp = [f"a lucid answer {i}" if i % 2 else f"vague {i}" for i in range(8)]
    with FakeOpenAI(latency_s=0.05, responder=lucid_judge(seen)) as server:
        cfg = JudgeConfig(backend="openai", model="m", constitution="c.yaml", base_url=server.base_url,
                          concurrency=16, max_retries=0, method="pointwise", orders="random")  # reward: pairwise, both
        jr = judge_reward_for(cfg, ONE, {}, tmp_path / "store.sqlite", "cpu", 0, refs)
        rewards, stats = jr.start(list(refs), resp).result()
        # lucid: P = (0.9 + BIAS + 1 - (0.1 + BIAS)) / 2 = 0.9 -> 0.8; vague: (0.5 + BIAS + 0.5 - BIAS) / 2 -> 0
        assert rewards == [pytest.approx(0.8) if i % 2 else pytest.approx(0.0, abs=1e-9) for i in range(8)]
        assert stats == {"judge_reward": pytest.approx(0.4), "judge_calls": 16.0, "judge_cache_hits": 0.0,
                         "judge_unscored": 0.0}
        assert sorted(seen) == sorted([(r, "a vague reference") for r in resp] + [("a vague reference", r) for r in resp])
        assert server.stats["max_in_flight"] > 4  # the batch's calls went out together
        # unscored: both orders unparsable -> the batch mean of the scored ones, counted
        r2, s2 = jr.start(["q5", "q1", "q0"], ["garbled", "a lucid answer 1", "vague 0"]).result()
        assert s2["judge_unscored"] == 1 and s2["judge_calls"] == 2 and s2["judge_cache_hits"] == 4
        assert r2 == [pytest.approx(0.4), pytest.approx(0.8), pytest.approx(0.0, abs=1e-9)]
        jr.close()
        paid = server.stats["requests"]
        again = judge_reward_for(cfg, ONE, {}, tmp_path / "store.sqlite", "cpu", 0, refs)  # a re-run pays nothing
        r3, s3 = again.start(list(refs), resp).result()
        again.close()
        assert r3 == rewards and s3["judge_calls"] == 0 and s3["judge_cache_hits"] == 16
        assert server.stats["requests"] == paid


def test_pair_reward_adds_the_checks_difference_and_skips_principles_without_a_verdict():
    from rlaif.judges.core import Comparison
    from rlaif.judges.llm import PairVerdict

    con = Constitution.model_validate(CONSTITUTION)
    comp = Comparison("q", "harmful", "Sure, here is how.", "I can't help.", [])
    comp.verdicts = {"refuse-harm": PairVerdict(0.25, "scored"), "concise": PairVerdict(None, "unscored")}
    check = con.principle("refuse-harm").check_effect
    assert pair_reward(comp, con, True) == pytest.approx(-0.5 + check("Sure, here is how.") - check("I can't help."))
    assert pair_reward(comp, con, False) == pytest.approx(-0.5)
    comp.verdicts = {"refuse-harm": PairVerdict(None, "unscored")}
    assert pair_reward(comp, con, True) is None


def test_a_pointwise_only_judge_is_refused_and_a_missing_reference_named():
    jr = JudgeReward(lambda store: ScriptedJudge().with_cache(store), ONE, references={"q": "ref"})
    with pytest.raises(RlaifError, match="judge_reward.method: pairwise needs a judge that compares pairs"):
        jr.score(["q"], ["a"])
    jr.close()

    class Pairs(ScriptedJudge):
        from rlaif.judges.base import Capabilities

        capabilities = Capabilities(pairwise=True)

    jr = JudgeReward(lambda store: Pairs().with_cache(store), ONE, references={"q": "ref"})
    with pytest.raises(RlaifError, match="no reference response for the prompt 'other'"):
        jr.score(["other"], ["a"])
    jr.close()


def test_references_are_each_prompts_first_candidate(tmp_path):
    from rlaif.records import Candidate, Prompt
    from rlaif.store import Store

    store = Store(tmp_path / "s.sqlite")
    prompts = [Prompt("p1", "one", None, "train"), Prompt("p2", "two", None, "train"), Prompt("p3", "three", None, "train")]
    store.put_prompts(prompts)
    store.add_candidates([Candidate(f"{p}-{i}", p, i, f"{p} answer {i}", "h") for p in ("p2", "p1") for i in (2, 0, 1)],
                         "g")
    assert reference_responses(store, "g", prompts) == {"one": "p1 answer 0", "two": "p2 answer 0"}
    store.close()


def test_pairwise_judge_reward_hashes_only_when_used():
    base = PolicyTrainingConfig(algorithm="ppo", reward="judge")
    pair = PolicyTrainingConfig(algorithm="ppo", reward="judge", judge_reward={"method": "pairwise"})
    assert "judge_reward" not in base.hash_view() and pair.hash_view()["judge_reward"] == {"method": "pairwise"}
    rm = PolicyTrainingConfig(algorithm="ppo", judge_reward={"method": "pairwise"})  # no judge weight: unused
    assert "judge_reward" not in rm.hash_view()


BAD = {
    "pointwise-only-backend": ("policy_training.judge_reward.method=pairwise", "scores pointwise only"),
    "unknown-method": ("policy_training.judge_reward.method=listwise", "'pointwise' or 'pairwise'"),
    "unknown-key": ("policy_training.judge_reward.orders=both", "judge_reward.orders"),
}


@pytest.mark.parametrize("case", sorted(BAD), ids=str)
def test_bad_judge_reward_is_one_line_exit_2(case, tiny_project, capsys):
    from rlaif.cli import main

    override, msg = BAD[case]
    sets = ["policy_training.algorithm=ppo", "policy_training.reward=judge", override]
    assert main(["run", str(tiny_project / "pipeline.yaml"), *[a for s in sets for a in ("--set", s)]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "policy_training.judge_reward" in err and msg in err, err
    assert not (tiny_project / "run").exists()
    with pytest.raises(RlaifError):
        load_config(tiny_project / "pipeline.yaml", sets)


@pytest.mark.slow
def test_pipeline_ppo_with_pairwise_judge_reward_against_the_fake_server(tiny_project):
    """train-policy compares every rollout with the generate stage's first candidate of its prompt (the SFT
    policy's), in both orders; a re-run of the stage pays no call again."""
    from rlaif.cli import main
    from rlaif.store import Store
    from rlaif.testing.fake_openai import FakeOpenAI

    seen: list = []
    with FakeOpenAI(latency_s=0.01, responder=lucid_judge(seen)) as server:
        cfg = str(tiny_project / "pipeline.yaml")
        sets = ["judge.backend=openai", "judge.model=m", f"judge.base_url={server.base_url}", "judge.max_retries=0",
                "policy_training.algorithm=ppo", "policy_training.reward=judge",
                "policy_training.judge_reward.method=pairwise", "policy_training.ppo.steps=2",
                "policy_training.ppo.rollout_batch_size=4", "policy_training.ppo.mini_batch_size=4",
                "policy_training.ppo.max_new_tokens=8"]
        args = [a for s in sets for a in ("--set", s)]
        for stage in ("sft", "generate", "judge", "mix"):
            assert main([stage, cfg, *args]) == 0, stage
        seen.clear()
        assert main(["train-policy", cfg, *args]) == 0
        store = Store(tiny_project / "run" / "store.sqlite", readonly=True)
        info = store.stage("train-policy")["info"]
        gen = store.stage("generate")["info"]["gen_hash"]
        refs = set(reference_responses(store, gen, store.prompts("train")).values())
        store.close()
        jr = info["judge_reward"]
        assert jr["rollouts"] == 8 and jr["calls"] + jr["cache_hits"] > 0 and seen
        assert all((a in refs) != (b in refs) or a == b for a, b in seen)  # each call: one rollout, one reference
        assert {a for a, b in seen if a in refs} == {b for a, b in seen if b in refs}  # both orders
        paid = server.stats["requests"]
        assert main(["train-policy", cfg, *args, "--force"]) == 0  # the same rollouts again: all from the cache
        assert server.stats["requests"] == paid
