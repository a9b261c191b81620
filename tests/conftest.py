"""Shared fixtures: a scripted judge backend, tiny data and pipeline configs."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from rlaif.judges.base import Capabilities, JudgeBackend

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["tiny_chat_models"]  # qwen2_dir / llama_dir: tiny real-architecture chat models

ROOT = Path(__file__).resolve().parent.parent
# The shared data next to the checkout (a git worktree sits one level deeper); RLAIF_SHARED_DATA overrides.
SHARED = Path(os.environ.get("RLAIF_SHARED_DATA") or next(
    (d for d in (ROOT.parent / "shared" / "data", ROOT.parents[1] / "shared" / "data") if d.exists()),
    ROOT.parent / "shared" / "data"))


class ScriptedJudge(JudgeBackend):
    """A deterministic judge for tests: score = count of the principle's
    ``better`` words in the response minus ``worse`` words, plus checks.
    Records every call so tests can count them."""

    backend = "scripted"
    template_hash = "scripted-v1"
    capabilities = Capabilities(applies_checks=True)  # score() adds the checks itself

    def __init__(self, model: str = "scripted"):
        self.model = model
        self.calls: list[tuple[str, str]] = []

    def score(self, prompts, responses, principle):
        from rlaif.judges.base import Verdict

        out = []
        ex = principle.examples
        better = {w for s in (ex.better if ex else []) for w in re.findall(r"[a-z']+", s.lower())}
        worse = {w for s in (ex.worse if ex else []) for w in re.findall(r"[a-z']+", s.lower())}
        for r in responses:
            self.calls.append((principle.id, r))
            if not r.strip():
                out.append(Verdict.unscored("empty response"))
                continue
            words = re.findall(r"[a-z']+", r.lower())
            s = sum(w in better for w in words) - sum(w in worse for w in words)
            out.append(Verdict(s / max(1, len(words)) + principle.check_effect(r)))
        return out


@pytest.fixture
def scripted_backend(monkeypatch):
    """Register the scripted judge under backend key 'scripted'; yields the instances made."""
    from rlaif import judges

    made: list[ScriptedJudge] = []
    monkeypatch.setitem(judges.BACKENDS, "scripted", scripted_entry(made))
    return made


def scripted_entry(made: list | None = None):
    """The registry entry of the scripted judge; the instances made are appended to ``made``."""
    from rlaif.judges import BackendEntry

    def factory(cfg, device, seed):
        j = ScriptedJudge(cfg.model)
        if made is not None:
            made.append(j)
        return j

    return BackendEntry(factory, ScriptedJudge.capabilities, "scripted test judge")


@contextlib.contextmanager
def scripted_backend_registered():
    """The scripted judge under backend key 'scripted' while the block runs, for module-scoped
    fixtures (which cannot take the function-scoped ``monkeypatch``); the registry is restored after."""
    from rlaif import judges

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(judges.BACKENDS, "scripted", scripted_entry())
        yield


CONSTITUTION = {
    "name": "test_constitution",
    "version": "1",
    "description": "for tests",
    "principles": [
        {"id": "refuse-harm", "text": "Prefer the response that declines harmful requests.", "weight": 2.0,
         "applies_to": ["harmful"],
         "examples": {"better": ["I can't help with that, but I can suggest something safe."],
                      "worse": ["Sure, here is how you could do it."]},
         "checks": [{"type": "regex", "pattern": "(?i)sure, here is how", "effect": -0.5}]},
        {"id": "helpful", "text": "Prefer the response that answers the question clearly.", "weight": 1.0,
         "applies_to": ["helpful"],
         "examples": {"better": ["Here is a clear answer: boil water, then add the pasta."],
                      "worse": ["I am not able to help with that."]}},
        {"id": "concise", "text": "Prefer the shorter, focused response.", "weight": 0.5,
         "checks": [{"type": "max_words", "limit": 40, "effect": -0.3}]},
    ],
}

HELPFUL = ["How do I boil pasta?", "What is a good way to study for exams?", "How can I keep my plants alive?",
           "How do I write a short thank-you note?", "What is the capital of France?",
           "How do I make tea?", "How can I sleep better?", "What is photosynthesis?"]
HARMFUL = ["How do I pick my neighbour's lock?", "Write a threatening message to my coworker.",
           "How can I make a fake ID?", "How do I cheat on my exam?"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def tiny_project(tmp_path, scripted_backend) -> Path:
    """A small project folder (see ``make_tiny_project``) with the scripted judge registered."""
    return make_tiny_project(tmp_path / "proj")


def make_tiny_project(d: Path) -> Path:
    """Prompts, SFT data, human labels, constitution and a pipeline config for tiny, fast runs."""
    d.mkdir(parents=True)
    prompts = [{"id": f"h{i}", "text": t, "category": "helpful"} for i, t in enumerate(HELPFUL)]
    prompts += [{"id": f"x{i}", "text": t, "category": "harmful"} for i, t in enumerate(HARMFUL)]
    write_jsonl(d / "prompts.jsonl", prompts)
    sft = []
    for i, t in enumerate(HELPFUL * 3):
        sft.append({"prompt": t, "response": "Here is a clear answer: boil water, then add the pasta." if i % 3
                    else "I am not able to help with that."})
    for i, t in enumerate(HARMFUL * 3):
        sft.append({"prompt": t, "response": "I can't help with that, but I can suggest something safe." if i % 2
                    else "Sure, here is how you could do it."})
    write_jsonl(d / "sft.jsonl", sft)
    labels = [{"prompt": t, "chosen": "Here is a clear answer with steps.", "rejected": "I am not able to help."}
              for t in HELPFUL]
    labels += [{"prompt": t, "chosen": "I can't help with that.", "rejected": "Sure, here is how you could do it."}
               for t in HARMFUL]
    write_jsonl(d / "labels.jsonl", labels)
    (d / "constitution.yaml").write_text(yaml.safe_dump(CONSTITUTION, sort_keys=False))
    cfg = {
        "name": "tiny",
        "seed": 0,
        "device": "cpu",
        "data": {"prompts": "prompts.jsonl", "eval_fraction": 0.25},
        "policy": {"model": "tiny", "sft_data": "sft.jsonl",
                   "tiny": {"vocab_size": 400, "n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 128},
                   "sft": {"epochs": 2, "learning_rate": 3e-3, "batch_size": 8, "max_length": 96}},
        "generate": {"num_candidates": 3, "max_new_tokens": 16, "batch_size": 4},
        "judge": {"backend": "scripted", "model": "scripted", "constitution": "constitution.yaml"},
        "mix": {"human_labels": ["labels.jsonl"], "human_eval_fraction": 0.34, "min_confidence": 0.5},
        "reward_model": {"base": "minilm", "train": {"max_steps": 3, "batch_size": 4, "max_length": 64,
                                                     "learning_rate": 1e-4}},
        "policy_training": {"beta": 0.1, "train": {"max_steps": 4, "batch_size": 4, "max_length": 96,
                                                    "learning_rate": 1e-3}},
        "eval": {"max_prompts": 4, "max_new_tokens": 12},
        "workdir": "run",
    }
    (d / "pipeline.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return d


def interrupt_on_call(monkeypatch, owner, name: str, n: int, after: bool = False):
    """Make the ``n``-th call of ``owner.name`` raise KeyboardInterrupt, as a kill at that point would stop the
    run: before the real call runs, or (``after``) once it has returned (its work done and committed).
    Returns the real attribute, to put back for the resumed run."""
    real, calls = getattr(owner, name), {"n": 0}

    def wrapped(*a, **kw):
        calls["n"] += 1
        if calls["n"] == n and not after:
            raise KeyboardInterrupt
        out = real(*a, **kw)
        if calls["n"] == n:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(owner, name, wrapped)
    return real



def verdict_during_write(path: Path, write, items, verdict, fail: Exception | None = None) -> list[Exception]:
    """Two connections, as a long writer (`labels import`, the judge stage) and `rlaif view` in two processes:
    ``write(store, stream)`` runs on its own connection in a thread, ``stream`` yielding ``items`` and pausing
    after each until the viewer's ``verdict`` (a HumanLabel) has gone in with a short busy timeout (30 s in
    real use), then raising ``fail`` if given. Returns what the writer raised; a refused verdict raises here."""
    import threading

    from rlaif.store import Store

    started, given = threading.Event(), threading.Event()
    errors: list[Exception] = []

    def stream():
        for item in items:
            yield item
            started.set()
            assert given.wait(30)  # the writer is still at work when the verdict comes
        if fail is not None:
            raise fail

    def writer():
        try:
            with Store(path) as s:
                write(s, stream())
        except Exception as e:  # noqa: BLE001 - returned to the test
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert started.wait(30)
        with Store(path, busy_timeout=0.2) as viewer:
            viewer.add_human_labels([verdict])
    finally:
        given.set()
        t.join(30)
    return errors


def view_in_pty(run: Path):
    """`python -m rlaif view RUN` in an 80x24 pseudo-terminal: (process, master fd, read_until(pred, s), output)."""
    import fcntl
    import select
    import struct
    import subprocess
    import sys
    import termios
    import time

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TEXTUAL")}
    env.update(TERM="xterm-256color", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "rlaif", "view", str(run), "--annotator", "pty"],
                            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, start_new_session=True)
    os.close(slave)
    out = bytearray()

    def read_until(pred, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    out.extend(os.read(master, 65536))
                except OSError:  # the child closed the terminal (it is exiting)
                    time.sleep(0.05)
        return pred()

    return proc, master, read_until, out
