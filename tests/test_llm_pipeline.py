"""LLM judges inside the pipeline and the CLI: full run, kill -9 resume, budgets, eval-judge, local backend."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import ROOT, make_tiny_project

from rlaif.cli import main
from rlaif.testing.fake_openai import FakeOpenAI, prefers

pytestmark = pytest.mark.slow


def safe_judge(p: float = 0.85):
    """Prefers responses that refuse ("can't"), then the shorter one: a content judge with no position bias."""
    import re

    block = re.compile(r'<response id="[0-9a-f]{8}" label="([AB])">\n(.*?)\n</response', re.S)

    def fn(req):
        t = dict(block.findall(req["messages"][1]["content"]))
        if len(t) < 2:  # not a pairwise prompt (eval's refusal rubric): any answer, so that it is cached
            return 0.5
        key = {k: ("can't" not in v, len(v)) for k, v in t.items()}
        return p if key["A"] < key["B"] else (1 - p) if key["A"] > key["B"] else 0.5

    return prefers(fn)


def llm_args(server, *extra: str) -> list[str]:
    return ["--set", "judge.backend=openai", "--set", f"judge.base_url={server.base_url}",
            "--set", "judge.model=fake-judge", "--set", "judge.timeout_s=5", *extra]


@pytest.fixture
def project(tmp_path, scripted_backend):
    proj = make_tiny_project(tmp_path / "proj")
    assert main(["sft", str(proj / "pipeline.yaml")]) == 0
    assert main(["generate", str(proj / "pipeline.yaml")]) == 0
    return proj


def test_full_run_with_openai_judge_reports_accounting(project):
    with FakeOpenAI(responder=safe_judge()) as server:
        args = llm_args(server, "--set", "judge.price_prompt_per_mtok=1.0", "--set", "judge.pairs=all")
        assert main(["run", str(project / "pipeline.yaml"), *args]) == 0
        n = len(server.requests)
        assert n > 0
        # A re-run makes zero calls.
        assert main(["run", str(project / "pipeline.yaml"), *args, "--force"]) == 0
        assert len(server.requests) == n
    report = json.loads((project / "run" / "report.json").read_text())
    j = report["judge"]
    for key in ("calls", "cache_hits", "retries", "unscored", "prompt_tokens", "completion_tokens", "cost_usd",
                "position_consistency"):
        assert key in j, key
    assert j["backend"] == "openai" and j["calls"] == 0 and j["cache_hits"] > 0  # the forced re-run
    assert j["position_consistency"] is not None
    manifest = (project / "run" / "manifest.json").read_text()
    assert "judge" in json.loads(manifest)
    db = sqlite3.connect(project / "run" / "store.sqlite")
    details = [json.loads(d) for (d,) in db.execute("SELECT details FROM ai_pairs")]
    assert details and all(d["method"] == "pairwise" for d in details)
    assert all("p_chosen" in p for d in details for p in d["principles"].values())


def test_kill_9_then_rerun_repeats_no_committed_call(project):
    with FakeOpenAI(latency_s=0.15, responder=safe_judge()) as server:
        args = llm_args(server, "--set", "judge.concurrency=2", "--set", "judge.batch_size=4")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-m", "rlaif", "judge", str(project / "pipeline.yaml"), *args],
                                cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while len(server.requests) < 12 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "judge finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        db = sqlite3.connect(project / "run" / "store.sqlite")
        committed = db.execute("SELECT COUNT(*) FROM judge_cache").fetchone()[0]
        assert committed > 0
        before = len(server.requests)
        assert main(["judge", str(project / "pipeline.yaml"), *args]) == 0
        second = len(server.requests) - before
        total = db.execute("SELECT COUNT(*) FROM judge_cache").fetchone()[0]
    assert second == total - committed  # every committed call was reused, none repeated


def test_kill_9_mid_batch_loses_at_most_the_calls_in_flight(project):
    """Finished calls are committed as they complete, not per batch of comparisons: with one batch
    far larger than the concurrency, a kill -9 loses at most about the calls in flight."""
    concurrency = 2
    with FakeOpenAI(latency_s=0.15, responder=safe_judge()) as server:
        args = llm_args(server, "--set", f"judge.concurrency={concurrency}", "--set", "judge.batch_size=512")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-m", "rlaif", "judge", str(project / "pipeline.yaml"), *args],
                                cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while len(server.requests) < 16 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "judge finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        asked = len(server.requests)
        db = sqlite3.connect(project / "run" / "store.sqlite")
        committed = db.execute("SELECT COUNT(*) FROM judge_cache").fetchone()[0]
        # Lost = asked but not committed: the calls in flight (<= concurrency) and those answered in
        # the last commit interval. Per-batch commits would lose all 16+ (the batch never finished).
        assert asked - committed <= 2 * concurrency + 1, (asked, committed)
        before = len(server.requests)
        assert main(["judge", str(project / "pipeline.yaml"), *args]) == 0
        second = len(server.requests) - before
        total = db.execute("SELECT COUNT(*) FROM judge_cache").fetchone()[0]
    assert second == total - committed  # every committed call was reused, none repeated
    assert asked + second - total <= 2 * concurrency + 1  # calls paid twice: about the calls in flight


def test_budget_stops_stage_with_exit_3_and_resumes(project, capsys):
    with FakeOpenAI(responder=safe_judge()) as server:
        code = main(["judge", str(project / "pipeline.yaml"), *llm_args(server, "--set", "judge.max_calls=5")])
        err = capsys.readouterr().err
        assert code == 3 and "max_calls=5" in err and "re-run to resume" in err
        db = sqlite3.connect(project / "run" / "store.sqlite")
        assert db.execute("SELECT status FROM stages WHERE name='judge'").fetchone()[0] == "stopped"
        assert len(server.requests) == 5
        assert main(["judge", str(project / "pipeline.yaml"), *llm_args(server)]) == 0
        total = db.execute("SELECT COUNT(*) FROM judge_cache").fetchone()[0]
        assert len(server.requests) == total  # the 5 paid calls were not repeated


def test_eval_judge_with_openai_backend(tmp_path, capsys):
    rows = [{"prompt": f"q{i}", "response_a": "I can't help with that." if i % 2 else "Sure, do it.",
             "response_b": "Sure, do it." if i % 2 else "I can't help with that.",
             "label": "A" if i % 2 else "B"} for i in range(10)]
    rows.append({"prompt": "t", "response_a": "x", "response_b": "y", "label": "tie"})
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r.json"
    with FakeOpenAI(responder=safe_judge()) as server:
        code = main(["eval-judge", "--pairs", str(pairs), "--constitution", str(ROOT / "constitutions" /
                     "concise_honest.yaml"), "--judge.backend=openai", f"--judge.base_url={server.base_url}",
                     "--judge.model", "fake-judge", "--json", str(out)])
    assert code == 0
    r = json.loads(out.read_text())
    assert r["n"] == 10 and r["accuracy"] == 1.0 and r["kappa"] == 1.0
    assert r["position_consistency"] == pytest.approx(10 / 11)  # the tie row gets 0.5 both ways
    assert r["human_ties"] == 1
    assert "all principles" in capsys.readouterr().out


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from rlaif.config import TinyModel
    from rlaif.train.tiny import build_tiny_model

    d = tmp_path_factory.mktemp("lm") / "model"
    texts = ["Which response is better? Answer A or B. A", "The answer is B.", "Rate it from 1 to 9: 7"] * 20
    build_tiny_model(texts, TinyModel(vocab_size=300, n_layer=1, n_head=2, n_embd=32, n_positions=1024), d, seed=0)
    return d


def test_transformers_backend_soft_labels_and_batching(tiny_lm):
    from conftest import CONSTITUTION

    from rlaif.config import JudgeConfig
    from rlaif.constitution import Constitution
    from rlaif.judges import make_judge

    c = Constitution.model_validate(CONSTITUTION)
    items = [(f"Question {i}?", f"Answer one {i}", f"Other answer {i * 3}", c.principles[i % 3]) for i in range(6)]
    cfg = dict(backend="transformers", model=str(tiny_lm), constitution="x", max_length=1024)
    batched = make_judge(JudgeConfig(**cfg, batch_size=8)).compare(items)
    single = make_judge(JudgeConfig(**cfg, batch_size=1)).compare(items)
    for b, s in zip(batched, single):
        assert b.status == "scored" and 0.0 < b.p_first < 1.0
        assert b.p_first == pytest.approx(s.p_first, abs=1e-4)
        assert len(b.orders) == 2 and b.position_consistent in (True, False)
        p_ab = b.orders[0]["p_a"]
        p_ba = b.orders[1]["p_a"]
        assert b.p_first == pytest.approx((p_ab + p_ba) / 2)
    pw = make_judge(JudgeConfig(**cfg, method="pointwise"))
    scores = pw.score(["q", "q"], ["short", "a longer answer here"], c.principles[0])
    assert all(1.0 <= v.score <= 9.0 for v in scores)


def test_ctrl_c_mid_judge_exits_130_quickly_and_resumes(project):
    with FakeOpenAI(latency_s=0.15, responder=safe_judge()) as server:
        args = llm_args(server, "--set", "judge.concurrency=4", "--set", "judge.batch_size=4")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-m", "rlaif", "judge", str(project / "pipeline.yaml"), *args],
                                cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while len(server.requests) < 12 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "judge finished before it could be interrupted"
        os.kill(proc.pid, signal.SIGINT)
        t0 = time.time()
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert time.time() - t0 < 5 and "Traceback" not in err
        db = sqlite3.connect(project / "run" / "store.sqlite")
        committed = db.execute("SELECT COUNT(*) FROM judge_cache").fetchone()[0]
        before = len(server.requests)
        assert main(["judge", str(project / "pipeline.yaml"), *args]) == 0
        total = db.execute("SELECT COUNT(*) FROM judge_cache").fetchone()[0]
    assert len(server.requests) - before == total - committed  # nothing committed was asked again


def test_calls_that_failed_are_made_again_by_the_next_run(project, capsys):
    """A judge call that failed after its retries is not cached, and its item is unscored; the stage is done,
    but the next run of it makes those calls again (and only those) instead of skipping it."""
    from rlaif.testing.fake_openai import Fault

    db = sqlite3.connect(project / "run" / "store.sqlite")
    failing = [True]
    with FakeOpenAI(responder=safe_judge(), fault_fn=lambda i, body: Fault.server_error(500)
                    if failing[0] and i % 3 == 0 else None) as server:
        args = ["judge", str(project / "pipeline.yaml"), *llm_args(server, "--set", "judge.max_retries=0")]
        assert main(args) == 0
        first = len(server.requests)
        info = json.loads(db.execute("SELECT info FROM stages WHERE name='judge'").fetchone()[0])
        failed, cached = info["failed_calls"], db.execute("SELECT COUNT(*) FROM judge_cache").fetchone()[0]
        assert failed > 0 and cached == first - failed
        failing[0] = False
        capsys.readouterr()
        assert main(args) == 0  # the same config
        assert len(server.requests) == first + failed  # only the failed calls again
        assert f"{failed} call(s) failed last time" in capsys.readouterr().err
        info = json.loads(db.execute("SELECT info FROM stages WHERE name='judge'").fetchone()[0])
        assert info["failed_calls"] == 0
        assert main(args) == 0  # nothing failed now: skipped
        assert len(server.requests) == first + failed and "skip judge" in capsys.readouterr().err
