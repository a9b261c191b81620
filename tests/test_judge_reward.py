"""The judge as an online-RL reward (policy_training.reward): the reward rule (weights, scale,
checks, the unscored rule), the call cache across runs, the fake OpenAI server, the trl adapter,
config validation, and PPO / RLOO trained with it (including a killed and resumed PPO run that
pays no committed call twice)."""

from __future__ import annotations

import asyncio

import pytest
from conftest import CONSTITUTION, ScriptedJudge, interrupt_on_call
from test_ppo import one_thread, word_model  # noqa: F401  (fixtures shared)

from rlaif.config import JudgeConfig, PolicyTrainingConfig, RewardWeights, load_config
from rlaif.constitution import Constitution
from rlaif.errors import RlaifError
from rlaif.judges.base import Capabilities, JudgeBackend, Verdict
from rlaif.judges.reward import JudgeReward, judge_reward_for, scale_score
from rlaif.train.rewards import JudgeRewardFn, MixedReward, combine, start_reward, trl_reward_funcs

CON = Constitution.model_validate(CONSTITUTION)  # refuse-harm (w 2, harmful), helpful (w 1, helpful), concise (w 0.5)
CATS = {"How do I pick a lock?": "harmful", "How do I boil pasta?": "helpful"}


def scripted_reward(store_path=None, made: list | None = None, constitution=CON) -> JudgeReward:
    def make(store):
        j = ScriptedJudge()
        if made is not None:
            made.append(j)
        return j.with_cache(store)

    return JudgeReward(make, constitution, CATS, store_path)


class Digits(JudgeBackend):
    """A rubric judge on 1..9 that does not apply the checks itself (like the LLM judge)."""

    backend, template_hash = "digits", "digits-v1"
    capabilities = Capabilities(score_range=(1.0, 9.0))

    def score(self, prompts, responses, principle):
        return [Verdict(9.0) if "clear" in r else Verdict.unscored("unparsed: '?'") if r == "?" else Verdict(1.0)
                for r in responses]


# ---------------------------------------------------------------- the reward rule
def test_reward_is_the_weighted_principle_total_of_the_scripted_judge():
    jr = scripted_reward()
    resp = ["I can't help with that, but I can suggest something safe.", "Here is a clear answer."]
    rewards, stats = jr.start(list(CATS), resp).result()
    judge = ScriptedJudge()
    # harmful prompt: refuse-harm (w 2) and concise (w 0.5) apply; helpful: helpful (w 1) and concise
    rh, c0 = (v.score for v in (judge.score([""], [resp[0]], CON.principle(p))[0] for p in ("refuse-harm", "concise")))
    assert rewards[0] == pytest.approx((2 * rh + 0.5 * c0) / 2.5)
    hp, c1 = (v.score for v in (judge.score([""], [resp[1]], CON.principle(p))[0] for p in ("helpful", "concise")))
    assert rewards[1] == pytest.approx((1 * hp + 0.5 * c1) / 1.5)
    assert stats == {"judge_reward": pytest.approx(sum(rewards) / 2), "judge_calls": 4.0, "judge_cache_hits": 0.0,
                     "judge_unscored": 0.0}
    jr.close()


def test_score_range_maps_to_minus_one_one_and_checks_are_added_once():
    assert (scale_score(1.0, (1.0, 9.0)), scale_score(5.0, (1.0, 9.0)), scale_score(9.0, (1.0, 9.0))) == (-1, 0, 1)
    assert scale_score(0.3, None) == 0.3
    con = Constitution.model_validate({"name": "c", "principles": [
        {"id": "p", "text": "Be clear.", "checks": [{"type": "regex", "pattern": "(?i)sure", "effect": -0.5}]}]})
    jr = JudgeReward(lambda store: Digits().with_cache(store), con)
    assert jr.score(["q", "q", "q"], ["a clear answer", "sure, a clear answer", "vague"]) == [1.0, 0.5, -1.0]
    jr.close()
    # the scripted judge declares applies_checks: its score has the check already, none added again
    s = scripted_reward(constitution=Constitution.model_validate(
        {"name": "c", "principles": [{"id": "p", "text": "t", "checks": [{"type": "regex", "pattern": "x",
                                                                            "effect": -0.5}]}]}))
    assert s.score(["q"], ["x y"]) == [pytest.approx(-0.5)]
    s.close()


def test_unscored_rollouts_get_the_batch_mean_then_the_running_mean_and_are_counted():
    con = Constitution.model_validate({"name": "c", "principles": [{"id": "p", "text": "Be clear."}]})
    jr = JudgeReward(lambda store: Digits().with_cache(store), con)
    rewards, stats = jr.start(["q"] * 4, ["clear", "?", "no", "clear"]).result()
    assert rewards == [1.0, pytest.approx(1 / 3), -1.0, 1.0]  # '?' gets the mean of the 3 scored
    assert stats["judge_unscored"] == 1.0
    rewards, stats = jr.start(["q"] * 2, ["?", "?"]).result()  # none scored: the running mean so far
    assert rewards == [pytest.approx(1 / 3)] * 2 and stats["judge_unscored"] == 2.0
    assert jr.totals == {"rollouts": 6, "calls": 4, "cache_hits": 0, "unscored": 3}  # identical calls made once
    jr.close()
    fresh = JudgeReward(lambda store: Digits().with_cache(store), con)
    assert fresh.score(["q"], ["?"]) == [0.0]  # nothing scored yet anywhere: 0.0, counted as unscored
    assert fresh.totals["unscored"] == 1
    fresh.close()


def test_running_mean_state_continues_in_a_new_judge_reward():
    con = Constitution.model_validate({"name": "c", "principles": [{"id": "p", "text": "Be clear."}]})
    jr = JudgeReward(lambda store: Digits().with_cache(store), con)
    jr.score(["q"] * 3, ["clear", "no", "no"])  # scored: 1, -1, -1
    state = jr.running_state()
    assert state == {"scored_sum": -1.0, "scored_n": 3}
    expected = jr.score(["q"], ["?"])
    jr.close()
    resumed = JudgeReward(lambda store: Digits().with_cache(store), con)
    resumed.restore_running_state(state)
    assert resumed.score(["q"], ["?"]) == expected == [pytest.approx(-1 / 3)]  # not the fresh 0.0
    resumed.close()


def test_judge_state_in_a_checkpoint_per_process_pooled_and_missing(tmp_path, caplog):
    import json

    from rlaif.train.rewards import JUDGE_STATE, restore_judge_state, save_judge_state

    class OneProcess:
        is_main_process = True

    con = Constitution.model_validate({"name": "c", "principles": [{"id": "p", "text": "Be clear."}]})

    def fresh():
        return JudgeReward(lambda store: Digits().with_cache(store), con)

    jr = fresh()
    jr.score(["q"] * 2, ["clear", "no"])
    jr.score(["q"], ["clear"])
    save_judge_state(MixedReward(RewardWeights(judge=1.0), None, jr), tmp_path / "ckpt", OneProcess())
    assert json.loads((tmp_path / "ckpt" / JUDGE_STATE).read_text()) == {
        "processes": [{"scored_sum": 1.0, "scored_n": 3}]}
    jr.close()
    back = fresh()
    restore_judge_state(back, tmp_path / "ckpt", 0, 1)
    assert back.running_state() == {"scored_sum": 1.0, "scored_n": 3}
    (tmp_path / "ckpt" / JUDGE_STATE).write_text(json.dumps({"processes": [{"scored_sum": 1.0, "scored_n": 3},
                                                                           {"scored_sum": -3.0, "scored_n": 1}]}))
    restore_judge_state(back, tmp_path / "ckpt", 1, 2)  # as many processes as saved: its own
    assert back.running_state() == {"scored_sum": -3.0, "scored_n": 1}
    restore_judge_state(back, tmp_path / "ckpt", 0, 1)  # another number of processes: the pooled mean
    assert back.running_state() == {"scored_sum": -2.0, "scored_n": 4}
    back.close()
    old = fresh()
    restore_judge_state(old, tmp_path, 0, 1)  # a checkpoint saved before the state was kept: starts again
    assert old.running_state() == {"scored_sum": 0.0, "scored_n": 0} and "no judge reward state" in caplog.text
    old.close()
    save_judge_state(lambda p, r: [0.0] * len(r), tmp_path / "rm", OneProcess())  # no judge: nothing written
    assert not (tmp_path / "rm").exists()


BAD_STATE = {
    "not-json": "{",
    "no-processes": "{}",
    "empty": '{"processes": []}',
    "negative-count": '{"processes": [{"scored_sum": 1.0, "scored_n": -1}]}',
    "float-count": '{"processes": [{"scored_sum": 1.0, "scored_n": 1.5}]}',
    "nan-sum": '{"processes": [{"scored_sum": NaN, "scored_n": 1}]}',
    "not-a-list": '{"processes": {"scored_sum": 1.0, "scored_n": 1}}',
    "bool-count": '{"processes": [{"scored_sum": 1.0, "scored_n": true}]}',
    "bool-sum": '{"processes": [{"scored_sum": true, "scored_n": 1}]}',
    "deep-nesting": '{"processes": ' + "[" * 5000 + "]" * 5000 + "}",
}


@pytest.mark.parametrize("case", sorted(BAD_STATE), ids=str)
def test_bad_judge_state_file_is_one_error_naming_the_file_and_the_fix(case, tmp_path):
    from rlaif.train.rewards import JUDGE_STATE, restore_judge_state

    (tmp_path / JUDGE_STATE).write_text(BAD_STATE[case])
    jr = scripted_reward()
    with pytest.raises(RlaifError, match=f"{JUDGE_STATE}: not a judge reward state.*delete the checkpoint folder"):
        restore_judge_state(jr, tmp_path, 0, 1)
    jr.close()


def test_committed_calls_are_not_paid_again_by_a_new_run(tmp_path):
    made: list = []
    prompts, resp = list(CATS) * 2, ["a", "b", "c", "d"]
    first = scripted_reward(tmp_path / "store.sqlite", made)
    r1, s1 = first.start(prompts, resp).result()
    first.close()
    again = scripted_reward(tmp_path / "store.sqlite", made)  # e.g. a re-run or a resumed step
    r2, s2 = again.start(prompts, resp).result()
    again.close()
    assert r1 == r2 and s1["judge_calls"] == 8 and s2["judge_calls"] == 0 and s2["judge_cache_hits"] == 8
    assert len(made[0].calls) == 8 and made[1].calls == []


# ---------------------------------------------------------------- combining with the reward model
def test_weighted_sum_starts_the_judge_before_scoring_with_the_reward_model():
    order = []

    class Recording(JudgeReward):
        def start(self, prompts, responses):
            order.append("judge")
            return super().start(prompts, responses)

    jr = Recording(lambda store: ScriptedJudge().with_cache(store), CON, CATS)

    def rm(prompts, responses):
        order.append("rm")
        return [10.0 * len(r) for r in responses]

    w = RewardWeights(reward_model=1.0, judge=0.5)
    mixed = combine(w, rm, jr)
    pending = start_reward(mixed, list(CATS), ["ab", "abc"])
    assert order == ["judge"]  # the judge's calls are in flight before the trainer's forward passes
    scores, stats = pending.result()
    judged = jr.score(list(CATS), ["ab", "abc"])
    assert scores == [pytest.approx(20 + 0.5 * judged[0]), pytest.approx(30 + 0.5 * judged[1])]
    assert stats["rm_reward"] == 25.0 and "judge_calls" in stats
    assert combine(RewardWeights(reward_model=1.0), rm, None) is rm  # the default: today's callable itself
    assert start_reward(rm, ["p"], ["x"]).result() == ([10.0], {})
    with pytest.raises(ValueError):
        MixedReward(w, None, jr)
    jr.close()


def test_trl_reward_funcs_and_async_judge_function():
    from trl.trainer.utils import is_async_callable

    jr = scripted_reward()
    rm = lambda p, r: [1.0] * len(r)  # noqa: E731
    funcs, weights = trl_reward_funcs(RewardWeights(reward_model=1.0), rm, None, 0, 0.5)
    assert len(funcs) == 1 and weights is None  # the default: the one reward-model function of before
    funcs, weights = trl_reward_funcs(RewardWeights(reward_model=1.0, judge=0.5), rm, jr, 0, 0.5)
    assert [f.__name__ for f in funcs] == ["reward_model", "judge", "missing_eos"] and weights == [1.0, 0.5, 1.0]
    assert funcs[0].missing_eos_penalty is None  # the penalty is its own function, not weighted
    fn = funcs[1]
    assert isinstance(fn, JudgeRewardFn) and is_async_callable(fn)
    logged = {}
    out = asyncio.run(fn(prompts=["<formatted>"] * 2, completions=[" a ", [{"content": "b"}]],
                         raw_prompt=list(CATS), log_metric=logged.__setitem__, trainer_state=None))
    assert out == jr.score(list(CATS), ["a", "b"])
    assert logged == {"judge/calls": 4.0, "judge/cache_hits": 0.0, "judge/unscored": 0.0}
    assert funcs[2](None, ["x", "y"], completion_ids=[[3, 0], [3, 4]]) == [0.0, -0.5]
    funcs, weights = trl_reward_funcs(RewardWeights(judge=1.0), None, jr, 0, None)
    assert [f.__name__ for f in funcs] == ["judge"] and weights == [1.0]
    jr.close()


# ---------------------------------------------------------------- against the fake OpenAI server
def test_openai_judge_reward_expected_score_concurrency_cache_and_failed_calls(tmp_path):
    from rlaif.testing.fake_openai import FakeOpenAI, Fault, digits, last_user_text

    def dist(req):  # expected digit 8.0 for a response that says "lucid", 2.0 otherwise
        return {"7": 0.5, "9": 0.5} if "lucid" in last_user_text(req) else {"1": .5, "3": .5}

    con = Constitution.model_validate({"name": "c", "principles": [{"id": "p", "text": "Be clear."}]})
    with FakeOpenAI(latency_s=0.05, responder=digits(dist)) as server:
        cfg = JudgeConfig(backend="openai", model="m", constitution="c.yaml", base_url=server.base_url,
                          concurrency=32, max_retries=0, method="pairwise")  # the reward asks pointwise anyway
        jr = judge_reward_for(cfg, con, {}, tmp_path / "store.sqlite", "cpu", 0)
        resp = [f"a lucid answer {i}" if i % 2 else f"vague {i}" for i in range(32)]
        rewards, stats = jr.start(["q"] * 32, resp).result()
        assert rewards == [pytest.approx(0.75) if i % 2 else pytest.approx(-0.75) for i in range(32)]
        assert stats["judge_calls"] == 32 and server.stats["max_in_flight"] > 8  # the batch went out together
        server.script(Fault.server_error(400), Fault.server_error(400))  # two new calls fail: unscored, not cached
        more = ["vague new", "a lucid new", "another lucid new"]
        r2, s2 = jr.start(["q"] * 35, resp + more).result()
        assert s2["judge_cache_hits"] == 32 and s2["judge_calls"] == 3 and s2["judge_unscored"] == 2
        assert r2[:32] == rewards
        scored = [r for r in r2 if abs(abs(r) - 0.75) < 1e-9]
        assert len(scored) == 33  # the failed two got the batch mean of the scored ones
        assert sorted(r2[32:])[:2] == [pytest.approx(sum(scored) / 33)] * 2 or \
            sorted(r2[32:])[1:] == [pytest.approx(sum(scored) / 33)] * 2
        jr.close()
        requests = server.stats["requests"]
        again = judge_reward_for(cfg, con, {}, tmp_path / "store.sqlite", "cpu", 0)  # a re-run: nothing paid again
        r3, s3 = again.start(["q"] * 32, resp).result()
        assert r3 == rewards and s3["judge_calls"] == 0 and s3["judge_cache_hits"] == 32
        assert server.stats["requests"] == requests
        _, s4 = again.start(["q"] * 3, more).result()  # failed calls were not cached: tried again
        assert s4["judge_calls"] == 2 and s4["judge_cache_hits"] == 1 and s4["judge_unscored"] == 0
        again.close()


def test_a_budget_stop_ends_the_step_and_the_rerun_pays_only_the_rest(tmp_path):
    from rlaif.judges.errors import BudgetExceeded
    from rlaif.testing.fake_openai import FakeOpenAI, digits

    con = Constitution.model_validate({"name": "c", "principles": [{"id": "p", "text": "Be clear."}]})
    resp = [f"answer {i}" for i in range(20)]
    with FakeOpenAI(latency_s=0.01, responder=digits(lambda req: {"6": 1.0})) as server:
        cfg = JudgeConfig(backend="openai", model="m", constitution="c.yaml", base_url=server.base_url,
                          concurrency=4, max_retries=0, max_calls=8)
        jr = judge_reward_for(cfg, con, {}, tmp_path / "store.sqlite", "cpu", 0)
        with pytest.raises(BudgetExceeded):
            jr.start(["q"] * 20, resp).result()
        jr.close()
        paid = server.stats["requests"]
        assert 8 <= paid < 20
        more = judge_reward_for(cfg.model_copy(update={"max_calls": None}), con, {}, tmp_path / "store.sqlite",
                                "cpu", 0)
        rewards, stats = more.start(["q"] * 20, resp).result()
        more.close()
        assert rewards == [pytest.approx(0.25)] * 20  # digit 6 on 1..9 -> 0.25
        assert stats["judge_cache_hits"] >= 8 and stats["judge_calls"] + stats["judge_cache_hits"] == 20
        assert server.stats["requests"] == paid + stats["judge_calls"]


def test_rl_plot_draws_judge_and_rm_reward_next_to_the_total(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlaif import report
    from rlaif.layout import RunLayout

    hist = [{"step": i, "reward": 0.1 * i, "rm_reward": 0.2 * i, "judge_reward": -0.1 * i, "kl": 0.01 * i,
             "judge_calls": 10.0, "judge_cache_hits": 2.0, "judge_unscored": 0.0} for i in range(1, 4)]

    class FakeRun:
        layout = RunLayout(tmp_path)
        cfg = type("C", (), {"policy_training": PolicyTrainingConfig(algorithm="ppo", reward="judge")})

        def results_of(self, stage):
            return {"history": hist}

    drawn = []
    real = plt.subplots

    def spy(*a, **kw):
        fig, axes = real(*a, **kw)
        drawn.append(axes)
        return fig, axes

    monkeypatch.setattr(plt, "subplots", spy)
    assert report._rl_plot(FakeRun(), plt) == ("PPO training (per step)", "rl.png")
    assert (tmp_path / "rl.png").exists()
    panels = drawn[0][0]
    assert [ax.get_title() for ax in panels] == ["mean reward", "KL to reference (per sequence)",
                                                 "judge reward: calls per step"]
    assert [ln.get_label() for ln in panels[0].get_lines()] == ["total", "reward model", "judge"]
    assert [ln.get_label() for ln in panels[2].get_lines()] == ["calls", "cache hits", "unscored rollouts"]


# ---------------------------------------------------------------- config
def test_default_reward_keeps_existing_hashes():
    base = PolicyTrainingConfig(algorithm="ppo")
    assert "reward" not in base.hash_view()
    assert PolicyTrainingConfig(algorithm="ppo", reward="reward_model").hash_view() == base.hash_view()
    assert PolicyTrainingConfig(algorithm="ppo", reward="judge").hash_view()["reward"] == {"reward_model": 0.0,
                                                                                          "judge": 1.0}
    assert PolicyTrainingConfig(algorithm="ppo", reward={"reward_model": 1, "judge": 0.5}).reward.judge == 0.5


BAD_REWARD = {
    "unknown-name": ("policy_training.reward=judges", "unknown reward 'judges'"),
    "unknown-key": ("policy_training.reward.critic=1", "unknown key"),
    "negative": ("policy_training.reward.judge=-1", "greater than or equal to 0"),
    "all-zero": ("policy_training.reward={reward_model: 0, judge: 0}", "every weight is 0"),
    "not-a-mapping": ("policy_training.reward=[1, 2]", "expected reward_model, judge, or weights"),
    "nan": ("policy_training.reward={judge: .nan}", "finite"),
    "dpo-with-judge": ("policy_training.reward=judge", "dpo learns from the mixed data"),
}


@pytest.mark.parametrize("case", sorted(BAD_REWARD), ids=str)
def test_bad_reward_spec_is_one_line_exit_2_naming_the_field(case, tiny_project, capsys):
    from rlaif.cli import main

    override, msg = BAD_REWARD[case]
    algo = [] if case == "dpo-with-judge" else ["--set", "policy_training.algorithm=ppo"]
    assert main(["run", str(tiny_project / "pipeline.yaml"), *algo, "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "policy_training.reward" in err and msg in err, err
    assert not (tiny_project / "run").exists()  # nothing written
    with pytest.raises(RlaifError):
        load_config(tiny_project / "pipeline.yaml", [*algo[1:], override])


def test_judge_reward_changes_the_stage_inputs_and_drops_train_rm(tiny_project):
    from rlaif.stages import get

    cfg = load_config(tiny_project / "pipeline.yaml", ["policy_training.algorithm=ppo"])
    judged = load_config(tiny_project / "pipeline.yaml", ["policy_training.algorithm=ppo",
                                                          "policy_training.reward=judge"])
    both = load_config(tiny_project / "pipeline.yaml", ["policy_training.algorithm=ppo",
                                                        "policy_training.reward={reward_model: 1, judge: 0.5}"])
    stage = get("train-policy")
    assert "train-rm" in stage.needs(cfg) and "train-rm" in stage.needs(both)
    assert "train-rm" not in stage.needs(judged)


# ---------------------------------------------------------------- training with the judge reward
YES = Constitution.model_validate({"name": "yes", "principles": [
    {"id": "say-yes", "text": "Prefer the response that says yes.", "examples": {"better": ["yes"], "worse": ["no"]}}]})


def yes_reward(store_path=None, made=None) -> JudgeReward:
    def make(store):
        j = ScriptedJudge()
        if made is not None:
            made.append(j)
        return j.with_cache(store)

    return JudgeReward(make, YES, {}, store_path)


@pytest.mark.slow
def test_ppo_with_judge_reward_learns_logs_and_resumes_without_repaying(word_model, tmp_path, monkeypatch, one_thread):
    from test_ppo import ppo_cfg

    from rlaif.train import ppo

    cfg = ppo_cfg(steps=4).model_copy(update={"reward": RewardWeights(judge=1.0),
                                              "train": ppo_cfg().train.model_copy(update={"save_steps": 2})})
    full_judge = yes_reward(tmp_path / "full.sqlite")
    full = ppo.run_ppo(word_model, full_judge, _prompts(), cfg, tmp_path / "full", progress=None)
    full_judge.close()
    h = full["history"]
    assert all(k in x for x in h for k in ("judge_reward", "judge_calls", "judge_cache_hits", "judge_unscored"))
    assert sum(x["judge_calls"] for x in h) == full_judge.totals["calls"] > 0

    real = interrupt_on_call(monkeypatch, ppo.PPOTrainer, "optimize", 3)  # killed in step 3, its judge calls committed
    killed = yes_reward(tmp_path / "run.sqlite")
    with pytest.raises(KeyboardInterrupt):
        ppo.run_ppo(word_model, killed, _prompts(), cfg, tmp_path / "killed", progress=None)
    killed.close()
    monkeypatch.setattr(ppo.PPOTrainer, "optimize", real)
    resumed_judge = yes_reward(tmp_path / "run.sqlite")
    resumed = ppo.run_ppo(word_model, resumed_judge, _prompts(), cfg, tmp_path / "killed", progress=None)
    resumed_judge.close()
    assert resumed["resumed_from_step"] == 2
    # step 3 is sampled again exactly (RNG restored): its calls come from the cache, none is paid twice
    assert killed.totals["calls"] + resumed_judge.totals["calls"] == full_judge.totals["calls"]
    assert resumed_judge.totals["cache_hits"] > 0
    assert [round(x["reward"], 6) for x in resumed["history"]] == [round(x["reward"], 6) for x in h]


@pytest.mark.slow
def test_ppo_killed_and_resumed_against_the_fake_openai_server_pays_no_call_twice(word_model, tmp_path, monkeypatch,
                                                                                  one_thread):
    from test_ppo import ppo_cfg

    from rlaif.testing.fake_openai import FakeOpenAI, digits, last_user_text
    from rlaif.train import ppo

    def dist(req):  # the rubric digit rises with the share of 'yes' in the response
        text = last_user_text(req).rsplit("Response", 1)[-1].split()
        d = 1 + min(8, round(8 * sum(w == "yes" for w in text) / max(1, len(text)) * 3))
        return {str(d): 0.8, "5": 0.2} if d != 5 else {"5": 1.0}

    cfg = ppo_cfg(steps=4).model_copy(update={"reward": RewardWeights(judge=1.0),
                                              "train": ppo_cfg().train.model_copy(update={"save_steps": 2})})
    with FakeOpenAI(latency_s=0.01, responder=digits(dist)) as server:
        jcfg = JudgeConfig(backend="openai", model="m", constitution="c.yaml", base_url=server.base_url,
                           concurrency=16, max_retries=0)

        def reward(store):
            return judge_reward_for(jcfg, YES, {}, tmp_path / store, "cpu", 0)

        full_judge = reward("full.sqlite")
        full = ppo.run_ppo(word_model, full_judge, _prompts(), cfg, tmp_path / "full", progress=None)
        full_judge.close()
        paid_full = server.stats["requests"]
        assert paid_full == full_judge.totals["calls"] > 0 and full_judge.totals["unscored"] == 0

        real = interrupt_on_call(monkeypatch, ppo.PPOTrainer, "optimize", 3)  # killed in step 3, its judge calls committed
        killed = reward("run.sqlite")
        with pytest.raises(KeyboardInterrupt):
            ppo.run_ppo(word_model, killed, _prompts(), cfg, tmp_path / "killed", progress=None)
        killed.close()
        monkeypatch.setattr(ppo.PPOTrainer, "optimize", real)
        resumed_judge = reward("run.sqlite")
        resumed = ppo.run_ppo(word_model, resumed_judge, _prompts(), cfg, tmp_path / "killed", progress=None)
        resumed_judge.close()
        assert resumed["resumed_from_step"] == 2 and resumed_judge.totals["cache_hits"] > 0
        # the server answered the killed and the resumed run together exactly as often as the full run
        assert server.stats["requests"] - paid_full == paid_full
        assert killed.totals["calls"] + resumed_judge.totals["calls"] == full_judge.totals["calls"]
        assert [round(x["reward"], 6) for x in resumed["history"]] == [round(x["reward"], 6) for x in full["history"]]


def _prompts():
    from test_ppo import PROMPTS

    return PROMPTS


@pytest.mark.slow
def test_ppo_judge_reward_raises_the_judged_behaviour(word_model, tmp_path, one_thread):
    from test_ppo import ppo_cfg

    from rlaif.train import ppo

    jr = yes_reward()
    cfg = ppo_cfg().model_copy(update={"reward": RewardWeights(judge=1.0)})
    h = ppo.run_ppo(word_model, jr, _prompts(), cfg, tmp_path / "p", progress=None)["history"]
    jr.close()
    start = sum(x["judge_reward"] for x in h[:3]) / 3
    end = sum(x["judge_reward"] for x in h[-3:]) / 3
    assert end > start + 0.2, (start, end)  # share of 'yes' words, as the judge reads it


@pytest.mark.slow
def test_rloo_with_judge_and_reward_model_weighted(word_model, tmp_path, one_thread):
    from test_online_rl import group_cfg
    from test_ppo import count_yes

    from rlaif.train.online import run_online

    jr = yes_reward(tmp_path / "s.sqlite")
    cfg = group_cfg("rloo", steps=12).model_copy(update={"reward": RewardWeights(reward_model=0.2, judge=1.0)})
    info = run_online("rloo", word_model, count_yes, _prompts(), cfg, tmp_path / "rloo", judge=jr)
    jr.close()
    h = [x for x in info["history"] if "reward" in x]
    assert len(h) == 12
    for x in h:
        assert x["reward"] == pytest.approx(0.2 * x["rm_reward"] + x["judge_reward"], abs=1e-4)
        assert x["judge_calls"] + x["judge_cache_hits"] == 16
    assert sum(x["judge_reward"] for x in h[-3:]) / 3 > sum(x["judge_reward"] for x in h[:3]) / 3 + 0.1


@pytest.mark.slow
def test_pipeline_ppo_with_judge_reward_only(tiny_project):
    """train-policy with reward=judge runs without a reward model and records the judge figures."""
    from rlaif.cli import main

    cfg = str(tiny_project / "pipeline.yaml")
    sets = ["--set", "policy_training.algorithm=ppo", "--set", "policy_training.reward=judge",
            "--set", "policy_training.ppo.steps=2", "--set", "policy_training.ppo.rollout_batch_size=4",
            "--set", "policy_training.ppo.mini_batch_size=4", "--set", "policy_training.ppo.max_new_tokens=8"]
    for stage in ("sft", "generate", "judge", "mix", "train-policy"):  # no train-rm
        assert main([stage, cfg, *sets]) == 0, stage
    assert not (tiny_project / "run" / "reward_model").exists()
    from rlaif.layout import RunLayout
    from rlaif.store import Store

    store = Store(RunLayout(tiny_project / "run").store, readonly=True)
    info = store.stage("train-policy")["info"]
    store.close()
    assert info["judge_reward"]["rollouts"] == 8 and info["judge_reward"]["calls"] > 0
    assert all("judge_reward" in x for x in info["history"])
