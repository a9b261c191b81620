"""RLOO and GRPO through trl's trainers: the reward callable, the synthetic task with a known
reward (as for PPO), and the pipeline's train-policy/eval with algorithm rloo."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

from test_ppo import PROMPTS, count_yes, one_thread, word_model  # noqa: E402,F401  (fixtures shared)

from rlaif.config import PolicyTrainingConfig  # noqa: E402
from rlaif.train.online import ScoreReward, history_of, run_online  # noqa: E402


def group_cfg(algo: str, **kw) -> PolicyTrainingConfig:
    s = dict(steps=20, num_generations=4, max_new_tokens=8, kl_coef=0.05)
    s.update(kw)
    return PolicyTrainingConfig(algorithm=algo, train={"learning_rate": 1e-2, "max_length": 48, "batch_size": 16,
                                                       "save_steps": 1000}, **{algo: s})


def test_score_reward_passes_raw_prompts_and_penalises_missing_eos():
    seen = {}

    def score(prompts, responses):
        seen["prompts"], seen["responses"] = prompts, responses
        return [1.0, 2.0]

    fn = ScoreReward(score, eos_token_id=0, missing_eos_penalty=0.5)
    out = fn(prompts=["### Prompt:\nhi\n### Response:\n"] * 2, completions=[" a ", "b"],
             completion_ids=[[5, 0], [5, 6]], raw_prompt=["hi", "hi"], trainer_state=None)
    assert out == [1.0, 1.5]  # the second completion never ended
    assert seen == {"prompts": ["hi", "hi"], "responses": ["a", "b"]}
    assert ScoreReward(score)(prompts=["p", "q"], completions=["a", "b"]) == [1.0, 2.0]


def test_history_keys_match_ppo_names():
    h = history_of([{"loss": 0.1, "reward": 1.0, "kl": 0.2, "entropy": 3.0, "clip_ratio/region_mean": 0.0,
                     "step": 1, "epoch": 0.1}, {"train_runtime": 1.0, "step": 1}])
    assert h == [{"loss": 0.1, "reward": 1.0, "kl_per_token": 0.2, "entropy": 3.0, "clipfrac": 0.0, "step": 1}]


def test_group_size_must_divide_the_batch(word_model, tmp_path):
    from rlaif.errors import RlaifError

    with pytest.raises(RlaifError, match="multiple of rloo.num_generations"):
        run_online("rloo", word_model, count_yes, PROMPTS, group_cfg("rloo", num_generations=3), tmp_path / "x")


@pytest.mark.slow
def test_rloo_raises_known_reward_and_big_kl_pins_reference(word_model, tmp_path, one_thread):
    info = run_online("rloo", word_model, count_yes, PROMPTS, group_cfg("rloo"), tmp_path / "free")
    h = [x for x in info["history"] if "reward" in x]
    assert len(h) == 20
    start = sum(x["reward"] for x in h[:3]) / 3
    end = sum(x["reward"] for x in h[-3:]) / 3
    assert end > start + 2.0, (start, end)  # ~0.35 'yes' per response at the start, ~6 after 20 steps
    assert max(x["kl_per_token"] for x in h) < 4.0
    assert all(math.isfinite(x["entropy"]) and math.isfinite(x["clipfrac"]) for x in h)
    assert (tmp_path / "free" / "config.json").exists() and not (tmp_path / "free.partial").exists()

    pinned = run_online("rloo", word_model, count_yes, PROMPTS, group_cfg("rloo", kl_coef=100.0), tmp_path / "pin")
    hp = [x for x in pinned["history"] if "reward" in x]
    assert max(x["kl_per_token"] for x in hp) < 0.2, [round(x["kl_per_token"], 3) for x in hp]
    assert sum(x["reward"] for x in hp[-3:]) / 3 < start + 0.6


@pytest.mark.slow
def test_grpo_raises_known_reward(word_model, tmp_path, one_thread):
    info = run_online("grpo", word_model, count_yes, PROMPTS, group_cfg("grpo", steps=12, kl_coef=0.04),
                      tmp_path / "grpo")
    h = [x for x in info["history"] if "reward" in x]
    assert len(h) == 12 and h[0]["kl_per_token"] == pytest.approx(0.0, abs=1e-6)
    assert sum(x["reward"] for x in h[-3:]) / 3 > sum(x["reward"] for x in h[:3]) / 3 + 0.5
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(tmp_path / "grpo"))  # a plain causal LM


# ---------------------------------------------------------------- the pipeline with algorithm=rloo
@pytest.mark.slow
def test_pipeline_train_policy_and_eval_with_rloo(tmp_path):
    """sft..train-rm once (DPO's default), then train-policy with rloo: only train-policy and eval re-run."""
    import conftest

    from rlaif.cli import main

    with conftest.scripted_backend_registered():
        proj = conftest.make_tiny_project(tmp_path / "proj")
        cfg = str(proj / "pipeline.yaml")
        assert main(["run", cfg, "--set", "policy_training.train.max_steps=1"]) == 0
        sets = ["--set", "policy_training.algorithm=rloo", "--set", "policy_training.rloo.steps=2",
                "--set", "policy_training.rloo.max_new_tokens=8", "--set", "policy_training.train.batch_size=8"]
        assert main(["train-policy", cfg, *sets]) == 0
        assert main(["eval", cfg, *sets]) == 0
        report = json.loads((proj / "run" / "report.json").read_text())
        assert report["policy"]["algorithm"] == "rloo"
        for k in ("reward_before", "reward_after", "kl", "win_rate_vs_ref"):
            assert math.isfinite(report["policy"][k]), k
        assert (proj / "run" / "rl.png").exists()
