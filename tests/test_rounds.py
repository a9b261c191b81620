"""Iterative rounds (rounds: N / rlaif run --rounds N): round k+1 starts from round k's policy in
its own run directory; an unchanged re-run skips every round; a killed run resumes in its round."""

from __future__ import annotations

import json

import pytest

from rlaif.config import load_config


def test_rounds_config_and_round_config(tiny_project):
    from rlaif.rounds import round_config

    cfg = load_config(tiny_project / "pipeline.yaml", ["rounds=3"])
    assert cfg.rounds == 3
    r2 = round_config(cfg, tiny_project / "run" / "policy")
    assert r2.rounds == 1 and r2.policy.skip_sft and r2.policy.model == str((tiny_project / "run" / "policy").resolve())
    assert r2.judge == cfg.judge and r2.mix == cfg.mix and r2.policy_training == cfg.policy_training


@pytest.mark.parametrize("value,msg", [("0", "greater than or equal to 1"), ("x", "valid integer"),
                                       ("99", "less than or equal to 20")], ids=["zero", "not-int", "too-many"])
def test_bad_rounds_is_exit_2_one_line(tiny_project, capsys, value, msg):
    from rlaif.cli import main

    assert main(["run", str(tiny_project / "pipeline.yaml"), "--rounds", value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "rounds" in err and msg in err, err
    assert not (tiny_project / "run").exists()


@pytest.mark.slow
def test_two_rounds_chain_skip_and_resume_in_round(tiny_project, monkeypatch):
    from rlaif.cli import main
    from rlaif.hashing import dir_hash
    from rlaif.store import Store
    from rlaif.train import policy as policy_mod

    cfg = str(tiny_project / "pipeline.yaml")
    run, r2 = tiny_project / "run", tiny_project / "run" / "rounds" / "2"
    real = policy_mod.train_policy
    calls = {"n": 0}

    def killed_in_round_2(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed in round 2's train-policy
        return real(*a, **kw)

    monkeypatch.setattr(policy_mod, "train_policy", killed_in_round_2)
    assert main(["run", cfg, "--rounds", "2"]) == 130
    assert (run / "policy" / "config.json").exists() and not (r2 / "policy").exists()
    monkeypatch.setattr(policy_mod, "train_policy", real)

    assert main(["run", cfg, "--rounds", "2"]) == 0  # resumes in round 2: only its train-policy and eval run
    s1, s2 = Store(run / "store.sqlite", readonly=True), Store(r2 / "store.sqlite", readonly=True)
    # round 2 started from round 1's trained policy, sampled new candidates from it and judged them
    from safetensors.torch import load_file

    a, b = load_file(str(run / "policy" / "model.safetensors")), load_file(str(r2 / "sft" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert s2.stage("sft")["info"]["skipped_sft"] is True
    assert json.loads((r2 / "round_source.json").read_text())["policy_hash"] == dir_hash(run / "policy")
    gen1, gen2 = s1.stage("generate")["info"]["gen_hash"], s2.stage("generate")["info"]["gen_hash"]
    texts1 = {c.text for c in s1.candidates(gen1)}
    texts2 = {c.text for c in s2.candidates(gen2)}
    assert texts2 and texts2 != texts1
    assert s2.stage("judge")["info"]["ai_pairs"] > 0
    finished = {n: s2.stage(n)["finished_at"] for n in ("sft", "generate", "judge", "train-policy")}
    s1.close()
    s2.close()

    rows = json.loads((run / "rounds.json").read_text())
    assert [r["round"] for r in rows] == [1, 2]
    from rlaif.rounds_report import ROW_KEYS

    assert all(set(r) == set(ROW_KEYS) for r in rows)
    for key in ("harmless", "judge_win_rate_vs_sft", "rm_reward", "kl_vs_sft"):  # every round against SFT
        assert all(r[key] is not None for r in rows), key
    assert 0 <= rows[1]["judge_win_rate_vs_sft"] <= 1 and rows[1]["judge_win_rate_vs_previous"] is not None
    assert rows[0]["harmless_sft"] == rows[1]["harmless_sft"] and rows[0]["rm_reward_sft"] == rows[1]["rm_reward_sft"]
    r2_report = json.loads((r2 / "report.json").read_text())["policy"]
    assert r2_report["vs_sft"]["sft_policy"] == str(run / "sft")
    assert r2_report["vs_sft"]["kl"] != pytest.approx(r2_report["kl"])  # against SFT, not round 1's policy
    report = (run / "report.md").read_text()
    assert report.count("## Rounds") == 1 and "| 2 |" in report and (run / "rounds.png").exists()

    assert main(["run", cfg, "--rounds", "2"]) == 0  # unchanged: every stage of every round skipped
    s2 = Store(r2 / "store.sqlite", readonly=True)
    assert {n: s2.stage(n)["finished_at"] for n in finished} == finished
    s2.close()
    assert (run / "report.md").read_text().count("## Rounds") == 1


@pytest.mark.slow
def test_previous_policy_changed_then_killed_before_the_copy_resumes_with_the_new_policy(tiny_project, monkeypatch):
    """Round 1's policy changed in place; the run is killed after round 2 noted the new version but before its
    ``sft`` stage copied it: the resumed run must copy the new policy, not keep the old copy."""
    import shutil

    import torch
    from conftest import interrupt_on_call
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from rlaif import pipeline as pipeline_mod
    from rlaif.rounds import run_rounds

    cfg = load_config(tiny_project / "pipeline.yaml", ["rounds=2"])
    run, r2 = tiny_project / "run", tiny_project / "run" / "rounds" / "2"
    run_rounds(cfg.model_copy(update={"rounds": 1}), ("sft",))
    shutil.copytree(run / "sft", run / "policy")  # round 1's "trained" policy (only sft runs here)
    run_rounds(cfg, ("sft",))

    def weights(d):
        return load_file(str(d / "model.safetensors"))

    assert all(torch.equal(a, b) for a, b in zip(weights(run / "policy").values(), weights(r2 / "sft").values()))
    model = AutoModelForCausalLM.from_pretrained(str(run / "policy"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    model.save_pretrained(str(run / "policy"))  # round 1's policy retrained in place
    real = interrupt_on_call(monkeypatch, pipeline_mod, "open_run", 2)  # killed as round 2 opens
    with pytest.raises(KeyboardInterrupt):
        run_rounds(cfg, ("sft",))
    monkeypatch.setattr(pipeline_mod, "open_run", real)
    run_rounds(cfg, ("sft",))
    new, copied = weights(run / "policy"), weights(r2 / "sft")
    assert all(torch.equal(new[k], copied[k]) for k in new)


@pytest.mark.slow
def test_the_run_directory_stays_locked_while_its_later_rounds_run(tiny_project, monkeypatch):
    """Rounds >= 2 read round 1's outputs and end by rewriting its report.md and rounds.json: a second
    command must not get round 1's directory (one writer per run directory) until the last round is done."""
    import os
    import shutil
    import subprocess
    import sys

    from rlaif import pipeline as pipeline_mod
    from rlaif import runlock
    from rlaif.rounds import run_rounds

    cfg = load_config(tiny_project / "pipeline.yaml", ["rounds=2"])
    run = tiny_project / "run"
    run_rounds(cfg.model_copy(update={"rounds": 1}), ("sft",))
    shutil.copytree(run / "sft", run / "policy")  # round 1's "trained" policy (only sft runs here)
    from conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k != runlock.HELD_ENV} | {"PYTHONPATH": str(ROOT)}

    def other_process_locks() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", "import sys; from rlaif import runlock; runlock.acquire(sys.argv[1])",
                               str(run)], env=env, capture_output=True, text=True, timeout=60)

    real, tries = pipeline_mod.open_run, []

    def open_run(c, workdir=None, round_ctx=None):
        if round_ctx is not None:  # round 2 starts
            tries.append(other_process_locks())
        return real(c, workdir, round_ctx)

    monkeypatch.setattr(pipeline_mod, "open_run", open_run)
    run_rounds(cfg, ("sft",))
    assert len(tries) == 1 and tries[0].returncode != 0 and "in use by another rlaif command" in tries[0].stderr
    assert other_process_locks().returncode == 0  # released when the rounds are done
