"""`transformers` backend: a local causal LM (path or hub id), batched.

Single-token verdicts are read from the next-token logits of one forward
pass over a left-padded batch (no sampling): the log-probabilities of the
offered tokens (each option's first token, with and without a leading
space) plus the top-k tokens. Rationales (chain of thought) are generated
greedily. bf16 and device placement when a GPU is present. A prompt over
``judge.max_length`` tokens is an error (unscored), never cut.
"""

from __future__ import annotations

from typing import Any

from rlaif.chat import encode_rendered, has_template, render_messages
from rlaif.hashing import content_hash
from rlaif.judges.llm import Call, Completer, Completion


def render_chat(tokenizer, messages: list[dict]) -> str:
    """The model's chat template when it has one; a plain transcript otherwise."""
    if has_template(tokenizer):
        return render_messages(tokenizer, messages, add_generation_prompt=True)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant:"


class TransformersCompleter(Completer):
    backend = "transformers"

    def __init__(self, cfg, device: str = "cpu"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rlaif.errors import RlaifError

        self.cfg, self.model = cfg, cfg.model
        try:
            self.tok = AutoTokenizer.from_pretrained(cfg.model)
            dtype = torch.bfloat16 if device == "cuda" and cfg.dtype in ("auto", "bf16") else torch.float32
            kw: dict[str, Any] = {"dtype": dtype}
            if cfg.device_map:
                kw["device_map"] = cfg.device_map
            self.lm = AutoModelForCausalLM.from_pretrained(cfg.model, **kw)
        except OSError as e:
            raise RlaifError(f"judge.model: cannot load {cfg.model!r} as a local causal LM ({str(e)[:200]})") from None
        if not cfg.device_map:
            self.lm.to(device)
        self.lm.eval()
        self.device = next(self.lm.parameters()).device
        # Learned absolute positions (GPT-2's n_positions) end in an IndexError past them; rotary models run on
        # (a long-context model's max_position_embeddings understates what its rope scaling takes).
        self.positions = getattr(self.lm.config, "n_positions", None)
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.tok.padding_side = "left"
        self.prompt_tokens = self.completion_tokens = 0
        self._option_cache: dict[tuple[str, ...], dict[str, list[int]]] = {}

    def usage(self) -> dict[str, Any]:
        return {"retries": 0, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost_usd": 0.0, "failed_calls": 0}

    def _option_ids(self, options: tuple[str, ...]) -> dict[str, list[int]]:
        if options in self._option_cache:
            return self._option_cache[options]
        out = {}
        for o in options:
            ids = set()
            for variant in (o, " " + o):
                toks = self.tok(variant, add_special_tokens=False)["input_ids"]
                if toks:
                    ids.add(toks[0])
            out[o] = sorted(ids)
        self._option_cache[options] = out
        return out

    def run(self, calls: list[Call]) -> list[Completion]:
        out: list[Completion | None] = [None] * len(calls)
        ids = [encode_rendered(self.tok, render_chat(self.tok, c.messages))["input_ids"] for c in calls]
        limit = self.cfg.max_length
        for i, (x, c) in enumerate(zip(ids, calls)):
            # Not cut: the question and the assistant header are at the end, and a verdict read after a piece of
            # response B is noise. An error is an unscored record (raw kept, not cached: a rerun retries it).
            if len(x) > limit:
                out[i] = Completion(error=f"the judge prompt is {len(x)} tokens, over judge.max_length ({limit}); "
                                          "raise judge.max_length (up to the judge model's context)", final=True)
            elif self.positions and len(x) + c.max_tokens > self.positions:  # past them: an IndexError
                out[i] = Completion(error=f"the judge prompt is {len(x)} tokens and {c.max_tokens} more are asked "
                                          f"for: over the judge model's {self.positions} positions; use a model with "
                                          "a longer context", final=True)
        bs = self.cfg.batch_size
        single = [i for i, c in enumerate(calls) if c.max_tokens == 1 and out[i] is None]
        # Generated text, batched among calls that sample alike (greedy judge calls; a critique's sampled calls).
        multi: dict[tuple | None, list[int]] = {}
        for i, c in enumerate(calls):
            if c.max_tokens > 1 and out[i] is None:
                multi.setdefault(c.sampling and c.sampling[:2], []).append(i)
        for start in range(0, len(single), bs):
            idx = single[start:start + bs]
            for i, r in zip(idx, self._next_token([calls[i] for i in idx], [ids[i] for i in idx])):
                out[i] = r
        for group in multi.values():
            for start in range(0, len(group), bs):
                idx = group[start:start + bs]
                for i, r in zip(idx, self._generate([calls[i] for i in idx], [ids[i] for i in idx])):
                    out[i] = r
        return out  # type: ignore[return-value]

    def _encode(self, ids: list[list[int]]):
        """A left-padded batch of the rendered calls' ids (the template's special tokens, none added twice)."""
        enc = self.tok.pad({"input_ids": ids}, return_tensors="pt")
        self.prompt_tokens += int(enc["attention_mask"].sum())
        return enc.to(self.device)

    def _next_token(self, calls: list[Call], ids: list[list[int]]) -> list[Completion]:
        import torch

        from rlaif.train.hf import position_ids_from_mask

        enc = self._encode(ids)
        # Positions from the mask, so a verdict does not depend on the batch it was in (GPT-2 shifted it).
        with torch.no_grad():
            logits = self.lm(**enc, position_ids=position_ids_from_mask(enc["attention_mask"])).logits[:, -1, :].float()
        logp = torch.log_softmax(logits, dim=-1)
        k = min(self.cfg.top_logprobs, logp.shape[-1])
        top = torch.topk(logp, k, dim=-1)
        out = []
        for row, c in enumerate(calls):
            lps: dict[str, float] = {}
            for lp, tid in zip(top.values[row].tolist(), top.indices[row].tolist()):
                piece = self.tok.decode([tid])
                if piece.strip() not in c.options:  # options are added below, variants summed
                    lps[piece] = max(lp, lps.get(piece, float("-inf")))
            for opt, ids in self._option_ids(c.options).items():
                # Sum the variants' probabilities into the option itself.
                lps[opt] = float(torch.logsumexp(logp[row, ids], dim=0)) if ids else float("-inf")
            text = self.tok.decode([int(top.indices[row, 0])])
            self.completion_tokens += 1
            out.append(Completion(text=text, top_logprobs=lps))
        return out

    def _generate(self, calls: list[Call], ids: list[list[int]]) -> list[Completion]:
        import torch

        enc = self._encode(ids)
        kw: dict[str, Any] = {"do_sample": False}
        if calls[0].sampling is not None:  # the batch samples alike (``run``); seeded by its calls' content
            temperature, top_p, seed = calls[0].sampling
            kw = {"do_sample": True, "temperature": temperature, "top_p": top_p}
            torch.manual_seed(int(content_hash([seed, [c.messages for c in calls]], 8), 16))
        with torch.no_grad():
            gen = self.lm.generate(**enc, **kw, max_new_tokens=max(c.max_tokens for c in calls),
                                   pad_token_id=self.tok.pad_token_id)
        new = gen[:, enc["input_ids"].shape[1]:]
        self.completion_tokens += int((new != self.tok.pad_token_id).sum())
        return [Completion(text=t.strip()) for t in self.tok.batch_decode(new, skip_special_tokens=True)]
