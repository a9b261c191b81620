"""The critique stage (Constitutional AI critique and revision): the policy or the judge's LLM revises; outputs in
TRL formats with provenance; the mix takes the pairs; cached and resumable; the embedding judge writes no text."""

from __future__ import annotations

import json
import sqlite3

import pytest
from conftest import interrupt_on_call, make_tiny_project

from rlaif.cli import main
from rlaif.testing.fake_openai import FakeOpenAI, Reply

pytestmark = pytest.mark.slow


def writer(req):
    last = req["messages"][-1]["content"]
    if "Write a short critique" in last:
        return Reply("The response is vague about safety.")
    if "rewritten response only" in last:
        return Reply(f"A careful, revised answer ({len(req['messages'])} messages seen).")
    return Reply("unexpected")


def on(*extra):
    return ["--set", "critique.enabled=true", *extra]


def llm(server, *extra):
    return on("--set", "critique.reviser=judge", "--set", "judge.backend=openai", "--set",
              f"judge.base_url={server.base_url}", "--set", "judge.model=fake-writer", *extra)


@pytest.fixture
def project(tmp_path, scripted_backend):
    return make_tiny_project(tmp_path / "proj")  # the stage runs before sft: nothing else needs to run first


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_llm_reviser_writes_trl_sets_with_provenance_cached_and_mixed(project, capsys):
    cfg = str(project / "pipeline.yaml")
    with FakeOpenAI(responder=writer) as server:
        args = llm(server, "--set", "critique.passes=2")
        assert main(["critique", cfg, *args]) == 0
        n = len(server.requests)
        sft, pairs = _rows(project / "run" / "critique" / "sft.jsonl"), _rows(project / "run" / "critique" / "pairs.jsonl")
        db = sqlite3.connect(project / "run" / "store.sqlite")
        info = json.loads(db.execute("SELECT info FROM stages WHERE name='critique'").fetchone()[0])
        train = db.execute("SELECT COUNT(*) FROM prompts WHERE split='train'").fetchone()[0]
        # Two passes of critique + revision per prompt the initial policy answered (the first answers are its own).
        assert 0 < info["revised"] == len(sft) == len(pairs) <= train and n == 2 * 2 * info["revised"]
        # The revision request sees the prompt, the answer, the critique request and the critique.
        assert all(r["completion"] == "A careful, revised answer (5 messages seen)." for r in sft)
        assert all(set(r) >= {"prompt", "chosen", "rejected", "principles", "writer", "constitution_hash"} for r in pairs)
        assert all(len(r["principles"]) == 2 and r["chosen"] != r["rejected"] for r in pairs)
        assert all(r["writer"] == {"backend": "openai", "model": "fake-writer"} for r in pairs)
        # The SFT set is a valid policy.sft_data file (TRL prompt-completion).
        from rlaif.records import load_sft

        assert len(load_sft(project / "run" / "critique" / "sft.jsonl")) == len(sft)
        # A forced re-run makes no call (every call cached); the mix takes the pairs as source "revision".
        assert main(["critique", cfg, *args, "--force"]) == 0
        assert len(server.requests) == n
        for stage in ("sft", "generate", "judge", "mix"):
            assert main([stage, cfg, *args]) == 0
    mix = json.loads(db.execute("SELECT info FROM stages WHERE name='mix'").fetchone()[0])
    # Revisions on a held-out prompt are left out (the mix holds out per prompt); the rest train.
    assert mix["revision_pairs"] + mix["revisions_dropped_held_out"] == len(pairs) and mix["revision_pairs"] > 0
    from datasets import load_from_disk

    dd = load_from_disk(str(project / "run" / "pairs"))
    assert sum(s == "revision" for s in dd["train"]["source"]) == mix["revision_pairs"]
    assert not set(dd["eval"]["prompt"]) & set(dd["train"]["prompt"])


def test_killed_stage_resumes_paying_only_the_rest(project, monkeypatch):
    """A stop after the first committed batch keeps it: the re-run makes only the remaining calls."""
    import rlaif.critique as critique

    cfg = str(project / "pipeline.yaml")
    with FakeOpenAI(responder=writer) as server:
        args = llm(server, "--set", "critique.batch_size=2")
        # the first answers, then the first critiques: stop here
        real = interrupt_on_call(monkeypatch, critique.Asker, "ask", 2, after=True)
        assert main(["critique", cfg, *args]) == 130
        paid = len(server.requests)
        assert paid > 0
        monkeypatch.setattr(critique.Asker, "ask", real)
        assert main(["critique", cfg, *args]) == 0
        total = len(server.requests)
    with FakeOpenAI(responder=writer) as fresh:  # the same stage from scratch, for the count
        other = make_tiny_project(project.parent / "fresh")
        assert main(["critique", str(other / "pipeline.yaml"), *llm(fresh, "--set", "critique.batch_size=2")]) == 0
        assert total == len(fresh.requests)  # nothing paid twice


def test_initial_policy_revises_itself(project, qwen2_dir):
    """Before sft the policy is the model sft starts from (``policy.model``: here a tiny random-weight Qwen2 with
    its real chat template); with the embedded judge, which writes no text, it critiques and revises itself."""
    from rlaif.hashing import dir_hash

    assert main(["critique", str(project / "pipeline.yaml"), *on("--set", f"policy.model={qwen2_dir}",
                                                                 "--set", "judge.backend=embedding",
                                                                 "--set", "critique.max_new_tokens=8",
                                                                 "--set", "critique.max_prompts=3")]) == 0
    pairs = _rows(project / "run" / "critique" / "pairs.jsonl")
    assert all(r["writer"] == {"backend": "policy", "model": dir_hash(qwen2_dir)} for r in pairs)
    info = json.loads(sqlite3.connect(project / "run" / "store.sqlite").execute(
        "SELECT info FROM stages WHERE name='critique'").fetchone()[0])
    # 3 first answers, then a critique and a revision for each answered prompt: all by the initial policy,
    # before any SFT (no sft output exists).
    assert not (project / "run" / "sft").exists()
    assert info["writer"]["model"] == dir_hash(qwen2_dir)
    assert info["prompts"] == 3 and 3 < info["calls"] <= 3 + 2 * 3 and len(pairs) <= 3


REFUSED = {  # case: (args, what the one line says, whether the run directory may exist)
    "embedding-judge-writes-no-text": (on("--set", "critique.reviser=judge", "--set", "judge.backend=embedding"),
                                       "cannot write critiques", False),
    "in-sft-without-sft": (on("--set", "policy.skip_sft=true"), "critique.in_sft: policy.skip_sft is true", False),
    "untrained-tiny-policy-revising-itself": (on(), "the 'tiny' policy is an untrained model", False),
    "stage-off": ([], "critique.enabled", True),
}


@pytest.mark.parametrize("case", sorted(REFUSED), ids=str)
def test_refused_with_one_line_nothing_written(case, tmp_path, capsys, scripted_backend):
    proj = make_tiny_project(tmp_path / "proj")
    args, says, may_write = REFUSED[case]
    assert main(["critique", str(proj / "pipeline.yaml"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err, err
    assert may_write or not (proj / "run").exists()


def test_kill_9_then_rerun_pays_at_most_the_calls_in_flight_twice(project):
    """A real kill -9 of `rlaif critique` mid-stage: the re-run finishes it, and the calls paid twice are at
    most about the calls that were in flight (every finished call was committed as it completed)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    concurrency = 2
    with FakeOpenAI(latency_s=0.15, responder=writer) as server:
        args = llm(server, "--set", f"judge.concurrency={concurrency}", "--set", "critique.batch_size=8")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-m", "rlaif", "critique", str(project / "pipeline.yaml"), *args],
                                cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while len(server.requests) < 6 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "critique finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        first = len(server.requests)
        assert main(["critique", str(project / "pipeline.yaml"), *args]) == 0
        total = len(server.requests)
    info = json.loads(sqlite3.connect(project / "run" / "store.sqlite").execute(
        "SELECT info FROM stages WHERE name='critique'").fetchone()[0])
    needed = 2 * info["revised"]  # one critique and one revision per answered prompt (one pass)
    assert first < needed <= total and total - needed <= 2 * concurrency + 1, (first, total, needed)


def test_served_policy_answers_critiques_and_revises(project):
    """generate.backend: openai: the served policy writes the first answers too (no local model)."""
    def policy(req):
        last = req["messages"][-1]["content"]
        return writer(req) if "critique" in last or "rewritten" in last else Reply("A first answer.")

    with FakeOpenAI(responder=policy) as server:
        args = on("--set", "generate.backend=openai", "--set", "generate.served.model=fake-policy",
                  "--set", f"generate.served.base_url={server.base_url}")
        assert main(["critique", str(project / "pipeline.yaml"), *args]) == 0
        n = len(server.requests)
    pairs = _rows(project / "run" / "critique" / "pairs.jsonl")
    assert pairs and n == 3 * len(pairs)  # first answer, critique, revision per prompt
    assert all(r["rejected"] == "A first answer." and r["writer"]["model"] == "fake-policy" for r in pairs)
