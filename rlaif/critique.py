"""The critique stage: Constitutional AI's supervised critique and revision (off by default).

For each train prompt the SFT policy answers once; then, for ``critique.passes`` passes, the
current response is critiqued against one principle (drawn by weight among those that apply to
the prompt's category, seeded per prompt and pass; its ``text`` is the critique request, as in
llm-swarm files) and revised (the principle's ``revision`` request, or a default built from its
text). The writer of critiques and revisions (``critique.reviser``) is the policy itself or the
judge's LLM backend (``openai`` or ``transformers``); the embedded judge writes no text.

Every call (the initial answers too) goes through the judge-call cache (rlaif/judges/cache.py)
in the run store, committed as it finishes: a killed stage resumes where it stopped and a re-run
makes no call. Outputs (``RunLayout.critique``), with provenance on every row:
``sft.jsonl`` (TRL prompt-completion: the prompt and the final revision; a later round's
``policy.sft_data``) and ``pairs.jsonl`` (TRL preference: the final revision chosen over the initial
response), which the mix takes as pairs of source ``revision`` weighted like AI pairs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from rlaif import chat
from rlaif.constitution import Principle
from rlaif.errors import RlaifError
from rlaif.hashing import content_hash
from rlaif.judges.llm import Call, Completer, Completion

CRITIQUE = "{request}\n\nWrite a short critique of your last response with respect to this principle."
REVISION_DEFAULT = "Please rewrite your last response so that it follows this principle: {text}"
REVISION = "{request}\n\nReply with the rewritten response only."


def critique_messages(prompt: str, response: str, p: Principle) -> list[dict]:
    return [*chat.messages(prompt), {"role": "assistant", "content": response},
            {"role": "user", "content": CRITIQUE.format(request=p.text)}]


def revision_messages(prompt: str, response: str, p: Principle, critique: str) -> list[dict]:
    request = p.revision or REVISION_DEFAULT.format(text=p.text)
    return [*critique_messages(prompt, response, p), {"role": "assistant", "content": critique},
            {"role": "user", "content": REVISION.format(request=request)}]


class PolicyWriter(Completer):
    """The SFT policy as a writer: each call's messages rendered as the policy's prompt (its end kept when
    longer than the model's positions allow), one sampled reply (seeded by the batch's content)."""

    backend = "policy"

    def __init__(self, policy_dir, policy_hash: str, temperature: float, top_p: float, seed: int, device: str):
        from rlaif.generate import load_policy

        self.model = policy_hash
        self.params = (temperature, top_p, seed)  # in the cache key: sampled text depends on them
        self.lm, self.tok = load_policy(policy_dir, device)
        self.temperature, self.top_p, self.seed, self.device = temperature, top_p, seed, device

    def run(self, calls: list[Call]) -> list[Completion]:
        from rlaif.generate import sample

        prompts = [chat.encode(c.messages) for c in calls]
        seed = int(content_hash([self.seed, prompts], 8), 16)
        outs = sample(self.lm, self.tok, prompts, 1, max(c.max_tokens for c in calls), self.temperature, self.top_p,
                      seed, self.device, truncate=True)
        return [Completion(text=o[0]) for o in outs]


def check_reviser(cfg) -> None:
    """Refuse, before anything runs, a reviser that cannot write text (exit 2)."""
    from rlaif.judges import backend_entry

    if cfg.critique.reviser == "judge" and backend_entry(cfg.judge.backend).completer is None:
        raise RlaifError(f"critique.reviser: judge: the {cfg.judge.backend!r} judge backend cannot write critiques "
                         "or revisions; set critique.reviser: policy, or judge.backend: openai | transformers")
    if cfg.generate.backend == "openai":
        from rlaif.generate_openai import check_served

        check_served(cfg.generate)


def served_policy(cfg) -> Completer:
    """A served policy (``generate.backend: openai``) as a writer: the judge's OpenAI client on
    ``generate.served``'s server and model (it answers greedily)."""
    from rlaif.config import JudgeConfig
    from rlaif.judges.openai_backend import OpenAICompleter

    s = cfg.generate.served
    return OpenAICompleter(JudgeConfig(backend="openai", model=s.model, base_url=s.base_url, api_key_env=s.api_key_env,
                                       concurrency=s.concurrency, timeout_s=s.timeout_s, max_retries=s.max_retries,
                                       constitution=cfg.judge.constitution))


def make_writers(run) -> tuple[Completer, Completer]:
    """(the policy, which answers first; the reviser, which critiques and revises)."""
    from rlaif.judges import backend_entry

    cc, jc = run.cfg.critique, run.cfg.judge
    check_reviser(run.cfg)
    if run.cfg.generate.backend == "openai":
        policy = served_policy(run.cfg)
    else:
        policy = PolicyWriter(run.layout.sft, run.output_hash("sft"), cc.temperature, cc.top_p, run.cfg.seed,
                              run.device)
    if cc.reviser == "policy":
        return policy, policy
    return policy, backend_entry(jc.backend).completer(jc, run.device)


@dataclass
class Track:
    """One prompt's way through the passes."""

    prompt_id: str
    prompt: str
    initial: str = ""
    current: str = ""
    principles: tuple[str, ...] = ()


class Asker:
    """Calls through the writer and the call cache, in committed batches, with counters."""

    def __init__(self, writer: Completer, store, max_tokens: int, batch_size: int):
        self.key_base = ["critique", writer.backend, writer.model, getattr(writer, "params", None), max_tokens]
        from rlaif.judges.cache import CallCache

        self.writer, self.max_tokens, self.batch_size = writer, max_tokens, batch_size
        self.cache = CallCache(writer.submit, store, dump=lambda r: r.as_json() if r.error is None else None,
                               load=lambda d: Completion(**d), lost=lambda k: Completion(error="not made"))
        self.failed = 0

    def ask(self, messages: list[list[dict]], label: str) -> list[str | None]:
        from rlaif.progress import task

        out: list[str | None] = []
        with task(label, len(messages)) as advance:
            for s in range(0, len(messages), self.batch_size):
                chunk = messages[s:s + self.batch_size]
                calls = [Call(m, self.max_tokens, False) for m in chunk]
                keys = [content_hash([*self.key_base, m], length=32) for m in chunk]
                for r in self.cache.run(calls, keys):
                    ok = r.error is None and bool((r.text or "").strip())
                    self.failed += not ok
                    out.append(r.text.strip() if ok else None)
                advance(len(chunk))
        return out


def run_critique(run) -> dict:
    """The stage: initial answers, ``passes`` critique/revision rounds, the two output files."""
    from rlaif.judges.core import sample_principle

    cc, constitution, seed = run.cfg.critique, run.inputs.constitution, run.cfg.seed
    prompts = run.store.prompts("train")[: cc.max_prompts]
    policy, writer = make_writers(run)
    first = Asker(policy, run.store, cc.max_new_tokens, cc.batch_size)
    asker = first if writer is policy else Asker(writer, run.store, cc.max_new_tokens, cc.batch_size)
    try:
        tracks = [Track(p.id, p.text) for p in prompts]
        for t, text in zip(tracks, first.ask([chat.messages(t.prompt) for t in tracks], "critique: answers")):
            t.initial = t.current = text or ""
        live = [t for t in tracks if t.current]
        category = {p.id: p.category for p in prompts}
        for k in range(cc.passes):
            chosen = []
            for t in live:
                ps = [p for p in constitution.principles if p.applies(category[t.prompt_id])]
                chosen.append(sample_principle(ps, seed, f"critique|{t.prompt_id}|{k}") if ps else None)
            work = [(t, p) for t, p in zip(live, chosen) if p is not None]
            crits = asker.ask([critique_messages(t.prompt, t.current, p) for t, p in work], f"critique: pass {k + 1}")
            work = [(t, p, c) for (t, p), c in zip(work, crits) if c]
            revs = asker.ask([revision_messages(t.prompt, t.current, p, c) for t, p, c in work],
                             f"revision: pass {k + 1}")
            for (t, p, _), r in zip(work, revs):
                if r:
                    t.current, t.principles = r, (*t.principles, p.id)
    finally:
        writer.close()
        policy.close()
    revised = [t for t in tracks if t.principles and t.current.strip() != t.initial.strip()]
    provenance = {"reviser": cc.reviser, "writer": {"backend": writer.backend, "model": writer.model},
                  "constitution_hash": constitution.hash, "passes": cc.passes}
    sft = [{"prompt": t.prompt, "completion": t.current, "prompt_id": t.prompt_id, "principles": list(t.principles),
            **provenance} for t in revised]
    pairs = [{"prompt": t.prompt, "chosen": t.current, "rejected": t.initial, "prompt_id": t.prompt_id,
              "principles": list(t.principles), **provenance} for t in revised]
    _write_outputs(run.layout, sft, pairs)
    askers = [first] if asker is first else [first, asker]
    counts = {"failed_calls": sum(a.failed for a in askers), "calls": sum(a.cache.calls for a in askers),
              "cache_hits": sum(a.cache.cache_hits for a in askers)}
    return {"prompts": len(tracks), "revised": len(revised), **counts, **provenance,
            "output_hash": content_hash([(r["prompt"], r["chosen"], r["rejected"]) for r in pairs])}


def _write_outputs(layout, sft: list[dict], pairs: list[dict]) -> None:
    """Both files into the stage's folder, whole or not at all."""
    import shutil

    from rlaif.layout import finalize_dir

    tmp = layout.partial(layout.critique)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, rows in (("sft.jsonl", sft), ("pairs.jsonl", pairs)):
        (tmp / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    finalize_dir(tmp, layout.critique)


def revision_pairs(layout) -> list[dict]:
    """The stage's preference pairs (for the mix)."""
    from rlaif.records import iter_jsonl

    return [obj for _, obj in iter_jsonl(layout.critique / "pairs.jsonl", "critique pairs")]
