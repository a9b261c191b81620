"""train-policy: one entry point, dispatched by ``policy_training.algorithm``.

- ``dpo``: offline, on the mixed preference pairs (rlaif/train/dpo.py, trl's DPOTrainer);
- ``kto``: offline, on unpaired human feedback and optionally the pairs unpaired (rlaif/train/kto.py,
  trl's KTOTrainer);
- ``ppo``: online, rlaif's own PPO (rlaif/train/ppo.py);
- ``rloo`` / ``grpo``: online, trl's RLOOTrainer / GRPOTrainer (rlaif/train/online.py);
  the online algorithms are rewarded by the trained reward model, the judge or a weighted sum
  (``policy_training.reward``, rlaif/train/rewards.py).

Every algorithm writes the same output: a plain causal LM + tokenizer in ``layout.policy`` (LoRA
merged), which is what ``eval`` samples from, and returns ``{"algorithm", ..., "history"}``.
"""

from __future__ import annotations

from rlaif.config import PolicyTrainingConfig
from rlaif.errors import RlaifError
from rlaif.layout import RunLayout


def is_online(pcfg: PolicyTrainingConfig) -> bool:
    """DPO and KTO learn from the mixed data alone; the online algorithms sample the train prompts and are
    rewarded."""
    return pcfg.algorithm not in ("dpo", "kto")


def uses_reward_model(pcfg: PolicyTrainingConfig) -> bool:
    """An online algorithm whose ``policy_training.reward`` gives the trained reward model a weight."""
    return is_online(pcfg) and pcfg.reward.uses_reward_model


def uses_judge_reward(pcfg: PolicyTrainingConfig) -> bool:
    """An online algorithm whose ``policy_training.reward`` gives the judge a weight."""
    return is_online(pcfg) and pcfg.reward.uses_judge


def train_policy(pcfg: PolicyTrainingConfig, seed: int, layout: RunLayout, prompts: list[str], rm_max_length: int,
                 device: str, judge=None, ref_dir=None) -> dict:
    """Train the policy from ``layout.sft``; ``prompts`` (raw), ``rm_max_length`` (the reward model's
    token limit) and ``judge`` (a ``JudgeReward`` when the judge rewards) are used by the online
    algorithms. ``ref_dir``: the reference policy when it is not ``layout.sft`` (a round >= 2 with
    ``iteration.reference: sft``). The judge reward is closed when training ends."""
    algo = pcfg.algorithm
    try:
        if algo == "dpo":
            from rlaif.train.dpo import train_dpo

            return train_dpo(pcfg, seed, layout, device, ref_dir)
        if algo == "kto":
            from rlaif.train.kto import train_kto

            return train_kto(pcfg, seed, layout, device, ref_dir)
        if algo == "ppo":
            from rlaif.train.ppo import train_ppo

            return _with_judge_totals(train_ppo(pcfg, seed, layout, prompts, rm_max_length, device, judge, ref_dir),
                                      judge)
        if algo in ("rloo", "grpo"):
            from rlaif.train.online import train_online

            return _with_judge_totals(train_online(pcfg, seed, layout, prompts, rm_max_length, device, judge, ref_dir),
                                      judge)
    finally:
        if judge is not None:
            judge.close()
    raise RlaifError(f"policy_training.algorithm: unknown {algo!r}")  # pragma: no cover (config validates)


def _with_judge_totals(info: dict, judge) -> dict:
    """The judge reward's totals over this process's training (a resumed run counts from its resume)."""
    if judge is not None:
        info["judge_reward"] = dict(judge.totals)
    return info
