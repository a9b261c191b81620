"""SFT of the policy with trl's SFTTrainer (prompt/completion format)."""

from __future__ import annotations

import logging
from pathlib import Path

from rlaif.config import PipelineConfig
from rlaif.formats import policy_prompt
from rlaif.progress import use_rich_progress
from rlaif.records import load_sft
from rlaif.train.common import finalize_dir, last_checkpoint, log_history, trainer_kwargs

log = logging.getLogger(__name__)


def run_sft(cfg: PipelineConfig, out_dir: Path, extra_texts: list[str], device: str) -> dict:
    """Train the SFT policy into ``out_dir``; return metrics and log history."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = load_sft(cfg.policy.sft_data)  # validated earlier; cheap to re-read
    work = out_dir.with_name(out_dir.name + ".partial")
    if cfg.policy.model == "tiny":
        from rlaif.train.tiny import EOS, build_tiny_model

        init_dir = work / "init"
        if not (init_dir / "config.json").exists():
            texts = [policy_prompt(r["prompt"]) + r["response"] + EOS for r in rows] + extra_texts
            build_tiny_model(texts, cfg.policy.tiny, init_dir, seed=cfg.seed)
        model_ref = str(init_dir)
    else:
        model_ref = cfg.policy.model

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_ref)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_ref)
    ds = Dataset.from_list([{"prompt": policy_prompt(r["prompt"]), "completion": r["response"]} for r in rows])
    targs = cfg.policy.sft
    args = SFTConfig(
        **trainer_kwargs(targs, work / "checkpoints", cfg.seed, device),
        max_length=targs.max_length,
        completion_only_loss=True,
        packing=False,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    use_rich_progress(trainer, "sft")
    trainer.train(resume_from_checkpoint=last_checkpoint(work / "checkpoints"))
    final_tmp = work / "model"
    trainer.save_model(str(final_tmp))
    tokenizer.save_pretrained(final_tmp)
    history = log_history(trainer)
    import shutil

    shutil.rmtree(work / "checkpoints", ignore_errors=True)
    finalize_dir(final_tmp, out_dir)
    shutil.rmtree(work, ignore_errors=True)
    losses = [h["loss"] for h in history if "loss" in h]
    return {"examples": len(rows), "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None, "history": history}
