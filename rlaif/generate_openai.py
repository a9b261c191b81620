"""``generate.backend: openai``: sample the K candidates from a served policy (vLLM, SGLang, `transformers serve`,
any OpenAI-compatible server).

Each prompt is sent as its conversation (``rlaif.chat.messages``): the server renders it with the served model's
own chat template, as the local backend does with the tokenizer's. ``generate.served.system_role: fold`` sends a
system message as the start of the first user turn instead (``rlaif.chat.served_messages``), for a template with no
system role; a server that refuses a system message (HTTP 400, ``rlaif.served``) stops the stage after the batch in
flight, with one line naming that option. One request per prompt asks for all K samples
(``n``); a server that returns fewer choices (some ignore ``n``) is asked again for the rest. A per-prompt seed is
sent where the config allows it (vLLM, SGLang and OpenAI honour it), so a rerun asks the same question the same way.

Like the judge: the openai client's own retries (backoff, Retry-After), a concurrency cap, and a commit per batch
of ``generate.batch_size`` prompts, so a kill loses at most the batch in flight and a rerun skips committed
prompts. A prompt whose request still fails after the retries is not stored; the stage then fails naming the
first error, and a rerun retries only those prompts. A prompt over the served model's context length (HTTP 400)
is not an error but a final outcome: it gets no candidates, the stage finishes and records them
(``over_context``), as the judge leaves a prompt too long for it unscored; a re-run of the stage (``--force``,
after serving the model with a larger context) asks them again. The served model's name (as the server reports it) is
recorded as each candidate's ``policy_hash`` (``served:<model>``).

Written here rather than with the judge's ``OpenAICompleter``: that one returns a single choice per call and
counts budgets for judging; sampling needs ``n`` choices, per-prompt seeds and sampling parameters. The client
setup (key from an environment variable, retries, timeout, raw ``post`` for speed) is the same.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from rlaif import chat, safeio, served
from rlaif.errors import RlaifError
from rlaif.hashing import content_hash

MAX_EXTRA_ROUNDS = 4  # re-asks for a server that returns fewer than n choices


def check_served(gcfg) -> None:
    s = gcfg.served
    if not s.model:
        raise RlaifError("generate.served.model: required for generate.backend openai (the served model's name)")
    if not s.base_url and not s.api_key_env:
        raise RlaifError("generate.served.base_url: required for generate.backend openai "
                         "(e.g. http://127.0.0.1:8000/v1), or set generate.served.api_key_env for api.openai.com")
    if s.api_key_env and not os.environ.get(s.api_key_env):
        raise RlaifError(f"generate.served.api_key_env: environment variable {s.api_key_env} is not set")


def prompt_seed(seed: int, prompt_id: str, round_: int = 0) -> int:
    return int(content_hash([seed, "served-generate", prompt_id, round_], 8), 16) & 0x7FFFFFFF


class _Sampler:
    def __init__(self, gcfg, seed: int):
        import openai

        s = gcfg.served
        self.gcfg, self.s, self.seed = gcfg, s, seed
        key = os.environ.get(s.api_key_env) if s.api_key_env else "not-needed"
        self.client = openai.AsyncOpenAI(base_url=s.base_url, api_key=key, max_retries=s.max_retries,
                                         timeout=s.timeout_s)
        self.sem = asyncio.Semaphore(s.concurrency)
        self.served_model: str | None = None

    async def _ask(self, messages: list[dict], n: int, seed: int) -> list[str]:
        g = self.gcfg
        body: dict[str, Any] = {"model": self.s.model, "messages": messages, "n": n, "temperature": g.temperature,
                                "top_p": g.top_p, "max_tokens": g.max_new_tokens}
        if self.s.send_seed:
            body["seed"] = seed
        async with self.sem:
            raw = await self.client.post("/chat/completions", body=body, cast_to=bytes)
        resp = safeio.loads_reply(raw)
        if not isinstance(resp, dict) or not isinstance(resp.get("choices"), list):
            raise ValueError(f"no choices in {str(resp)[:200]}")
        self.served_model = self.served_model or resp.get("model") or self.s.model
        texts = [(c.get("message") or {}).get("content") for c in resp["choices"] if isinstance(c, dict)]
        if any(not isinstance(t, str) for t in texts):
            raise ValueError("a choice has no text content")
        return [t.strip() for t in texts]

    async def sample(self, prompt_id: str, prompt_text: str) -> list[str]:
        """K texts for one prompt; raises the client's error after its retries."""
        k, messages = self.gcfg.num_candidates, chat.served_messages(chat.messages(prompt_text), self.s.system_role)
        out: list[str] = []
        for r in range(MAX_EXTRA_ROUNDS + 1):
            out += await self._ask(messages, k - len(out), prompt_seed(self.seed, prompt_id, r))
            if len(out) >= k:
                return out[:k]
        raise ValueError(f"the server returned {len(out)} of {k} choices after {MAX_EXTRA_ROUNDS + 1} requests")


def _describe(e: BaseException) -> str:
    import openai

    if isinstance(e, openai.APIStatusError):
        return f"HTTP {e.status_code}: {served.one_line(str(e), 200)}"
    return f"{type(e).__name__}: {served.one_line(str(e), 200)}"


MAX_LISTED = 20  # prompt ids over the context recorded by name in the stage's results


def generate_served(store, gen_hash: str, gcfg, seed: int, todo: list, advance) -> dict:
    """Sample ``todo`` prompts from the served policy, committing per batch. Returns ``new_candidates`` and, when
    some prompts were over the served model's context, ``over_context`` ({prompts, ids, error, fix})."""
    from rlaif.records import Candidate

    check_served(gcfg)
    s = gcfg.served

    async def run() -> tuple[int, list[str], list[str], str | None]:
        sampler = _Sampler(gcfg, seed)
        made, errors, too_long, first_too_long = 0, [], [], None
        try:
            for i in range(0, len(todo), gcfg.batch_size):
                batch = todo[i:i + gcfg.batch_size]
                outs = await asyncio.gather(*(sampler.sample(p.id, p.text) for p in batch), return_exceptions=True)
                refused = None
                for p, o in zip(batch, outs):
                    if isinstance(o, BaseException) and not isinstance(o, Exception):
                        raise o  # KeyboardInterrupt / cancellation: committed batches stay
                    if isinstance(o, Exception) and served.over_context(o):
                        too_long.append(p.id)
                        first_too_long = first_too_long or f"prompt {p.id}: {_describe(o)}"
                    elif isinstance(o, Exception):
                        errors.append(f"prompt {p.id}: {_describe(o)}")
                        sent = chat.served_messages(chat.messages(p.text), s.system_role)
                        if refused is None and served.refuses_system(o, sent):
                            refused = errors[-1]
                policy = f"served:{sampler.served_model or s.model}"
                cands = [Candidate(content_hash([gen_hash, p.id, k]), p.id, k, text, policy)
                         for p, o in zip(batch, outs) if isinstance(o, list) for k, text in enumerate(o)]
                store.add_candidates(cands, gen_hash)  # committed: a kill loses at most this batch
                made += len(cands)
                advance(len(batch))
                if refused is not None:  # every prompt with a system message would be refused alike
                    raise RlaifError(f"generate: {s.base_url} refused a system message ({refused}); "
                                     f"{served.system_fix('generate.served.system_role')}; the {made} candidates "
                                     "made are stored")
        finally:
            await sampler.client.close()
        return made, errors, too_long, first_too_long

    made, errors, too_long, first_too_long = asyncio.run(run())
    if errors:
        raise RlaifError(f"generate: {len(errors)} prompt(s) got no candidates from {s.base_url} "
                         f"({errors[0]}); the others are stored, rerun to retry these")
    out: dict = {"new_candidates": made}
    if too_long:
        out["over_context"] = {"prompts": len(too_long), "ids": too_long[:MAX_LISTED], "error": first_too_long,
                               "fix": served.context_fix("each of these prompts (with generate.max_new_tokens)")
                               + "; then re-run with --force to ask them again"}
    return out
