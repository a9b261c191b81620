"""SFT of the policy with trl's SFTTrainer (prompt/completion format)."""

from __future__ import annotations

from rlaif.chat import conversational_dataset, with_system_all
from rlaif.config import PolicyConfig
from rlaif.formats import policy_prompt
from rlaif.layout import RunLayout
from rlaif.records import load_sft
from rlaif.train.hf import load_tokenizer, train_and_save, trainer_kwargs


def run_sft(pcfg: PolicyConfig, seed: int, layout: RunLayout, extra_texts: list[str], device: str,
            system_prompt: str | None = None) -> dict:
    """Train the SFT policy into ``layout.sft``; return metrics and log history.

    With ``policy.skip_sft`` the policy model is copied there as it is."""
    out_dir = layout.sft
    if pcfg.skip_sft:
        from rlaif.generate import load_policy

        model, tok = load_policy(pcfg.model, "cpu")
        model.save_pretrained(out_dir)
        tok.save_pretrained(out_dir)
        return {"skipped_sft": True}
    from trl import SFTConfig, SFTTrainer

    rows = with_system_all(load_sft(pcfg.sft_data), system_prompt)  # validated earlier; cheap to re-read
    work = layout.partial(out_dir)
    if pcfg.model == "tiny":
        from rlaif.train.tiny import EOS, build_tiny_model

        init_dir = work / "init"
        if not (init_dir / "config.json").exists():
            texts = [policy_prompt(r["prompt"]) + r["response"] + EOS for r in rows] + extra_texts
            build_tiny_model(texts, pcfg.tiny, init_dir, seed=seed)
        model_ref = str(init_dir)
    else:
        model_ref = pcfg.model

    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(model_ref)
    model = AutoModelForCausalLM.from_pretrained(model_ref)
    ds = conversational_dataset(tokenizer, rows, completion="response")  # the chat template's rendering
    targs = pcfg.sft
    args = SFTConfig(
        **trainer_kwargs(targs, layout.checkpoints(out_dir), seed, device),
        max_length=targs.max_length,
        completion_only_loss=True,
        packing=False,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    return {"examples": len(rows), **train_and_save(trainer, tokenizer, out_dir, "sft")}
