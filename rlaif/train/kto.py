"""KTO of the SFT policy on unpaired human feedback (trl's KTOTrainer).

The examples are the mix's ``unpaired`` split (every thumbs verdict: up = desirable, down = undesirable)
and, with ``policy_training.kto.with_pairs``, the mixed train pairs unpaired (chosen desirable, rejected
undesirable; pairs made from thumbs are left out, their verdicts are already there). The same
(prompt, completion, label) is used once. ``desirable_weight`` / ``undesirable_weight`` go to trl's
KTOConfig (they counter an imbalance of ups and downs).
"""

from __future__ import annotations

import json
import os

from rlaif.chat import completion_row
from rlaif.config import PolicyTrainingConfig
from rlaif.errors import RlaifError
from rlaif.hashing import content_hash
from rlaif.layout import RunLayout
from rlaif.train.hf import kept_examples, load_tokenizer, train_and_save, trainer_kwargs
from rlaif.vocab import THUMBS


def kto_examples(dd, with_pairs: bool, seed: int) -> tuple[list[dict], dict]:
    """({prompt, completion, label} rows in a stable shuffled order, counts) from the mix's DatasetDict."""
    rows, seen = [], set()
    counts = {"from_feedback": 0, "from_pairs": 0}

    def add(prompt: str, completion: str, label: bool, origin: str) -> None:
        key = (prompt.strip(), completion.strip(), label)
        if key not in seen:
            seen.add(key)
            rows.append({"prompt": prompt, "completion": completion, "label": label})
            counts[origin] += 1

    if "unpaired" in dd:
        for r in dd["unpaired"]:
            add(r["prompt"], r["completion"], bool(r["label"]), "from_feedback")
    if with_pairs:
        for r in dd["train"]:
            if json.loads(r.get("meta") or "{}").get("feedback") == THUMBS:
                continue  # its two thumbs are in the unpaired split already
            add(r["prompt"], r["chosen"], True, "from_pairs")
            add(r["prompt"], r["rejected"], False, "from_pairs")
    # KTO estimates its KL term within each (sequential) batch: mix ups and downs, the same way every run.
    rows.sort(key=lambda r: content_hash([seed, r["prompt"], r["completion"], r["label"]]))
    counts.update(desirable=sum(r["label"] for r in rows), undesirable=sum(not r["label"] for r in rows))
    return rows, counts


def train_kto(pcfg: PolicyTrainingConfig, seed: int, layout: RunLayout, device: str, ref_dir=None) -> dict:
    """KTO from ``layout.sft`` on the examples of ``kto_examples``; the policy goes to ``layout.policy``.
    The reference is ``layout.sft`` itself, or ``ref_dir`` when given."""
    from datasets import Dataset, load_from_disk
    from transformers import AutoModelForCausalLM
    from trl import KTOConfig, KTOTrainer

    from rlaif.train.gpu import lora_config, model_load_kwargs, resolve_bf16

    rows, counts = kto_examples(load_from_disk(str(layout.pairs)), pcfg.kto.with_pairs, seed)
    if not rows:
        raise RlaifError("policy_training.algorithm: kto found no examples: add thumbs feedback "
                         "({prompt, completion, label: true|false}) to mix.human_labels, or set "
                         "policy_training.kto.with_pairs: true")
    tokenizer = load_tokenizer(layout.sft)
    bf16 = resolve_bf16(pcfg, device)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    model = AutoModelForCausalLM.from_pretrained(str(layout.sft), **model_load_kwargs(pcfg, device, bf16, distributed))
    train = Dataset.from_list([completion_row(tokenizer, r["prompt"], completion=r["completion"]) | {"label": r["label"]}
                               for r in rows])
    kw = trainer_kwargs(pcfg.train, layout.checkpoints(layout.policy), seed, device, pcfg.gradient_checkpointing)
    kw.update(bf16=bf16)  # KTOConfig's defaults differ
    args = KTOConfig(**kw, beta=pcfg.beta, max_length=pcfg.train.max_length,
                     desirable_weight=pcfg.kto.desirable_weight, undesirable_weight=pcfg.kto.undesirable_weight)
    ref = None if ref_dir is None else AutoModelForCausalLM.from_pretrained(
        str(ref_dir), **model_load_kwargs(pcfg, device, bf16, distributed, trainable=False))
    trainer = KTOTrainer(model=model, ref_model=ref, args=args, train_dataset=train, processing_class=tokenizer,
                         peft_config=lora_config(pcfg.lora) if pcfg.lora is not None else None)
    dropped = kept_examples(trainer, len(train), "train-policy (kto)", "examples", "policy_training.train.max_length",
                            pcfg.train.max_length)
    return {"algorithm": "kto", "examples": len(trainer.train_dataset), **dropped, **counts,
            "desirable_weight": pcfg.kto.desirable_weight, "undesirable_weight": pcfg.kto.undesirable_weight,
            **train_and_save(trainer, tokenizer, layout.policy, "train-policy (kto)")}
