"""train-policy: one entry point, dispatched by ``policy_training.algorithm``.

- ``dpo``: offline, on the mixed preference pairs (rlaif/train/dpo.py, trl's DPOTrainer);
- ``ppo``: online, rlaif's own PPO against the trained reward model (rlaif/train/ppo.py);
- ``rloo`` / ``grpo``: online, trl's RLOOTrainer / GRPOTrainer against the trained reward model
  (rlaif/train/online.py).

Every algorithm writes the same output: a plain causal LM + tokenizer in ``layout.policy`` (LoRA
merged), which is what ``eval`` samples from, and returns ``{"algorithm", ..., "history"}``.
"""

from __future__ import annotations

from rlaif.config import PolicyTrainingConfig
from rlaif.errors import RlaifError
from rlaif.layout import RunLayout


def uses_reward_model(pcfg: PolicyTrainingConfig) -> bool:
    """DPO learns from the pairs alone; the online algorithms are rewarded by the trained reward model."""
    return pcfg.algorithm != "dpo"


def train_policy(pcfg: PolicyTrainingConfig, seed: int, layout: RunLayout, prompts: list[str], rm_max_length: int,
                 device: str) -> dict:
    """Train the policy from ``layout.sft``; ``prompts`` (raw) and ``rm_max_length`` (the reward model's
    token limit) are used by the online algorithms."""
    algo = pcfg.algorithm
    if algo == "dpo":
        from rlaif.train.dpo import train_dpo

        return train_dpo(pcfg, seed, layout, device)
    if algo == "ppo":
        from rlaif.train.ppo import train_ppo

        return train_ppo(pcfg, seed, layout, prompts, rm_max_length, device)
    if algo in ("rloo", "grpo"):
        from rlaif.train.online import train_online

        return train_online(pcfg, seed, layout, prompts, rm_max_length, device)
    raise RlaifError(f"policy_training.algorithm: unknown {algo!r}")  # pragma: no cover (config validates)
