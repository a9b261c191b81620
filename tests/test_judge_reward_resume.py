"""RLOO / GRPO (trl) rewarded by the judge, killed mid-run and resumed from the last checkpoint: the
resumed run samples the killed step again identically (trl restores the RNG state), its judge calls come
from the run store's call cache, and the killed and resumed runs together pay exactly the calls of one
uninterrupted run (PPO's counterpart is in tests/test_judge_reward.py)."""

from __future__ import annotations

import pytest
from conftest import interrupt_on_call
from test_judge_reward import _prompts, yes_reward
from test_ppo import one_thread, word_model  # noqa: F401  (fixtures shared)

from rlaif.config import RewardWeights


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
