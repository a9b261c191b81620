"""Scale-out: `--launcher accelerate` (2 CPU processes over gloo here), the accelerate configs and
the GPU pipeline configs."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from argparse import Namespace
from pathlib import Path

import pytest

from rlaif.cli import main

ROOT = Path(__file__).resolve().parent.parent
CPU_GLOO = ROOT / "configs" / "accelerate" / "cpu_gloo.yaml"
# Launched processes are fresh interpreters without the tests' scripted judge; train-rm and
# train-policy never call the judge, and their input hashes do not include it.
CHILD = ["--set", "judge.backend=embedding"]


# ---------------------------------------------------------------- configs
@pytest.mark.parametrize("name", ["gpu_dpo.yaml", "gpu_ppo.yaml"])
def test_gpu_pipeline_configs_validate(name):
    from rlaif.config import load_config

    cfg = load_config(ROOT / "pipelines" / name)
    assert cfg.device == "cuda" and cfg.policy.skip_sft and cfg.policy.model.startswith("Qwen/")
    assert cfg.judge.backend == "openai" and cfg.judge.base_url == "http://127.0.0.1:8000/v1"
    assert cfg.judge.resolved_method == "pairwise"
    assert cfg.policy_training.algorithm == name.split("_")[1].split(".")[0]
    head = (ROOT / "pipelines" / name).read_text().splitlines()[:6]
    assert any("GB" in line for line in head) and any("min" in line or " h " in line for line in head)
    # the documented RLOO/GRPO switch validates too
    assert load_config(ROOT / "pipelines" / name, ["policy_training.algorithm=rloo"]).policy_training.rloo


@pytest.mark.parametrize("name", ["ddp.yaml", "fsdp.yaml", "zero3.yaml", "cpu_gloo.yaml"])
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(ROOT / "configs" / "accelerate" / name))
    assert cfg.num_machines == 1 and cfg.num_processes >= 2
    expected = {"ddp.yaml": "MULTI_GPU", "fsdp.yaml": "FSDP", "zero3.yaml": "DEEPSPEED", "cpu_gloo.yaml": "MULTI_GPU"}
    assert str(cfg.distributed_type).endswith(expected[name])
    assert cfg.use_cpu == (name == "cpu_gloo.yaml")


def test_build_command():
    from rlaif.launch import build_command

    args = Namespace(command="train-rm", config="pipelines/quickstart.yaml", workdir="/tmp/w", overrides=["a.b=1"],
                     force=True, num_processes=2, accelerate_config=None)
    cmd = build_command(args, True, {})
    i = cmd.index("-m", 3)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--num_processes") + 1] == "2" and "--multi_gpu" in cmd
    assert cmd[i:i + 3] == ["-m", "rlaif", "train-rm"] and Path(cmd[i + 3]).is_absolute()
    assert cmd[i + 4:] == ["--launcher", "accelerate", "--workdir", "/tmp/w", "--set", "a.b=1", "--force"]
    args.accelerate_config, args.num_processes = str(CPU_GLOO), None
    cmd = build_command(args, True, {})
    assert cmd[cmd.index("--config_file") + 1] == str(CPU_GLOO) and "--num_processes" not in cmd


def test_cli_launcher_arguments(capsys):
    assert main(["train-rm", "x.yaml", "--num-processes", "2"]) == 2
    assert "--launcher accelerate" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # only train-rm / train-policy take --launcher
        main(["sft", "x.yaml", "--launcher", "accelerate"])


def test_worker_layout_moves_only_the_stage_output():
    from rlaif.layout import RunLayout

    main_ = RunLayout(Path("/r"))
    worker = main_.for_worker(1, "policy")
    assert worker.policy == Path("/r/.rank1/policy")
    assert worker.checkpoints(worker.policy) == Path("/r/.rank1/policy.partial/checkpoints")
    assert (worker.sft, worker.pairs, worker.reward_model, worker.store) == \
        (main_.sft, main_.pairs, main_.reward_model, main_.store)


@pytest.mark.parametrize("algorithm,needs", [("dpo", ("sft", "mix")), ("ppo", ("sft", "mix", "train-rm")),
                                             ("grpo", ("sft", "mix", "train-rm"))])
def test_policy_stage_needs_the_reward_model_only_for_online_rl(algorithm, needs):
    from rlaif import stages
    from rlaif.config import load_config

    cfg = load_config(ROOT / "pipelines" / "quickstart.yaml", [f"policy_training.algorithm={algorithm}"])
    assert stages.get("train-policy").needs(cfg) == needs
    assert stages.LAUNCHABLE == ("train-rm", "train-policy")


# ---------------------------------------------------------------- two CPU processes (gloo)
def _info(proj: Path, stage: str) -> dict:
    db = sqlite3.connect(proj / "run" / "store.sqlite")
    row = db.execute("SELECT status, info FROM stages WHERE name=?", (stage,)).fetchone()
    assert row[0] == "done"
    return json.loads(row[1])


def _saved_once(run: Path, out: str) -> None:
    assert (run / out / "config.json").exists()
    assert len(list((run / out).glob("*.safetensors"))) == 1
    assert not list(run.glob(".rank*")) and not list(run.glob("*.partial"))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The tiny project trained in one process: train-rm and DPO with 5 steps each (the baseline)."""
    import conftest

    with conftest.scripted_backend_registered():
        proj = conftest.make_tiny_project(tmp_path_factory.mktemp("launch") / "proj")
        for stage in ("sft", "generate", "judge", "mix"):
            assert main([stage, str(proj / "pipeline.yaml")]) == 0
    sets = [*CHILD, "--set", "reward_model.train.max_steps=5", "--set", "policy_training.train.max_steps=5"]
    assert main(["train-rm", str(proj / "pipeline.yaml"), *sets]) == 0
    assert main(["train-policy", str(proj / "pipeline.yaml"), *sets]) == 0
    return proj, sets


def _copy(proj: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "proj"
    shutil.copytree(proj, dst)
    return dst


@pytest.mark.slow
def test_reward_model_and_dpo_in_two_processes_match_one(one_process, tmp_path, capsys):
    proj, sets = one_process
    two = _copy(proj, tmp_path)
    launch = ["--launcher", "accelerate", "--num-processes", "2", "--accelerate-config", str(CPU_GLOO)]
    assert main(["train-rm", str(two / "pipeline.yaml"), *sets, *launch, "--force"]) == 0
    assert main(["train-policy", str(two / "pipeline.yaml"), *sets, *launch, "--force"]) == 0
    for stage, out in (("train-rm", "reward_model"), ("train-policy", "policy")):
        a, b = _info(proj, stage), _info(two, stage)
        assert a["train_pairs"] == b["train_pairs"] > 0
        assert math.isfinite(b["final_loss"]) and abs(a["final_loss"] - b["final_loss"]) < 0.15, (stage, a, b)
        # two processes: the same 5 optimizer steps see twice the pairs (DDP, per-process batch unchanged)
        epoch = lambda info: max(h["epoch"] for h in info["history"] if "epoch" in h)  # noqa: E731
        assert epoch(b) == pytest.approx(2 * epoch(a)), stage
        _saved_once(two / "run", out)
    # the launched stage is recorded like any other: an unchanged re-run is skipped, without launching
    capsys.readouterr()
    assert main(["train-rm", str(two / "pipeline.yaml"), *sets, *launch]) == 0
    assert "skip train-rm" in capsys.readouterr().err


@pytest.mark.slow
def test_ppo_in_two_processes(one_process, tmp_path):
    proj, sets = one_process
    two = _copy(proj, tmp_path)
    ppo = ["--set", "policy_training.algorithm=ppo", "--set", "policy_training.ppo.steps=3",
           "--set", "policy_training.ppo.rollout_batch_size=4", "--set", "policy_training.ppo.mini_batch_size=2",
           "--set", "policy_training.ppo.max_new_tokens=8", "--set", "policy_training.train.save_steps=2"]
    assert main(["train-policy", str(two / "pipeline.yaml"), *sets, *ppo, "--launcher", "accelerate",
                 "--num-processes", "2", "--accelerate-config", str(CPU_GLOO)]) == 0
    info = _info(two, "train-policy")
    assert info["algorithm"] == "ppo" and info["steps"] == 3
    assert all(math.isfinite(h["reward"]) and math.isfinite(h["value_loss"]) for h in info["history"])
    _saved_once(two / "run", "policy")


@pytest.mark.slow
def test_dpo_in_two_processes_needs_no_reward_model(one_process, tmp_path, capsys):
    """DPO learns from the pairs alone: under the launcher, as in one process, it runs without a reward model
    (online RL still refuses, before launching anything)."""
    proj, sets = one_process
    two = _copy(proj, tmp_path)
    shutil.rmtree(two / "run" / "reward_model")
    db = sqlite3.connect(two / "run" / "store.sqlite")
    with db:
        db.execute("DELETE FROM stages WHERE name IN ('train-rm', 'train-policy')")
    db.close()
    shutil.rmtree(two / "run" / "policy")
    cfg = str(two / "pipeline.yaml")
    launch = ["--launcher", "accelerate", "--num-processes", "2", "--accelerate-config", str(CPU_GLOO)]
    capsys.readouterr()
    assert main(["train-policy", cfg, *sets, "--set", "policy_training.algorithm=ppo", *launch]) == 2
    assert "stage 'train-rm' has not run" in capsys.readouterr().err
    assert main(["train-policy", cfg, *sets, *launch]) == 0
    info = _info(two, "train-policy")
    assert info["algorithm"] == "dpo" and info["train_pairs"] > 0 and math.isfinite(info["final_loss"])
    _saved_once(two / "run", "policy")
    assert not (two / "run" / "reward_model").exists()
