"""The ``policy_training`` section of the pipeline config: DPO, KTO, PPO, RLOO, GRPO, LoRA and GPU options,
the reward source (split from rlaif/config.py, which re-exports every name here)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from rlaif.config_base import TrainArgs, _Section


class LoraSettings(_Section):
    """LoRA adapters through peft (imported only when set; ``pip install peft``)."""

    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class PPOSettings(_Section):
    """rlaif's own PPO (rlaif/train/ppo.py); per-process sizes."""

    steps: int | None = Field(None, ge=1, description="PPO iterations (one rollout batch each); default: "
                                                      "train.max_steps if > 0, else train.epochs passes over the prompts")
    rollout_batch_size: int = Field(16, ge=1, description="prompts sampled per iteration (per process)")
    mini_batch_size: int = Field(8, ge=1, description="rollouts per optimizer step")
    ppo_epochs: int = Field(2, ge=1, description="passes over each rollout batch")
    max_new_tokens: int = Field(32, ge=1)
    temperature: float = Field(1.0, gt=0, description="sampling temperature; logits are divided by it in training too")
    kl_coef: float = Field(0.05, ge=0, description="per-token KL penalty to the reference (SFT) policy")
    kl_estimator: Literal["k1", "k3"] = Field("k1", description="per-token KL estimate in the reward")
    target_kl: float | None = Field(None, gt=0, description="adaptive KL controller target (per sequence); None: fixed")
    kl_horizon: int = Field(10000, ge=1, description="adaptive KL controller horizon (rollouts)")
    cliprange: float = Field(0.2, gt=0)
    cliprange_value: float = Field(0.2, gt=0)
    vf_coef: float = Field(0.1, ge=0)
    vf_learning_rate: float | None = Field(None, gt=0, description="critic learning rate; None: train.learning_rate")
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    whiten_rewards: bool = False
    normalize_reward: bool = Field(True, description="scale RM scores to mean 0, std 1 on the initial policy's samples")
    missing_eos_penalty: float | None = Field(1.0, ge=0, description="subtracted from the score of a response "
                                                                      "that does not end (no EOS); None: off")
    max_grad_norm: float = Field(1.0, gt=0)


class GroupRLSettings(_Section):
    """RLOO / GRPO through trl (rlaif/train/online.py)."""

    steps: int | None = Field(None, ge=1, description="optimizer steps; default: train.max_steps / train.epochs")
    num_generations: int = Field(4, ge=2, description="completions per prompt (the group)")
    max_new_tokens: int = Field(32, ge=1)
    temperature: float = Field(1.0, gt=0)
    kl_coef: float = Field(0.05, ge=0, description="trl's beta")
    num_iterations: int = Field(1, ge=1, description="optimisation passes per generation batch (mu)")
    cliprange: float = Field(0.2, gt=0, description="trl's epsilon")
    missing_eos_penalty: float | None = Field(None, ge=0, description="subtracted from the RM score of a "
                                                                       "completion with no EOS; None: off")


class RLOOSettings(GroupRLSettings):
    normalize_advantages: bool = False


class GRPOSettings(GroupRLSettings):
    kl_coef: float = Field(0.04, ge=0, description="trl's beta")
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = "dapo"
    scale_rewards: Literal["group", "batch", "none"] = "group"


DPO_LOSSES = Literal["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                     "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"]


class DPOSettings(_Section):
    """trl's DPO loss choice: one loss, or several summed with weights (e.g. RPO: [sigmoid, sft])."""

    loss_type: list[DPO_LOSSES] = Field(["sigmoid"], min_length=1, max_length=4,
                                        description="trl DPOConfig.loss_type; sigmoid is the DPO loss, "
                                                    "sft adds the chosen responses' NLL (RPO)")
    loss_weights: list[float] | None = Field(None, description="one weight per loss_type; None: 1.0 each")

    @model_validator(mode="after")
    def _weights_match(self):
        if self.loss_weights is not None:
            if len(self.loss_weights) != len(self.loss_type):
                raise ValueError(f"loss_weights has {len(self.loss_weights)} values for {len(self.loss_type)} "
                                 "loss_type entries; give one weight per loss")
            if any(not math.isfinite(w) or w < 0 for w in self.loss_weights):
                raise ValueError("loss_weights must be finite and >= 0")
        return self


REWARD_SOURCES = ("reward_model", "judge")


class RewardWeights(_Section):
    """What rewards the online algorithms: the trained reward model, the judge, or a weighted sum.

    YAML: ``reward: reward_model`` (the default), ``reward: judge``, or a mapping of weights
    (``{reward_model: 1.0, judge: 0.5}``; a source left out of the mapping has weight 0)."""

    reward_model: float = Field(0.0, ge=0, description="weight of the trained reward model's score")
    judge: float = Field(0.0, ge=0, description="weight of the judge reward (rlaif/judges/reward.py)")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, v):
        if isinstance(v, str):
            if v not in REWARD_SOURCES:
                raise ValueError(f"unknown reward {v!r}; use reward_model, judge, or weights such as "
                                 "{reward_model: 1.0, judge: 0.5}")
            return {v: 1.0}
        if not isinstance(v, (dict, RewardWeights)):
            raise ValueError("expected reward_model, judge, or weights such as {reward_model: 1.0, judge: 0.5}")
        return v

    @model_validator(mode="after")
    def _some_weight(self):
        if self.reward_model <= 0 and self.judge <= 0:
            raise ValueError("every weight is 0; give reward_model or judge a weight > 0")
        return self

    @property
    def uses_judge(self) -> bool:
        return self.judge > 0

    @property
    def uses_reward_model(self) -> bool:
        return self.reward_model > 0


class JudgeRewardSettings(_Section):
    """How the judge rewards a rollout when ``reward`` gives it a weight (rlaif/judges/reward.py)."""

    method: Literal["pointwise", "pairwise"] = Field(
        "pointwise", description="pointwise: the expected rubric score mapped to [-1, 1]; pairwise: 2 P(rollout "
                                 "better) - 1 against a reference response from the SFT policy, both orders (a "
                                 "judge backend that compares pairs: openai | transformers)")


class KTOSettings(_Section):
    """trl's KTO on unpaired human feedback (thumbs), optionally with the mixed pairs unpaired."""

    desirable_weight: float = Field(1.0, gt=0, le=100, description="loss weight of a thumbs-up (desirable) example")
    undesirable_weight: float = Field(1.0, gt=0, le=100, description="loss weight of a thumbs-down example")
    with_pairs: bool = Field(True, description="also train on the mixed train pairs (AI and human), each as a "
                                               "desirable chosen and an undesirable rejected example")


class PolicyTrainingConfig(_Section):
    algorithm: Literal["dpo", "kto", "ppo", "rloo", "grpo"] = Field(
        "dpo", description="dpo: offline on the mixed pairs; kto: offline on unpaired human feedback (and the "
                           "pairs unpaired); ppo | rloo | grpo: online RL against the trained reward model on "
                           "the train prompts")
    beta: float = Field(0.1, gt=0, description="DPO / KTO beta")
    dpo: DPOSettings = DPOSettings()
    reward: RewardWeights = Field(RewardWeights(reward_model=1.0), description=(
        "ppo | rloo | grpo: reward_model (default), judge, or weights {reward_model: 1.0, judge: 0.5}"))
    judge_reward: JudgeRewardSettings = Field(JudgeRewardSettings(), description="ppo | rloo | grpo with a judge "
                                              "weight in reward: pointwise or pairwise judge rewards")
    kto: KTOSettings = KTOSettings()
    train: TrainArgs = TrainArgs(epochs=2, learning_rate=5e-4, batch_size=16, max_length=160)
    ppo: PPOSettings = PPOSettings()
    rloo: RLOOSettings = RLOOSettings()
    grpo: GRPOSettings = GRPOSettings()
    # ---- GPU options (ppo/rloo/grpo; ignored on CPU where noted)
    bf16: bool | None = Field(None, description="None: bf16 on a CUDA GPU that supports it; always fp32 on CPU")
    gradient_checkpointing: bool = False
    lora: LoraSettings | None = Field(None, description="train LoRA adapters (peft) instead of every weight")
    device_map: str | None = Field(None, description="e.g. 'auto': spread one process's models over its GPUs "
                                                     "(single process only; unused on CPU)")

    def hash_view(self) -> dict:
        """The fields that change the trained policy (other algorithms' sections left out)."""
        skip = {"ppo", "rloo", "grpo", "kto"} - {self.algorithm}
        if self.algorithm not in ("dpo", "kto"):
            skip.add("beta")
        if self.algorithm != "dpo" or self.dpo == DPOSettings():
            skip.add("dpo")  # the default loss hashes as before the section existed (old runs stay valid)
        if self.algorithm in ("dpo", "kto") or self.reward == RewardWeights(reward_model=1.0):
            skip.add("reward")  # the default reward hashes as before the key existed (old runs stay valid)
        if "reward" in skip or not self.reward.uses_judge or self.judge_reward == JudgeRewardSettings():
            skip.add("judge_reward")  # likewise the default (pointwise) judge reward
        return self.model_dump(mode="json", exclude=skip)
