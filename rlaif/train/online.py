"""RLOO and GRPO through trl's trainers, rewarded by the trained reward model and/or the judge.

trl's ``RLOOTrainer`` / ``GRPOTrainer`` sample ``num_generations`` completions per prompt, call
every reward function as ``fn(prompts=..., completions=..., completion_ids=..., **dataset_columns,
trainer_state=..., log_extra=..., log_metric=...)`` and compute group-relative advantages (RLOO:
leave-one-out baseline, KL folded into the reward; GRPO: group-normalised reward, KL as a loss
term). rlaif's part: the prompt format (the chat template, ``rlaif.chat``), a reward callable that scores the raw
prompt and the completion (``RewardScorer`` in the pipeline) (minus an optional missing-EOS penalty), the
config mapping, resuming, LoRA merging, and a history whose keys match PPO's
(``reward``, ``kl_per_token``, ``entropy``, ``clipfrac``, ``loss``, ``response_length``).
"""

from __future__ import annotations

import os
import shutil
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rlaif.chat import policy_text_for_adding_tokenizer
from rlaif.errors import RlaifError
from rlaif.layout import checkpoints_dir, finalize_dir, partial_dir

if TYPE_CHECKING:  # pragma: no cover
    from rlaif.config import PolicyTrainingConfig
    from rlaif.layout import RunLayout

# trl log key -> rlaif history key (the same names as PPO's history where the quantity is the same)
HISTORY_KEYS = {"reward": "reward", "reward_std": "reward_std", "kl": "kl_per_token", "entropy": "entropy",
                "clip_ratio/region_mean": "clipfrac", "loss": "loss", "completions/mean_length": "response_length",
                "completions/clipped_ratio": "no_eos_fraction", "learning_rate": "learning_rate", "step": "step",
                "grad_norm": "grad_norm", "rewards/reward_model/mean": "rm_reward",
                "rewards/judge/mean": "judge_reward", "judge/calls": "judge_calls",
                "judge/cache_hits": "judge_cache_hits", "judge/unscored": "judge_unscored"}


def local_device(device: str) -> str:
    """This process's device: ``cuda:LOCAL_RANK`` under a multi-GPU launch."""
    if device == "cuda":
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return device


class ScoreReward:
    """A trl reward function from ``score(prompts, responses) -> scores`` (e.g. ``RewardScorer.score``).

    ``raw_prompt`` is a dataset column (trl passes every extra column as a keyword argument);
    ``missing_eos_penalty`` is subtracted when a completion does not end in EOS.
    """

    __name__ = "reward_model"

    def __init__(self, score: Callable[[list[str], list[str]], list[float]], eos_token_id: int | list[int] | None = None,
                 missing_eos_penalty: float | None = None):
        self.score, self.eos_token_id, self.missing_eos_penalty = score, eos_token_id, missing_eos_penalty

    def __call__(self, prompts, completions, completion_ids=None, raw_prompt=None, **_):
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        scores = [float(s) for s in self.score(list(raw_prompt or prompts), [t.strip() for t in texts])]
        if self.missing_eos_penalty is not None and completion_ids is not None:
            from rlaif.train.rewards import ends_in_eos

            scores = [s - (0.0 if ends_in_eos(ids, self.eos_token_id) else self.missing_eos_penalty)
                      for s, ids in zip(scores, completion_ids)]
        return scores


def _fit_prompt(tok, text: str, max_tokens: int) -> str:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= max_tokens else tok.decode(ids[-max_tokens:])


def history_of(log_history: list[dict]) -> list[dict]:
    out = []
    for h in log_history:
        row = {HISTORY_KEYS[k]: v for k, v in h.items() if k in HISTORY_KEYS and v is not None}
        if len(row) > 1:
            out.append(row)
    return out


def run_online(algorithm: str, policy_dir: str | Path, reward_fn: Callable[[list[str], list[str]], list[float]] | None,
               prompts: list[str], pcfg: PolicyTrainingConfig, out_dir: str | Path, seed: int = 0,
               device: str = "cpu", progress: str | None = None, judge=None, ref_dir: str | Path | None = None) -> dict:
    """Train ``policy_dir`` with trl's RLOO or GRPO on ``prompts`` (raw), rewarded as
    ``pcfg.reward`` says by ``reward_fn(raw_prompts, responses) -> scores`` (the reward model)
    and/or ``judge`` (a ``JudgeReward``, rlaif/train/rewards.py); write the policy to ``out_dir``
    (LoRA merged). The KL reference is ``policy_dir`` itself, or ``ref_dir`` when given (not with
    LoRA: the config check refuses it). Resumes from a killed run's checkpoint."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from rlaif.progress import use_rich_progress
    from rlaif.train.gpu import lora_config, model_load_kwargs, resolve_bf16
    from rlaif.train.hf import generation_lengths, last_checkpoint, load_tokenizer, save_trained, stop_token_ids, trainer_kwargs

    if algorithm not in ("rloo", "grpo"):
        raise ValueError(algorithm)
    if not prompts:
        raise RlaifError(f"{algorithm} needs training prompts; data.prompts has none in the train split")
    s = pcfg.rloo if algorithm == "rloo" else pcfg.grpo
    targs = pcfg.train
    world = int(os.environ.get("WORLD_SIZE", "1"))
    global_batch = targs.batch_size * world * targs.gradient_accumulation_steps
    if global_batch % s.num_generations:
        raise RlaifError(f"policy_training.train.batch_size ({targs.batch_size}) x processes ({world}) x "
                         f"gradient_accumulation_steps ({targs.gradient_accumulation_steps}) = {global_batch} "
                         f"completions per step must be a multiple of {algorithm}.num_generations "
                         f"({s.num_generations})")
    tok = load_tokenizer(policy_dir, padding_side="left")
    bf16 = resolve_bf16(pcfg, device)
    model = AutoModelForCausalLM.from_pretrained(str(policy_dir), **model_load_kwargs(pcfg, device, bf16, world > 1))
    max_prompt, max_new = generation_lengths(model.config, s.max_new_tokens, targs.max_length)
    texts = [policy_text_for_adding_tokenizer(tok, p) for p in prompts]  # trl adds special tokens itself
    ds = Dataset.from_dict({"prompt": [_fit_prompt(tok, t, max_prompt) for t in texts],
                            "raw_prompt": list(prompts)})
    out_dir = Path(out_dir)
    work = partial_dir(out_dir)
    kw = trainer_kwargs(targs, checkpoints_dir(out_dir), seed, device, pcfg.gradient_checkpointing)
    kw.update(logging_steps=1, bf16=bf16,
              num_generations=s.num_generations, max_completion_length=max_new, temperature=s.temperature,
              top_p=1.0, top_k=0, beta=s.kl_coef, num_iterations=s.num_iterations, epsilon=s.cliprange,
              disable_dropout=True, remove_unused_columns=False, log_completions=False)
    if s.steps:
        kw["max_steps"] = s.steps
    if algorithm == "rloo":
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer

        kw["normalize_advantages"] = s.normalize_advantages
    else:
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer

        kw.update(loss_type=s.loss_type, scale_rewards=s.scale_rewards)
    from rlaif.train.rewards import trl_reward_funcs

    # trl stops a completion at the tokenizer's EOS or any of the generation config's (the same set)
    funcs, weights = trl_reward_funcs(pcfg.reward, reward_fn, judge, stop_token_ids(model, tok), s.missing_eos_penalty)
    if weights is not None:
        kw["reward_weights"] = weights
    args = Config(**kw)
    if ref_dir is not None:
        if pcfg.lora is not None:  # trl's reference under LoRA is the base with adapters off, never another model
            raise RlaifError(f"{algorithm} with policy_training.lora takes its own initial policy as the reference; "
                             "unset lora or set iteration.reference: previous")
        # trl builds the reference from the policy's config name (trl.trainer.utils.get_config_model_id) under
        # every launcher (DDP, ZeRO-3): point it at ref_dir while the trainer is built, then back.
        name = model.config._name_or_path
        model.config._name_or_path = str(ref_dir)
    trainer = Trainer(model=model, reward_funcs=funcs if len(funcs) > 1 else funcs[0], args=args, train_dataset=ds,
                      processing_class=tok, peft_config=lora_config(pcfg.lora) if pcfg.lora is not None else None)
    if ref_dir is not None:
        model.config._name_or_path = name
    if progress:
        use_rich_progress(trainer, progress)
    else:
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
    resume = last_checkpoint(checkpoints_dir(out_dir))
    if judge is not None:  # the judge reward's running mean is checkpointed with the trainer
        from rlaif.train.rewards import judge_state_callback, regenerated_on_resume, restore_judge_state

        held = weakref.ref(trainer)  # not a reference cycle: the trainer is dropped (del) before the next stage
        trainer.add_callback(judge_state_callback(judge, trainer.accelerator, lambda: regenerated_on_resume(held())))
        if resume is not None:
            restore_judge_state(judge, resume, trainer.accelerator.process_index, trainer.accelerator.num_processes)
    trainer.train(resume_from_checkpoint=resume)
    history = history_of(trainer.state.log_history)
    acc = trainer.accelerator
    acc.wait_for_everyone()
    save_trained(trainer, work / "model")
    if acc.is_main_process:
        tok.padding_side = "right"
        tok.save_pretrained(str(work / "model"))
        finalize_dir(work / "model", out_dir)
        shutil.rmtree(work, ignore_errors=True)
    acc.wait_for_everyone()
    rewards = [h["reward"] for h in history if "reward" in h]
    del model, trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"algorithm": algorithm, "train_prompts": len(prompts), "steps": history[-1]["step"] if history else 0,
            "reward_first": rewards[0] if rewards else None, "reward_last": rewards[-1] if rewards else None,
            "history": history}


def train_online(pcfg: PolicyTrainingConfig, seed: int, layout: RunLayout, prompts: list[str],
                 rm_max_length: int, device: str, judge=None, ref_dir=None) -> dict:
    """The pipeline's RLOO/GRPO: policy from ``layout.sft`` (reference: itself, or ``ref_dir``), rewarded
    by the trained reward model in
    ``layout.reward_model`` (scoring ``rm_max_length`` tokens) and/or the judge reward ``judge``
    (``policy_training.reward``), written to ``layout.policy``."""
    algorithm = pcfg.algorithm
    score = None
    if pcfg.reward.uses_reward_model:
        from rlaif.train.reward import RewardScorer

        score = RewardScorer(layout.reward_model, local_device(device), rm_max_length).score
    return run_online(algorithm, layout.sft, score, prompts, pcfg, layout.policy, seed, device,
                      progress=f"train-policy ({algorithm})", judge=judge, ref_dir=ref_dir)
