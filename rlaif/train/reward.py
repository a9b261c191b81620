"""Reward model: trl's RewardTrainer on the mixed pairs, plus a scorer.

Two things are done by hand, each because trl does not do it:
- pairs are tokenized here with truncation (trl's own preprocessing drops
  pairs longer than ``max_length`` instead of truncating them), through the
  same ``encode`` the scorer uses, so training and scoring see one format; the start of a long text is
  cut (``rlaif.chat.rm_ids``), so the response stays;
- the loss is weighted per pair (``weight`` column: the mix's human weight);
  RewardTrainer has no per-example weights.
The ``margin`` column (pairs made from ratings, rankings and thumbs: rlaif/feedback.py) goes to trl as
is: RewardTrainer's loss is -log sigmoid(r_chosen - r_rejected - margin), and the weighted loss keeps it.
"""

from __future__ import annotations

from pathlib import Path

from rlaif.chat import rm_ids
from rlaif.config import RewardModelConfig
from rlaif.layout import RunLayout
from rlaif.train.hf import load_tokenizer, train_and_save, trainer_kwargs


def resolve_base(base: str) -> str:
    if base == "minilm":
        from rlaif.judges.embedding import resolve_encoder_path

        return resolve_encoder_path("minilm")
    return base


def encode(tokenizer, prompt: str, response: str, max_length: int) -> list[int]:
    return rm_ids(tokenizer, prompt, response, max_length)  # chat template for a causal-LM base


def _weighted_trainer_cls():
    import torch
    from trl import RewardTrainer

    class WeightedRewardTrainer(RewardTrainer):
        def _set_signature_columns_if_needed(self):
            if self._signature_columns is None:
                self._signature_columns = ["chosen_ids", "rejected_ids", "margin", "weight"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weight = inputs.pop("weight", None)
            if weight is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # Same loss as RewardTrainer, weighted per pair; its metrics come from the parent call.
            loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
            chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
            margin = inputs.get("margin")
            per_pair = -torch.nn.functional.logsigmoid(chosen - rejected - (0 if margin is None else margin))
            w = weight.to(per_pair.dtype)
            loss = (per_pair * w).sum() / w.sum()
            return (loss, outputs) if return_outputs else loss

    return WeightedRewardTrainer


class _WeightCollator:
    def __init__(self, base):
        self.base = base

    def __call__(self, examples):
        import torch

        weights = [e.get("weight", 1.0) for e in examples]
        out = self.base([{k: v for k, v in e.items() if k != "weight"} for e in examples])
        out["weight"] = torch.tensor(weights, dtype=torch.float)
        return out


def train_reward_model(rcfg: RewardModelConfig, seed: int, layout: RunLayout, device: str) -> dict:
    """Train on the pairs in ``layout.pairs``; the reward model goes to ``layout.reward_model``."""
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig
    from trl.trainer.reward_trainer import DataCollatorForPreference

    targs = rcfg.train
    base = resolve_base(rcfg.base)
    tokenizer = load_tokenizer(base)
    # fp32 weights (bf16 is autocast): a bf16 checkpoint trained as loaded loses small updates (rlaif/train/gpu.py)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    dd = load_from_disk(str(layout.pairs))

    def tok(split):
        return dd[split].map(
            lambda ex: {"chosen_ids": encode(tokenizer, ex["prompt"], ex["chosen"], targs.max_length),
                        "rejected_ids": encode(tokenizer, ex["prompt"], ex["rejected"], targs.max_length)},
            remove_columns=[c for c in dd[split].column_names if c not in ("weight", "margin")],
        )

    train_ds = tok("train")
    eval_ds = tok("eval") if len(dd["eval"]) else None
    out_dir = layout.reward_model
    args = RewardConfig(**trainer_kwargs(targs, layout.checkpoints(out_dir), seed, device, rcfg.gradient_checkpointing),
                        max_length=None,
                        remove_unused_columns=True)
    trainer = _weighted_trainer_cls()(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                      processing_class=tokenizer)
    trainer.data_collator = _WeightCollator(DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id))
    return {"train_pairs": len(train_ds), **train_and_save(trainer, tokenizer, out_dir, "train-rm")}


class RewardScorer:
    """Scores (prompt, response) with a trained reward model, batched."""

    def __init__(self, path: str | Path, device: str = "cpu", max_length: int = 256, batch_size: int = 32):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModelForSequenceClassification.from_pretrained(str(path)).to(device).eval()
        self.device, self.max_length, self.batch_size = device, max_length, batch_size

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        import torch

        from rlaif.batching import length_batches

        ids = [encode(self.tokenizer, p, r, self.max_length) for p, r in zip(prompts, responses)]
        out = [0.0] * len(ids)
        for idx in length_batches([len(x) for x in ids], self.batch_size):  # little padding per batch
            batch = self.tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt").to(self.device)
            with torch.no_grad():
                for i, v in zip(idx, self.model(**batch).logits.squeeze(-1).float().tolist()):
                    out[i] = v
        return out

    def accuracy(self, prompts: list[str], chosen: list[str], rejected: list[str]) -> float | None:
        if not prompts:
            return None
        sc, sr = self.score(prompts, chosen), self.score(prompts, rejected)
        return sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(sc, sr)) / len(prompts)
