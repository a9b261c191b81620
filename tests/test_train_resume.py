"""A killed training stage resumes from its last checkpoint, not from step 0."""

from __future__ import annotations

import pytest
from conftest import make_tiny_project

from rlaif.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mixed_project(tmp_path_factory):
    """A tiny project run up to the mix stage (shared; each test works on a copy)."""
    import conftest

    with conftest.scripted_backend_registered():
        proj = make_tiny_project(tmp_path_factory.mktemp("resume") / "proj")
        for s in ("sft", "generate", "judge", "mix"):
            assert main([s, str(proj / "pipeline.yaml")]) == 0
        yield proj


@pytest.mark.parametrize("stage", ["train-rm", "train-policy"])
def test_killed_trainer_resumes_from_checkpoint(stage, mixed_project, tmp_path, monkeypatch):
    import shutil

    from transformers import TrainerCallback

    import rlaif.progress as progress

    proj = tmp_path / "proj"
    shutil.copytree(mixed_project, proj)
    cfg = str(proj / "pipeline.yaml")
    section = "reward_model" if stage == "train-rm" else "policy_training"
    args = [stage, cfg, "--set", f"{section}.train.max_steps=6", "--set", f"{section}.train.save_steps=2"]
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
    out = proj / "run" / ("reward_model" if stage == "train-rm" else "policy")
    assert not out.exists()  # nothing half-written where the model goes
    assert list((out.with_name(out.name + ".partial") / "checkpoints").glob("checkpoint-2"))
    seen.clear()
    kill_at["step"] = -1
    assert main(args) == 0
    assert seen[0] == 2  # resumed from checkpoint-2, not from step 0
    assert (out / "config.json").exists() and not out.with_name(out.name + ".partial").exists()


def test_initial_tiny_policy_is_rebuilt_unless_built_whole_from_the_same_inputs(tmp_path):
    """The untrained tiny model sft (and the critique stage) start from is kept in the stage's work folder for a
    resumed stage. A kill mid-build left a folder holding config.json and no tokenizer, taken as built; a stage
    stopped, then re-run with another tiny shape, started from the old model."""
    import json

    from rlaif.config import PolicyConfig
    from rlaif.train.sft import initial_policy

    rows = [{"prompt": "How do I boil pasta?", "response": "Boil water, then add the pasta."}]
    work = tmp_path / "sft.partial"

    def n_layer(pcfg):
        ref = initial_policy(pcfg, 0, rows, ["What is tea?"], work)
        return json.loads((tmp_path / ref / "config.json").read_text())["n_layer"]

    small = PolicyConfig(tiny={"n_layer": 1, "n_embd": 32, "n_head": 2, "vocab_size": 300})
    assert n_layer(small) == 1
    built = (work / "init" / "model.safetensors").stat().st_mtime_ns
    assert n_layer(small) == 1 and (work / "init" / "model.safetensors").stat().st_mtime_ns == built  # reused
    assert n_layer(small.model_copy(update={"tiny": small.tiny.model_copy(update={"n_layer": 2})})) == 2
    # A build cut after config.json: rebuilt, not loaded half-written.
    for f in (work / "init").iterdir():
        if f.name != "config.json":
            f.unlink()
    assert n_layer(small) == 1 and (work / "init" / "tokenizer.json").exists()
