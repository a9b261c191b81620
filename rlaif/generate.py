"""Candidate sampling from the policy (transformers ``generate``, batched, seeded)."""

from __future__ import annotations

from pathlib import Path

from rlaif.chat import encode_policy_inputs
from rlaif.hashing import content_hash


def load_policy(path: str | Path, device: str):
    from transformers import AutoModelForCausalLM

    from rlaif.train.hf import load_tokenizer

    tok = load_tokenizer(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(path)).to(device)
    model.eval()
    return model, tok


def sample(model, tok, prompts: list[str], n: int, max_new_tokens: int, temperature: float, top_p: float,
           seed: int, device: str) -> list[list[str]]:
    """``n`` sampled responses per prompt (one batched ``generate`` call; ``temperature`` 0: greedy).

    A prompt longer than the model's positions leave room for (with ``max_new_tokens``, itself capped to leave the
    prompt 8 positions) keeps its end, the generation prompt included: feeding it whole crashed generate() on a
    model with absolute positions (GPT-2: IndexError) and ran past the trained positions on the others."""
    import torch

    from rlaif.train.hf import generation_lengths, max_positions, stop_token_ids

    torch.manual_seed(seed)
    max_pos = max_positions(model.config)
    max_prompt, _ = generation_lengths(model.config, max_new_tokens, max_pos)
    enc = encode_policy_inputs(tok, prompts, return_tensors="pt", padding=True, truncation=True,
                               max_length=max_prompt).to(device)
    max_new = max(1, min(max_new_tokens, max_pos - enc["input_ids"].shape[1]))
    with torch.no_grad():
        out = model.generate(
            **enc, **({"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0
                      else {"do_sample": False}), max_new_tokens=max_new,
            num_return_sequences=n, pad_token_id=tok.pad_token_id, eos_token_id=stop_token_ids(model, tok),
        )
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return [[t.strip() for t in texts[i * n:(i + 1) * n]] for i in range(len(prompts))]


def batch_seed(seed: int, prompt_ids: list[str]) -> int:
    """Seed from the batch's own prompts, so a resumed run samples the same way."""
    return int(content_hash([seed, prompt_ids], 8), 16)


def generate_candidates(store, policy_dir: Path, policy_hash: str, gen_hash: str, gcfg, seed: int,
                        device: str) -> dict:
    """Sample ``gcfg.num_candidates`` per train prompt; skip prompts already done. Returns ``new_candidates`` (and,
    from a served policy, ``over_context``: rlaif/generate_openai.py)."""
    from rlaif.progress import task
    from rlaif.records import Candidate

    prompts = store.prompts("train")
    done = store.done_prompt_ids(gen_hash)
    todo = [p for p in prompts if p.id not in done]
    if not todo:
        return {"new_candidates": 0}
    if gcfg.backend == "openai":  # a served policy (rlaif/generate_openai.py)
        from rlaif.generate_openai import generate_served

        with task("generate", len(prompts)) as advance:
            advance(len(prompts) - len(todo))
            return generate_served(store, gen_hash, gcfg, seed, todo, advance)
    model, tok = load_policy(policy_dir, device)
    made = 0
    with task("generate", len(prompts)) as advance:
        advance(len(prompts) - len(todo))
        for i in range(0, len(todo), gcfg.batch_size):
            batch = todo[i:i + gcfg.batch_size]
            ids = [p.id for p in batch]
            outs = sample(model, tok, [p.text for p in batch], gcfg.num_candidates, gcfg.max_new_tokens,
                          gcfg.temperature, gcfg.top_p, batch_seed(seed, ids), device)
            cands = [
                Candidate(content_hash([gen_hash, p.id, k]), p.id, k, text, policy_hash)
                for p, texts in zip(batch, outs) for k, text in enumerate(texts)
            ]
            store.add_candidates(cands, gen_hash)  # committed: a kill loses at most this batch
            made += len(cands)
            advance(len(batch))
    return {"new_candidates": made}
