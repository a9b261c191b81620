"""RLOO / GRPO (trl) rewarded by the judge, killed mid-run and resumed from the last checkpoint: the
resumed run samples the killed step again identically (trl restores the RNG state), its judge calls come
from the run store's call cache, and the killed and resumed runs together pay exactly the calls of one
uninterrupted run (PPO's counterpart is in tests/test_judge_reward.py); and PPO / RLOO / GRPO resumed after
a kill give a batch with no scored rollout the running mean of the judge rewards the uninterrupted run would
(the mean is in the checkpoint)."""

from __future__ import annotations

import pytest
from conftest import interrupt_on_call
from test_judge_reward import _prompts, yes_reward
from test_ppo import one_thread, word_model  # noqa: F401  (fixtures shared)

from rlaif.config import RewardWeights
from rlaif.judges.reward import JudgeReward


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["rloo", "grpo"])
def test_group_rl_with_judge_reward_killed_and_resumed_pays_no_call_twice(algo, word_model, tmp_path, monkeypatch,
                                                                          one_thread):
    import trl
    from test_online_rl import group_cfg

    from rlaif.train.online import run_online

    base = group_cfg(algo, steps=4)
    cfg = base.model_copy(update={"reward": RewardWeights(judge=1.0),
                                  "train": base.train.model_copy(update={"save_steps": 2})})
    full_judge = yes_reward(tmp_path / "full.sqlite")
    full = run_online(algo, word_model, None, _prompts(), cfg, tmp_path / "full", judge=full_judge)
    full_judge.close()
    assert full_judge.totals["calls"] > 0

    trainer_cls = trl.RLOOTrainer if algo == "rloo" else trl.GRPOTrainer
    # killed in step 3, after its judge calls were committed
    real = interrupt_on_call(monkeypatch, trainer_cls, "_calculate_rewards", 3, after=True)
    killed = yes_reward(tmp_path / "run.sqlite")
    with pytest.raises(KeyboardInterrupt):
        run_online(algo, word_model, None, _prompts(), cfg, tmp_path / "killed", judge=killed)
    killed.close()
    assert (tmp_path / "killed.partial" / "checkpoints" / "checkpoint-2").is_dir()
    monkeypatch.setattr(trainer_cls, "_calculate_rewards", real)
    resumed_judge = yes_reward(tmp_path / "run.sqlite")
    resumed = run_online(algo, word_model, None, _prompts(), cfg, tmp_path / "killed", judge=resumed_judge)
    resumed_judge.close()
    assert resumed_judge.totals["cache_hits"] > 0  # step 3's calls, committed before the kill
    assert killed.totals["calls"] + resumed_judge.totals["calls"] == full_judge.totals["calls"]
    steps = [x for x in resumed["history"] if "reward" in x]
    assert [x["step"] for x in steps] == [1, 2, 3, 4]
    assert [round(x["reward"], 5) for x in steps] == [round(x["reward"], 5) for x in full["history"] if "reward" in x]


def dark_after(batches: int) -> JudgeReward:
    """The scripted 'say yes' judge reward whose judge stops giving usable scores after ``batches`` batches
    (every later rollout unscored), with no call cache (so every batch asks the judge)."""
    from conftest import ScriptedJudge
    from test_judge_reward import YES

    from rlaif.judges.base import Verdict

    seen = {"batches": 0}

    class Dark(ScriptedJudge):
        def with_cache(self, store):
            return self

        def score(self, prompts, responses, principle):
            if seen["batches"] > batches:
                return [Verdict.unscored("dark") for _ in responses]
            return super().score(prompts, responses, principle)

    class Counting(JudgeReward):
        def _score(self, prompts, responses):
            seen["batches"] += 1
            return super()._score(prompts, responses)

    return Counting(lambda store: Dark(), YES, {})


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "rloo", "grpo"])
def test_all_unscored_batches_after_a_resume_get_the_uninterrupted_running_mean(algo, word_model, tmp_path,
                                                                                monkeypatch, one_thread):
    """Steps 1-2 scored, steps 3-4 not: the uninterrupted run gives steps 3-4 the mean of steps 1-2's judge
    rewards. Killed in step 3 (after its rewards) and resumed from checkpoint 2 with a judge that scores
    nothing: steps 3-4 get the same mean, read back from the checkpoint (without it: 0.0)."""
    import json

    import trl
    from test_online_rl import group_cfg
    from test_ppo import ppo_cfg

    from rlaif.train import ppo
    from rlaif.train.online import run_online
    from rlaif.train.rewards import JUDGE_STATE

    base = ppo_cfg(steps=4) if algo == "ppo" else group_cfg(algo, steps=4)
    cfg = base.model_copy(update={"reward": RewardWeights(judge=1.0),
                                  "train": base.train.model_copy(update={"save_steps": 2})})

    def train(judge, out):
        if algo == "ppo":
            return ppo.run_ppo(word_model, judge, _prompts(), cfg, tmp_path / out, progress=None)
        return run_online(algo, word_model, None, _prompts(), cfg, tmp_path / out, judge=judge)

    full_judge = dark_after(2)
    full = train(full_judge, "full")
    full_state = full_judge.running_state()
    full_judge.close()
    judged = [x["judge_reward"] for x in full["history"] if "judge_reward" in x]
    assert len(judged) == 4 and judged[2] == judged[3] != 0.0  # steps 3-4: the running mean of steps 1-2

    owner, name = (ppo.PPOTrainer, "optimize") if algo == "ppo" else (
        trl.RLOOTrainer if algo == "rloo" else trl.GRPOTrainer, "_calculate_rewards")
    real = interrupt_on_call(monkeypatch, owner, name, 3, after=algo != "ppo")  # step 3's rewards computed
    killed = dark_after(2)
    with pytest.raises(KeyboardInterrupt):
        train(killed, "killed")
    killed.close()
    ckpt = tmp_path / "killed.partial" / "checkpoints" / ("step-2" if algo == "ppo" else "checkpoint-2")
    saved = json.loads((ckpt / JUDGE_STATE).read_text())["processes"]
    assert saved[0]["scored_n"] > 0 and saved[0]["scored_sum"] / saved[0]["scored_n"] == pytest.approx(judged[2])
    monkeypatch.setattr(owner, name, real)
    resumed_judge = dark_after(0)  # from the resume on, nothing is scored
    resumed = train(resumed_judge, "killed")
    assert resumed_judge.running_state() == full_state
    resumed_judge.close()
    after = [x["judge_reward"] for x in resumed["history"] if "judge_reward" in x]
    assert after[-2:] == [pytest.approx(judged[2])] * 2


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["rloo", "grpo"])
def test_a_resume_inside_a_num_iterations_block_counts_its_batch_once(algo, word_model, tmp_path, monkeypatch,
                                                                        one_thread):
    """num_iterations: 2 trains two steps on one generated batch. Saved after step 1 (inside the block), the
    checkpoint held the running mean with that batch counted, and the resumed trainer (trl does not checkpoint
    its buffer) generates and scores the block's batch again: counted twice. Now the mid-block checkpoint holds
    the mean as it was before the batch, and the resumed run's mean counts each of its batches once."""
    import json

    import trl
    from test_online_rl import group_cfg

    from rlaif.train.online import run_online
    from rlaif.train.rewards import JUDGE_STATE

    base = group_cfg(algo, steps=4, num_iterations=2)
    cfg = base.model_copy(update={"reward": RewardWeights(judge=1.0),
                                  "train": base.train.model_copy(update={"save_steps": 1})})
    full_judge = dark_after(100)  # scores every batch
    run_online(algo, word_model, None, _prompts(), cfg, tmp_path / "full", judge=full_judge)
    scored = full_judge.totals["rollouts"] - full_judge.totals["unscored"]
    assert full_judge.running_state()["scored_n"] == scored > 0
    full_judge.close()

    trainer_cls = trl.RLOOTrainer if algo == "rloo" else trl.GRPOTrainer
    real = interrupt_on_call(monkeypatch, trainer_cls, "training_step", 2)  # killed in step 2 (one micro-step each)
    killed = dark_after(100)
    with pytest.raises(KeyboardInterrupt):
        run_online(algo, word_model, None, _prompts(), cfg, tmp_path / "killed", judge=killed)
    killed.close()
    ckpt = tmp_path / "killed.partial" / "checkpoints" / "checkpoint-1"
    assert json.loads((ckpt / JUDGE_STATE).read_text())["processes"][0]["scored_n"] == 0  # before the block's batch
    monkeypatch.setattr(trainer_cls, "training_step", real)
    resumed_judge = dark_after(100)
    run_online(algo, word_model, None, _prompts(), cfg, tmp_path / "killed", judge=resumed_judge)
    # it scored the block's batch again and the next block's: the batches of the uninterrupted run
    assert resumed_judge.totals["rollouts"] == full_judge.totals["rollouts"]
    scored = resumed_judge.totals["rollouts"] - resumed_judge.totals["unscored"]
    assert resumed_judge.running_state()["scored_n"] == scored  # each once (without the fix: the first twice)
    resumed_judge.close()
