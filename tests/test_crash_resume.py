"""Through the CLI on a tiny project: a half-written or other-config checkpoint is not resumed
from, and a judge server refusing the key stops the judge stage (exit 3, one line)."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
from conftest import make_tiny_project

from rlaif.cli import main
from rlaif.testing.fake_openai import FakeOpenAI, Fault

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mixed_project(tmp_path_factory):
    import conftest

    from rlaif import judges

    judges.BACKENDS["scripted"] = conftest.scripted_entry()
    proj = make_tiny_project(tmp_path_factory.mktemp("crash") / "proj")
    for s in ("sft", "generate", "judge", "mix"):
        assert main([s, str(proj / "pipeline.yaml")]) == 0
    yield proj
    judges.BACKENDS.pop("scripted", None)


def _killed_rm(proj, monkeypatch, extra=()):
    """train-rm killed at step 3 (checkpoint-2 saved); returns (args, seen steps, kill switch)."""
    from transformers import TrainerCallback

    import rlaif.progress as progress

    args = ["train-rm", str(proj / "pipeline.yaml"), "--set", "reward_model.train.max_steps=6",
            "--set", "reward_model.train.save_steps=2", *extra]
    seen: list[int] = []
    kill_at = {"step": 3}
    original = progress.use_rich_progress

    class Probe(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            seen.append(state.global_step)
            if state.global_step == kill_at["step"]:
                raise KeyboardInterrupt

    def patched(trainer, description):
        original(trainer, description)
        trainer.add_callback(Probe())

    monkeypatch.setattr(progress, "use_rich_progress", patched)
    assert main(args) == 130
    seen.clear()
    kill_at["step"] = -1
    return args, seen


def _damage_none(ck):
    pass


def _half_written_newer(ck):  # a kill while checkpoint-4 was being saved
    shutil.copytree(ck / "checkpoint-2", ck / "checkpoint-4")
    (ck / "checkpoint-4" / "trainer_state.json").unlink()
    (ck / "checkpoint-4" / "model.safetensors").write_bytes(b"")


def _cut_only(ck):  # a full disk while the only checkpoint was saved
    p = ck / "checkpoint-2" / "model.safetensors"
    p.write_bytes(p.read_bytes()[:1000])


@pytest.mark.parametrize("damage,first_step", [(_damage_none, 2), (_half_written_newer, 2), (_cut_only, 0)],
                         ids=["intact", "half-written-newer", "only-one-cut"])
def test_resume_skips_half_written_checkpoints(mixed_project, tmp_path, monkeypatch, damage, first_step):
    proj = tmp_path / "proj"
    shutil.copytree(mixed_project, proj)
    args, seen = _killed_rm(proj, monkeypatch)
    ck = proj / "run" / "reward_model.partial" / "checkpoints"
    damage(ck)
    assert main(args) == 0
    assert seen[0] == first_step
    assert (proj / "run" / "reward_model" / "config.json").exists()


def test_changed_config_does_not_resume_old_checkpoint(mixed_project, tmp_path, monkeypatch):
    proj = tmp_path / "proj"
    shutil.copytree(mixed_project, proj)
    args, seen = _killed_rm(proj, monkeypatch)
    assert main([*args, "--set", "reward_model.train.learning_rate=3e-4"]) == 0
    assert seen[0] == 0  # from scratch: the checkpoint belonged to learning_rate 1e-4


@pytest.mark.parametrize("status", [401, 403, 404])
def test_judge_stage_stops_on_auth_or_model_error(mixed_project, tmp_path, capsys, status):
    proj = tmp_path / "proj"
    shutil.copytree(mixed_project, proj)
    with FakeOpenAI(fault_fn=lambda i, body: Fault.server_error(status)) as server:
        rc = main(["judge", str(proj / "pipeline.yaml"), "--set", "judge.backend=openai",
                   "--set", f"judge.base_url={server.base_url}", "--set", "judge.model=fake"])
        calls = len(server.requests)
    assert rc == 3
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error")]
    assert len(err) == 1 and f"HTTP {status}" in err[0] and "Traceback" not in err[0]
    assert calls <= 8  # stopped at once (concurrency 8), not one refused call per comparison
    with sqlite3.connect(proj / "run" / "store.sqlite") as db:
        status_, info = db.execute("SELECT status, info FROM stages WHERE name = 'judge'").fetchone()
    assert status_ == "stopped" and f"HTTP {status}" in json.loads(info)["reason"]
