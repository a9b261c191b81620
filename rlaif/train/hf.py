"""Hugging Face plumbing shared by rlaif's trainers and samplers: quiet logging, tokenizers,
position limits, TrainingArguments, training with resume, and saving (LoRA merged)."""

from __future__ import annotations

import os
from pathlib import Path

from rlaif.config import TrainArgs
from rlaif.layout import checkpoints_dir, finalize_dir, partial_dir


def quiet_hf() -> None:
    """Silence library progress bars and info logs (rlaif shows its own progress)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import warnings

    import transformers
    from datasets.utils.logging import disable_progress_bar

    warnings.filterwarnings("ignore", message=".*is deprecated and will be removed in v6.*", category=FutureWarning)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    disable_progress_bar()


# ------------------------------------------------------------------ tokenizers and models
def load_tokenizer(path: str | Path, padding_side: str | None = None):
    """``AutoTokenizer`` with a pad token (the EOS token when the model has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if padding_side is not None:
        tok.padding_side = padding_side
    return tok


def stop_token_ids(model, tok) -> list[int]:
    """The ids that end a sampled response: the tokenizer's EOS and every EOS of the model's generation config
    (Qwen2.5: <|im_end|> and <|endoftext|>; Llama-3: <|eot_id|> and <|end_of_text|>), the set trl's GRPO/RLOO stop
    at. Passing the tokenizer's EOS alone to ``generate`` replaced the generation config's list."""
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [tok.eos_token_id] + ([gen] if isinstance(gen, int) else list(gen or []))
    return list(dict.fromkeys(i for i in ids if i is not None))


def position_ids_from_mask(attention_mask):
    """Position ids of a left-padded batch: each row counts from 0 at its first real token, so it is read as if
    unpadded (as generate() does); a model with absolute positions (GPT-2) otherwise shifts with the padding."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def max_positions(model_config) -> int:
    """The longest sequence the model takes (GPT-2's ``n_positions``, else ``max_position_embeddings``)."""
    return getattr(model_config, "n_positions", None) or getattr(model_config, "max_position_embeddings", 4096)


def generation_lengths(model_config, max_new_tokens: int, max_length: int) -> tuple[int, int]:
    """(prompt tokens, new tokens) that fit the model: new tokens leave 8 positions for the prompt,
    the prompt gets what ``max_length`` (capped by the model) leaves."""
    max_pos = max_positions(model_config)
    max_new = max(1, min(max_new_tokens, max_pos - 8))
    return max(8, min(max_length, max_pos) - max_new), max_new


def merged(model):
    """A plain model: LoRA adapters (peft) merged into the weights; any other model unchanged."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def save_trained(trainer, path: Path) -> None:
    """Write a trainer's model to ``path`` as a plain model: LoRA merged by the main process, else
    ``trainer.save_model`` (which gathers ZeRO-3/FSDP shards and writes on the main process)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        if trainer.accelerator.is_main_process:
            merged(model).save_pretrained(str(path))
    else:
        trainer.save_model(str(path))


# ------------------------------------------------------------------ trainers
def trainer_kwargs(args: TrainArgs, output_dir: Path, seed: int, device: str,
                   gradient_checkpointing: bool = False) -> dict:
    """TrainingArguments fields every rlaif stage sets the same way. ``gradient_checkpointing`` is set on every
    trainer, since trl's configs default it to on (a third more compute, for memory a small model does not need)."""
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
        gradient_checkpointing=gradient_checkpointing,
    )


def kept_examples(trainer, given: int, stage: str, what: str, field: str, max_length: int) -> dict:
    """trl's trainers drop an example whose prompt alone fills ``max_length`` (nothing of its response would be
    trained): {"dropped_too_long": count}; none left is an error naming ``field`` (else the stage would "train" on
    nothing and save its starting model as the result)."""
    kept = len(trainer.train_dataset)
    if not kept:
        from rlaif.errors import RlaifError

        raise RlaifError(f"{stage}: every one of the {given} {what} has a prompt of {max_length} tokens or more "
                         f"(its chat-template rendering), so none would train; raise {field}")
    return {"dropped_too_long": given - kept}


def last_checkpoint(output_dir: Path) -> str | None:
    """A complete checkpoint left by a killed run of the same stage, to resume from."""
    from rlaif.train.checkpoints import latest_complete

    return latest_complete(output_dir)


def train_and_save(trainer, tokenizer, out_dir: Path, description: str) -> dict:
    """Train (resuming from a checkpoint in ``out_dir``'s work folder if a killed run left one),
    save model + tokenizer so that ``out_dir`` appears whole or not at all, and return the log
    history with the first and final training loss."""
    import shutil

    from rlaif.progress import use_rich_progress

    work = partial_dir(out_dir)
    use_rich_progress(trainer, description)
    trainer.train(resume_from_checkpoint=last_checkpoint(checkpoints_dir(out_dir)))
    history = [dict(h) for h in trainer.state.log_history]
    save_trained(trainer, work / "model")
    tokenizer.save_pretrained(str(work / "model"))
    finalize_dir(work / "model", out_dir)
    shutil.rmtree(work, ignore_errors=True)
    losses = [h["loss"] for h in history if "loss" in h]
    return {"first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
            "history": history}
