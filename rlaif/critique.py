"""The critique stage: Constitutional AI's supervised critique and revision (off by default, before ``sft``).

For each train prompt the initial policy (the model ``sft`` starts from: ``policy.model``, or a served
policy) answers once; then, for ``critique.passes`` passes, the current response is critiqued against
one principle (drawn by weight among those that apply to the prompt's category, seeded per prompt
and pass) and revised. A principle with a ``revision`` request (a critique/revision file, e.g. one
imported from llm-swarm) is sent as it is: its ``text`` is the critique request and its ``revision``
the revision request; any other principle's text is wrapped in a request to critique against it, and
the default revision request asks for a rewrite that follows it. With ``critique.examples`` (an llm-swarm
file's few-shot ``system_chat`` dialogues) ``examples_per_call`` of them, drawn per prompt and pass, come
before the prompt in every critique and revision call (not in the first answers: those are the policy's
own). The writer of critiques and revisions (``critique.reviser``) is the policy itself or the judge's
LLM backend (``openai`` or ``transformers``); the embedded judge writes no text. Every writer samples
with ``critique.temperature`` / ``top_p`` and the stage's seed (``critique.seed``, default the run's;
temperature 0: greedy), all in every call's cache key.

Every call (the initial answers too) goes through the judge-call cache (rlaif/judges/cache.py)
in the run store, committed as it finishes: a killed stage resumes where it stopped and a re-run
makes no call. Outputs (``RunLayout.critique``), with provenance on every row:
``sft.jsonl`` (TRL prompt-completion: the prompt and the final revision; with ``critique.in_sft``
this run's ``sft`` trains on it as well as on ``policy.sft_data``) and ``pairs.jsonl`` (TRL
preference: the final revision chosen over the initial response), which the mix takes as pairs of
source ``revision`` weighted like AI pairs.
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


def critique_request(p: Principle) -> str:
    """A critique/revision principle's own request (its ``text``), else its text wrapped in one."""
    return p.text if p.revision else CRITIQUE.format(request=p.text)


def critique_messages(prompt: str, response: str, p: Principle, shot: list[dict] = ()) -> list[dict]:
    """The critique call: the few-shot dialogues ``shot`` (after the prompt's system message, if any), the
    prompt, the response and the critique request."""
    msgs = chat.messages(prompt)
    head, rest = (msgs[:1], msgs[1:]) if msgs[0]["role"] == "system" else ([], msgs)
    return [*head, *shot, *rest, {"role": "assistant", "content": response},
            {"role": "user", "content": critique_request(p)}]


def revision_messages(prompt: str, response: str, p: Principle, critique: str, shot: list[dict] = ()) -> list[dict]:
    request = p.revision or REVISION_DEFAULT.format(text=p.text)
    return [*critique_messages(prompt, response, p, shot), {"role": "assistant", "content": critique},
            {"role": "user", "content": REVISION.format(request=request)}]


def draw_shot(dialogues: list[list[dict]], n: int, seed: int, prompt_id: str, k: int) -> list[dict]:
    """``n`` of the few-shot dialogues (seeded per prompt and pass), as one run of messages."""
    import random

    if not dialogues:
        return []
    rng = random.Random(int(content_hash([seed, "critique-shot", prompt_id, k], 8), 16))
    return [m for i in sorted(rng.sample(range(len(dialogues)), min(n, len(dialogues)))) for m in dialogues[i]]


class PolicyWriter(Completer):
    """A local policy as a writer: each call's messages rendered as the policy's prompt (its end kept when
    longer than the model's positions allow), one reply per call, sampled as the calls say (seeded by the
    batch's content) or greedy."""

    backend = "policy"

    def __init__(self, model_ref: str, identity: str, device: str):
        from rlaif.generate import load_policy

        self.model = identity  # in the cache key: the model's content, not its path
        self.lm, self.tok = load_policy(model_ref, device)
        self.device = device

    def run(self, calls: list[Call]) -> list[Completion]:
        from rlaif.generate import sample

        prompts = [chat.encode(c.messages) for c in calls]
        temperature, top_p, seed = calls[0].sampling or (0.0, 1.0, 0)  # an Asker's calls all sample alike
        outs = sample(self.lm, self.tok, prompts, 1, max(c.max_tokens for c in calls), temperature, top_p,
                      int(content_hash([seed, prompts], 8), 16), self.device)
        return [Completion(text=o[0]) for o in outs]


def check_reviser(cfg) -> None:
    """Refuse, before anything runs, a reviser that cannot write text (exit 2)."""
    from rlaif.judges import backend_entry

    if cfg.critique.reviser == "judge" and backend_entry(cfg.judge.backend).completer is None:
        raise RlaifError(f"critique.reviser: judge: the {cfg.judge.backend!r} judge backend cannot write critiques "
                         "or revisions; set critique.reviser: policy, or judge.backend: openai | transformers")
    if cfg.critique.reviser == "policy" and cfg.policy.model == "tiny" and cfg.generate.backend != "openai":
        raise RlaifError("critique.reviser: policy: before sft the 'tiny' policy is an untrained model (random "
                         "weights) that cannot critique; set critique.reviser: judge (openai | transformers), or "
                         "policy.model to a chat model")
    if cfg.generate.backend == "openai":
        from rlaif.generate_openai import check_served

        check_served(cfg.generate)


def served_policy(cfg) -> Completer:
    """A served policy (``generate.backend: openai``) as a writer: the judge's OpenAI client on
    ``generate.served``'s server and model."""
    from rlaif.config import JudgeConfig
    from rlaif.judges.openai_backend import OpenAICompleter

    s = cfg.generate.served
    return OpenAICompleter(JudgeConfig(backend="openai", model=s.model, base_url=s.base_url, api_key_env=s.api_key_env,
                                       concurrency=s.concurrency, timeout_s=s.timeout_s, max_retries=s.max_retries,
                                       system_role=s.system_role, constitution=cfg.judge.constitution),
                          section="generate.served")


def local_policy(run) -> PolicyWriter:
    """The initial policy (the model ``sft`` starts from) as a writer. For ``policy.model: tiny`` that is the
    untrained tiny model the SFT stage would build from ``policy.sft_data`` (random weights: noise, for tests)."""
    from pathlib import Path

    from rlaif.hashing import dir_hash
    from rlaif.train.sft import base_rows, initial_policy

    pcfg = run.cfg.policy
    rows = base_rows(pcfg, run.cfg.data.system_prompt)
    texts = [p.text for p in run.inputs.prompts]
    ref = initial_policy(pcfg, run.cfg.seed, rows, texts, run.layout.partial(run.layout.critique))
    if pcfg.model == "tiny":  # built deterministically from these
        identity = content_hash(["tiny", pcfg.tiny.model_dump(), rows, texts, run.cfg.seed])
    elif Path(ref).is_dir():  # a local folder (a later round's: the previous policy) by its content
        identity = dir_hash(ref)
    else:
        identity = ref
    return PolicyWriter(ref, identity, run.device)


def make_writers(run) -> tuple[Completer, Completer]:
    """(the policy, which answers first; the reviser, which critiques and revises)."""
    from rlaif.judges import backend_entry

    cc, jc = run.cfg.critique, run.cfg.judge
    check_reviser(run.cfg)
    policy = served_policy(run.cfg) if run.cfg.generate.backend == "openai" else local_policy(run)
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

    def __init__(self, writer: Completer, store, max_tokens: int, batch_size: int, sampling: tuple | None):
        self.key_base = ["critique", writer.backend, writer.model, sampling, max_tokens]
        from rlaif.judges.cache import CallCache

        self.writer, self.max_tokens, self.batch_size, self.sampling = writer, max_tokens, batch_size, sampling
        self.cache = CallCache(writer.submit, store, dump=lambda r: r.as_json() if r.error is None else None,
                               load=lambda d: Completion(**d), lost=lambda k: Completion(error="not made"))
        self.failed = self.over_context = 0

    def ask(self, messages: list[list[dict]], label: str) -> list[str | None]:
        from rlaif.progress import task
        from rlaif.safeio import max_text_chars

        out: list[str | None] = []
        with task(label, len(messages)) as advance:
            for s in range(0, len(messages), self.batch_size):
                chunk = messages[s:s + self.batch_size]
                calls = [Call(m, self.max_tokens, False, sampling=self.sampling) for m in chunk]
                keys = [content_hash([*self.key_base, self.writer.sent(m)], length=32) for m in chunk]
                for r in self.cache.run(calls, keys):
                    # A text over the input bound (a server ignoring max_tokens) counts as failed: written to
                    # sft.jsonl it would stop sft, which bounds its input, with a cached answer a re-run repeats.
                    ok = r.error is None and bool((r.text or "").strip()) and len(r.text) <= max_text_chars()
                    self.failed += not ok and not r.final  # a prompt over the writer's context: final
                    self.over_context += r.final
                    out.append(r.text.strip() if ok else None)
                advance(len(chunk))
        return out


def run_critique(run) -> dict:
    """The stage: initial answers, ``passes`` critique/revision rounds, the two output files."""
    from rlaif.judges.core import sample_principle

    cc, constitution = run.cfg.critique, run.inputs.constitution
    seed = cc.stage_seed(run.cfg.seed)
    prompts = run.store.prompts("train")[: cc.max_prompts]
    dialogues = []
    if cc.examples:  # validated with the other inputs
        from rlaif.constitution import llm_swarm_dialogues

        dialogues = llm_swarm_dialogues(cc.examples)
    policy, writer = make_writers(run)
    sampling = cc.sampling(run.cfg.seed)
    first = Asker(policy, run.store, cc.max_new_tokens, cc.batch_size, sampling)
    asker = first if writer is policy else Asker(writer, run.store, cc.max_new_tokens, cc.batch_size, sampling)
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
            work = [(t, p, draw_shot(dialogues, cc.examples_per_call, seed, t.prompt_id, k))
                    for t, p in zip(live, chosen) if p is not None]
            crits = asker.ask([critique_messages(t.prompt, t.current, p, shot) for t, p, shot in work],
                              f"critique: pass {k + 1}")
            work = [(t, p, shot, c) for (t, p, shot), c in zip(work, crits) if c]
            revs = asker.ask([revision_messages(t.prompt, t.current, p, c, shot) for t, p, shot, c in work],
                             f"revision: pass {k + 1}")
            for (t, p, _, _), r in zip(work, revs):
                if r:
                    t.current, t.principles = r, (*t.principles, p.id)
    finally:
        writer.close()
        policy.close()
    revised = [t for t in tracks if t.principles and t.current.strip() != t.initial.strip()]
    provenance = {"reviser": cc.reviser, "writer": {"backend": writer.backend, "model": writer.model},
                  "sampling": list(sampling) if sampling else "greedy", "constitution_hash": constitution.hash,
                  "passes": cc.passes, "examples": {"hash": run.inputs.file_hashes.get("critique_examples"),
                                                    "per_call": cc.examples_per_call} if dialogues else None}
    sft = [{**trl_fields(t.prompt, completion=t.current), "prompt_id": t.prompt_id, "principles": list(t.principles),
            **provenance} for t in revised]
    pairs = [{**trl_fields(t.prompt, chosen=t.current, rejected=t.initial), "prompt_id": t.prompt_id,
              "principles": list(t.principles), **provenance} for t in revised]
    _write_outputs(run.layout, sft, pairs)
    askers = [first] if asker is first else [first, asker]
    counts = {"failed_calls": sum(a.failed for a in askers), "calls": sum(a.cache.calls for a in askers),
              "over_context_calls": sum(a.over_context for a in askers),
              "cache_hits": sum(a.cache.cache_hits for a in askers)}
    if counts["over_context_calls"]:
        from rlaif.progress import console

        console.print(f"[yellow]critique: {counts['over_context_calls']} call(s) were over the writer's context "
                      "length (their prompts are not revised): shorten those prompts, or give the writer a larger "
                      "context[/yellow]")
    return {"prompts": len(tracks), "revised": len(revised), **counts, **provenance,
            "output_hash": content_hash([(r["prompt"], r["chosen"], r["rejected"]) for r in pairs])}


def trl_fields(prompt: str, **answers: str) -> dict:
    """A stored prompt and its answers in TRL's standard form (strings) for a plain prompt, or in its
    conversational form (message lists) for a conversation (a system prompt, earlier turns)."""
    msgs = chat.messages(prompt)
    if len(msgs) == 1 and msgs[0]["role"] == "user":
        return {"prompt": msgs[0]["content"], **answers}
    return {"prompt": msgs, **{k: [{"role": "assistant", "content": v}] for k, v in answers.items()}}


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


def revision_sft_rows(layout) -> list[dict]:
    """The stage's SFT set as ``{"prompt", "response"}`` rows (for this run's ``sft``); none when nothing was
    revised."""
    from rlaif.records import load_sft

    path = layout.critique / "sft.jsonl"
    return load_sft(path) if path.stat().st_size else []


def revision_pairs(layout) -> list[dict]:
    """The stage's preference pairs (for the mix), their prompts in the stored form."""
    from rlaif.conversations import preference_of
    from rlaif.records import iter_jsonl

    path, out = layout.critique / "pairs.jsonl", []
    for n, obj in iter_jsonl(path, "critique pairs"):
        prompt, chosen, rejected, _ = preference_of(path, n, obj)
        out.append({**obj, "prompt": prompt, "chosen": chosen, "rejected": rejected})
    return out
