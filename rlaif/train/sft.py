"""SFT of the policy with trl's SFTTrainer (prompt/completion format)."""

from __future__ import annotations

from pathlib import Path

from rlaif.chat import conversational_dataset, with_system_all
from rlaif.config import PolicyConfig
from rlaif.errors import RlaifError
from rlaif.formats import policy_prompt
from rlaif.layout import RunLayout
from rlaif.records import load_sft
from rlaif.train.hf import kept_examples, load_tokenizer, train_and_save, trainer_kwargs


def base_rows(pcfg: PolicyConfig, system_prompt: str | None) -> list[dict]:
    """The rows of ``policy.sft_data`` (none without one), the system prompt added."""
    return with_system_all(load_sft(pcfg.sft_data), system_prompt) if pcfg.sft_data else []


INIT_STAMP = "rlaif_init.json"  # in a built initial tiny model: what it was built from


def initial_policy(pcfg: PolicyConfig, seed: int, rows: list[dict], extra_texts: list[str], work: Path) -> str:
    """The model SFT starts from: ``policy.model``, or for ``tiny`` an untrained tiny model whose tokenizer is
    trained on ``rows`` and ``extra_texts``, built in ``work/init`` (kept there for a resumed stage). The folder
    is reused only when it was built whole from these inputs: it is built beside and renamed into place, and
    stamped with its inputs (a kill mid-build left a folder with a config.json and no tokenizer, taken as
    built; a stage stopped and re-run with another tiny shape or SFT data started from the old model)."""
    if pcfg.model != "tiny":
        return pcfg.model
    import shutil

    from rlaif.hashing import content_hash
    from rlaif.train.tiny import EOS, build_tiny_model

    texts = [policy_prompt(r["prompt"]) + r["response"] + EOS for r in rows] + extra_texts
    key = content_hash([pcfg.tiny.model_dump(mode="json"), texts, seed])
    init_dir, tmp = work / "init", work / "init.tmp"
    stamp = init_dir / INIT_STAMP
    if not (stamp.is_file() and stamp.read_text() == key):
        shutil.rmtree(init_dir, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
        build_tiny_model(texts, pcfg.tiny, tmp, seed=seed)
        (tmp / INIT_STAMP).write_text(key)
        tmp.rename(init_dir)
    return str(init_dir)


def run_sft(pcfg: PolicyConfig, seed: int, layout: RunLayout, extra_texts: list[str], device: str,
            system_prompt: str | None = None, revisions: list[dict] = ()) -> dict:
    """Train the SFT policy into ``layout.sft`` on ``policy.sft_data`` plus ``revisions`` (the critique
    stage's rows, ``{"prompt", "response"}``); return metrics and log history.

    With ``policy.skip_sft`` the policy model is copied there as it is."""
    out_dir = layout.sft
    if pcfg.skip_sft:
        from rlaif.generate import load_policy

        model, tok = load_policy(pcfg.model, "cpu")
        model.save_pretrained(out_dir)
        tok.save_pretrained(out_dir)
        return {"skipped_sft": True}
    from trl import SFTConfig, SFTTrainer

    rows = base_rows(pcfg, system_prompt) + with_system_all(list(revisions), system_prompt)
    if not rows:
        raise RlaifError("sft: no SFT examples: set policy.sft_data, or let the critique stage revise some "
                         "answers (critique.enabled, critique.in_sft)")
    model_ref = initial_policy(pcfg, seed, rows, extra_texts, layout.partial(out_dir))

    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(model_ref)
    # fp32 weights (bf16 is autocast): a bf16 checkpoint trained as loaded loses small updates (rlaif/train/gpu.py)
    model = AutoModelForCausalLM.from_pretrained(model_ref, dtype=torch.float32)
    ds = conversational_dataset(tokenizer, rows, completion="response")  # the chat template's rendering
    targs = pcfg.sft
    args = SFTConfig(
        **trainer_kwargs(targs, layout.checkpoints(out_dir), seed, device, pcfg.gradient_checkpointing),
        max_length=targs.max_length,
        completion_only_loss=True,
        packing=False,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    dropped = kept_examples(trainer, len(rows), "sft", "examples", "policy.sft.max_length", targs.max_length)
    return {"examples": len(trainer.train_dataset), **dropped, "revision_examples": len(revisions),
            **train_and_save(trainer, tokenizer, out_dir, "sft")}
