"""train-policy: one entry point, dispatched by ``policy_training.algorithm``.

- ``dpo``: offline, on the mixed preference pairs (rlaif/train/dpo.py, trl's DPOTrainer);
- ``ppo``: online, rlaif's own PPO against the trained reward model (rlaif/train/ppo.py);
- ``rloo`` / ``grpo``: online, trl's RLOOTrainer / GRPOTrainer against the trained reward model
  (rlaif/train/online.py).

Every algorithm writes the same output: a plain causal LM + tokenizer in ``out_dir`` (LoRA merged),
which is what ``eval`` samples from, and returns ``{"algorithm", ..., "history"}``.
"""

from __future__ import annotations

from pathlib import Path

from rlaif.config import PipelineConfig
from rlaif.errors import RlaifError

ONLINE = ("ppo", "rloo", "grpo")


def train_policy(cfg: PipelineConfig, sft_dir: Path, pairs_dir: Path, rm_dir: Path, prompts: list[str],
                 out_dir: Path, device: str) -> dict:
    algo = cfg.policy_training.algorithm
    if algo == "dpo":
        from rlaif.train.dpo import train_dpo

        return train_dpo(cfg, sft_dir, pairs_dir, out_dir, device)
    if algo == "ppo":
        from rlaif.train.ppo import train_ppo

        return train_ppo(cfg, sft_dir, rm_dir, prompts, out_dir, device)
    if algo in ("rloo", "grpo"):
        from rlaif.train.online import train_online

        return train_online(cfg, algo, sft_dir, rm_dir, prompts, out_dir, device)
    raise RlaifError(f"policy_training.algorithm: unknown {algo!r}")  # pragma: no cover (config validates)
