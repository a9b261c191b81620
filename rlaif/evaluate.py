"""Evaluation: judge-human agreement, reward-model accuracy, policy reward/KL/win-rate."""

from __future__ import annotations

import math
from pathlib import Path

from rlaif.chat import prompt_response_ids


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's kappa of two label lists over the same items."""
    n = len(a)
    if n == 0:
        return None
    labels = sorted(set(a) | set(b))
    po = sum(x == y for x, y in zip(a, b)) / n
    pe = sum((a.count(lab) / n) * (b.count(lab) / n) for lab in labels)
    return 1.0 if pe == 1 else (po - pe) / (1 - pe)


def agreement(human: list[str], judge: list[str]) -> dict:
    """Accuracy on items where the human label is not a tie, kappa, n.

    A judge label of None (unscored) counts against accuracy and is reported
    as ``unscored``; kappa is computed over the scored items.
    """
    pairs = [(h, j) for h, j in zip(human, judge) if h in ("A", "B")]
    n = len(pairs)
    acc = sum(h == j for h, j in pairs) / n if n else None
    scored = [(h, j) for h, j in pairs if j is not None]
    kappa = cohen_kappa([h for h, _ in scored], [j for _, j in scored])
    return {"accuracy": acc, "kappa": kappa, "n": n, "judge_ties": sum(j == "tie" for _, j in pairs),
            "judge_unscored": sum(j is None for _, j in pairs)}


def wilson(successes: float, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """95% Wilson score interval of ``successes`` in ``n`` trials (None when n == 0); ``successes`` may be
    fractional (a judge win rate counts ties as half)."""
    if n <= 0:
        return None
    p = successes / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def sequence_logprobs(model, tok, prompts: list[str], responses: list[str], device: str,
                      batch_size: int = 16) -> list[float]:
    """Sum of log p(response tokens | prompt) under ``model``."""
    import torch

    from rlaif.train.hf import max_positions

    out = []
    for i in range(0, len(prompts), batch_size):
        ps, rs = prompts[i:i + batch_size], responses[i:i + batch_size]
        seqs, starts = [], []
        for p, r in zip(ps, rs):
            pids, rids = prompt_response_ids(tok, p, r)  # the chat template's rendering, end of turn included
            seqs.append(pids + rids)
            starts.append(len(pids))
        # A sequence over the model's positions keeps its END (the response), as sampling keeps a prompt's end.
        max_pos = max_positions(model.config)
        starts = [max(1, st - max(0, len(s) - max_pos)) for s, st in zip(seqs, starts)]
        seqs = [s[-max_pos:] for s in seqs]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, s in enumerate(seqs):
            ids[j, :len(s)] = torch.tensor(s)
            mask[j, :len(s)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
        for j, s in enumerate(seqs):
            out.append(float(logp[j, starts[j] - 1:len(s) - 1].sum()))
    return out


def evaluate_policy(ref_dir: Path, policy_dir: Path, scorer, prompts: list[str], ecfg, seed: int,
                    device: str) -> dict:
    """Sample one response per held-out prompt from ref and policy; score with the RM."""
    from rlaif.generate import load_policy, sample

    ref_model, tok = load_policy(ref_dir, device)
    pol_model, _ = load_policy(policy_dir, device)
    ref_out = [s[0] for s in sample(ref_model, tok, prompts, 1, ecfg.max_new_tokens, ecfg.temperature, 1.0, seed, device)]
    pol_out = [s[0] for s in sample(pol_model, tok, prompts, 1, ecfg.max_new_tokens, ecfg.temperature, 1.0, seed, device)]
    r_ref = scorer.score(prompts, ref_out)
    r_pol = scorer.score(prompts, pol_out)
    tok.padding_side = "right"
    lp_pol = sequence_logprobs(pol_model, tok, prompts, pol_out, device)
    lp_ref = sequence_logprobs(ref_model, tok, prompts, pol_out, device)
    kl = sum(a - b for a, b in zip(lp_pol, lp_ref)) / len(prompts)
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(r_pol, r_ref)) / len(prompts)
    return {
        "reward_before": sum(r_ref) / len(r_ref), "reward_after": sum(r_pol) / len(r_pol),
        "kl": kl, "win_rate_vs_ref": wins, "n_prompts": len(prompts),
        "rewards_before": r_ref, "rewards_after": r_pol,
        "samples": [{"prompt": p, "before": a, "after": b, "reward_before": x, "reward_after": y}
                    for p, a, b, x, y in zip(prompts, ref_out, pol_out, r_ref, r_pol)],
    }
