"""Helpers shared by the training stages."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rlaif.config import TrainArgs

log = logging.getLogger(__name__)


def quiet_hf() -> None:
    """Silence library progress bars and info logs (rlaif shows its own progress)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    from datasets.utils.logging import disable_progress_bar

    import warnings

    warnings.filterwarnings("ignore", message=".*is deprecated and will be removed in v6.*", category=FutureWarning)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    disable_progress_bar()


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        from rlaif.errors import RlaifError

        raise RlaifError("device: 'cuda' asked for but no CUDA GPU is visible; use device: auto or cpu")
    return name


def trainer_kwargs(args: TrainArgs, output_dir: Path, seed: int, device: str) -> dict:
    """TrainingArguments fields every rlaif stage sets the same way."""
    import torch

    return dict(
        output_dir=str(output_dir),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        seed=seed,
        data_seed=seed,
        logging_steps=5,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=1,
        report_to="none",
        disable_tqdm=True,
        use_cpu=(device == "cpu"),
        bf16=(device == "cuda" and torch.cuda.is_bf16_supported()),
        dataloader_num_workers=0,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
    )


def last_checkpoint(output_dir: Path) -> str | None:
    """A complete checkpoint left by a killed run of the same stage, to resume from."""
    from rlaif.train.checkpoints import latest_complete

    return latest_complete(output_dir)


def log_history(trainer) -> list[dict]:
    return [dict(h) for h in trainer.state.log_history]


def finalize_dir(tmp: Path, final: Path) -> None:
    """Replace ``final`` with ``tmp`` so a stage's output appears whole or not at all."""
    import shutil

    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def train_and_save(trainer, tokenizer, work: Path, out_dir: Path, description: str) -> dict:
    """Train (resuming from a checkpoint in ``work`` if a killed run left one),
    save model + tokenizer so that ``out_dir`` appears whole or not at all, and
    return the log history with the first and final training loss."""
    import shutil

    from rlaif.progress import use_rich_progress

    use_rich_progress(trainer, description)
    trainer.train(resume_from_checkpoint=last_checkpoint(work / "checkpoints"))
    history = log_history(trainer)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):  # LoRA: write a plain model, adapters merged
        if trainer.accelerator.is_main_process:
            model.merge_and_unload().save_pretrained(str(work / "model"))
    else:
        trainer.save_model(str(work / "model"))
    tokenizer.save_pretrained(str(work / "model"))
    finalize_dir(work / "model", out_dir)
    shutil.rmtree(work, ignore_errors=True)
    losses = [h["loss"] for h in history if "loss" in h]
    return {"first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
            "history": history}
