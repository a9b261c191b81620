"""generate.backend openai: candidates sampled from a served policy (the project's fake OpenAI server)."""

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

from rlaif import chat
from rlaif.cli import main
from rlaif.config import GenerateConfig, ServedPolicy
from rlaif.errors import RlaifError
from rlaif.generate_openai import check_served
from rlaif.testing.fake_openai import FakeOpenAI, Fault, echo_text


@pytest.mark.parametrize("served, msg", [
    ({}, "generate.served.model"),
    ({"model": "m"}, "generate.served.base_url"),
    ({"model": "m", "api_key_env": "RLAIF_TEST_NO_SUCH_KEY"}, "RLAIF_TEST_NO_SUCH_KEY is not set"),
], ids=["no-model", "no-url", "key-env-unset"])
def test_bad_served_config_is_one_error(served, msg):
    with pytest.raises(RlaifError, match=msg):
        check_served(GenerateConfig(backend="openai", served=ServedPolicy(**served)))


def _answer(req):
    return f"served answer {req.get('seed')} to {req['messages'][-1]['content'][:20]}"


def served_args(server, *extra):
    return ["--set", "generate.backend=openai", "--set", f"generate.served.base_url={server.base_url}",
            "--set", "generate.served.model=fake-policy", "--set", "generate.served.timeout_s=5",
            "--set", "generate.served.max_retries=1", *extra]


@pytest.fixture
def project(tmp_path, scripted_backend):
    proj = make_tiny_project(tmp_path / "proj")
    assert main(["sft", str(proj / "pipeline.yaml"), "--set", "data.system_prompt=Be kind."]) == 0
    return proj


def _cands(proj):
    db = sqlite3.connect(proj / "run" / "store.sqlite")
    rows = db.execute("SELECT prompt_id, idx, text, policy_hash FROM candidates").fetchall()
    prompts = dict(db.execute("SELECT id, text FROM prompts WHERE split='train'").fetchall())
    db.close()
    return rows, prompts




@pytest.mark.slow
def test_served_candidates_have_the_local_shape(project):
    with FakeOpenAI(responder=echo_text(_answer)) as server:
        args = served_args(server, "--set", "data.system_prompt=Be kind.")
        assert main(["generate", str(project / "pipeline.yaml"), *args]) == 0
        rows, prompts = _cands(project)
        k = 3  # generate.num_candidates of the tiny project
        assert len(rows) == k * len(prompts)
        by_prompt = {}
        for pid, idx, text, policy in rows:
            by_prompt.setdefault(pid, []).append(idx)
            assert policy == "served:fake-policy" and text.startswith("served answer")
        assert set(by_prompt) == set(prompts) and all(sorted(v) == list(range(k)) for v in by_prompt.values())
        manifest = json.loads((project / "run" / "manifest.json").read_text())
        assert manifest["policy"]["candidates_sampled_by"] == ["served:fake-policy"]  # provenance: the served model
        # one request per prompt: its conversation (system prompt included), n = K, a seed, the served name
        assert len(server.requests) == len(prompts)
        sent = {chat.encode(r["messages"]) for r in server.requests}
        assert sent == set(prompts.values())
        assert all(r["messages"][0] == {"role": "system", "content": "Be kind."} for r in server.requests)
        assert all(r["n"] == k and isinstance(r["seed"], int) and r["model"] == "fake-policy"
                   for r in server.requests)
        # committed prompts are not asked again
        assert main(["generate", str(project / "pipeline.yaml"), *args]) == 0
        assert len(server.requests) == len(prompts)


@pytest.mark.slow
def test_failed_prompts_fail_the_stage_and_a_rerun_asks_only_them(project, capsys):
    bad = set()

    def fault_fn(i, body):
        if body["messages"][-1]["content"] in bad or (not bad and i == 1):
            bad.add(body["messages"][-1]["content"])
            return Fault.server_error(500, should_retry=False)
        return None

    with FakeOpenAI(responder=echo_text(_answer), fault_fn=fault_fn) as server:
        args = served_args(server, "--set", "data.system_prompt=Be kind.")
        assert main(["generate", str(project / "pipeline.yaml"), *args]) == 2
        assert "1 prompt(s) got no candidates" in capsys.readouterr().err
        rows, prompts = _cands(project)
        assert len({r[0] for r in rows}) == len(prompts) - 1
        n = len(server.requests)
        bad.clear()
        assert main(["generate", str(project / "pipeline.yaml"), *args]) == 0
        assert len(server.requests) == n + 1
        rows, _ = _cands(project)
        assert len({r[0] for r in rows}) == len(prompts)


@pytest.mark.slow
def test_kill_9_then_rerun_repeats_no_committed_prompt(project):
    with FakeOpenAI(latency_s=0.3, responder=echo_text(_answer)) as server:
        args = served_args(server, "--set", "data.system_prompt=Be kind.", "--set", "generate.batch_size=2",
                           "--set", "generate.served.concurrency=2")
        args += ["--set", "judge.backend=embedding"]  # the scripted judge exists only in this process
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-m", "rlaif", "generate", str(project / "pipeline.yaml"), *args],
                                cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while len(server.requests) < 5 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "generate finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        rows, prompts = _cands(project)
        done = {r[0] for r in rows}
        assert 0 < len(done) < len(prompts)
        before = len(server.requests)
        assert main(["generate", str(project / "pipeline.yaml"), *args]) == 0
        assert len(server.requests) - before == len(prompts) - len(done)  # committed prompts not redone
        rows, _ = _cands(project)
        assert len(rows) == 3 * len(prompts)


@pytest.mark.parametrize("name", ["gpu_dpo", "gpu_ppo"])
def test_gpu_pipelines_take_the_served_and_causal_rm_options(name):
    from rlaif.config import load_config

    cfg = load_config(ROOT / "pipelines" / f"{name}.yaml", [
        "generate.backend=openai", "generate.served.base_url=http://127.0.0.1:8001/v1",
        "generate.served.model=policy", "reward_model.base=Qwen/Qwen2.5-0.5B-Instruct"])
    check_served(cfg.generate)
    assert cfg.generate.served.model == "policy" and cfg.reward_model.base == "Qwen/Qwen2.5-0.5B-Instruct"
