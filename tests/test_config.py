from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from rlaif.config import load_config
from rlaif.errors import RlaifError


def test_quickstart_loads_with_paths_resolved():
    cfg = load_config(ROOT / "pipelines" / "quickstart.yaml")
    assert cfg.name == "quickstart"
    assert Path(cfg.data.prompts).is_absolute() and Path(cfg.data.prompts).exists()
    assert Path(cfg.judge.constitution).exists()
    assert all(Path(p).exists() for p in cfg.mix.human_labels)
    assert cfg.policy.model == "tiny" and cfg.judge.model == "minilm"


def test_set_overrides_typed_values():
    cfg = load_config(ROOT / "pipelines" / "quickstart.yaml",
                      ["generate.num_candidates=2", "judge.pairs=all", "mix.human_weight=3.5", "seed=7"])
    assert cfg.generate.num_candidates == 2 and cfg.judge.pairs == "all"
    assert cfg.mix.human_weight == 3.5 and cfg.seed == 7


def test_set_changes_config_hash():
    a = load_config(ROOT / "pipelines" / "quickstart.yaml")
    b = load_config(ROOT / "pipelines" / "quickstart.yaml", ["generate.temperature=0.5"])
    assert a.hash != b.hash


def test_set_path_is_relative_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_config(ROOT / "pipelines" / "quickstart.yaml", ["judge.constitution=constitutions/concise_honest.yaml"])
    assert cfg.judge.constitution == str(ROOT / "constitutions" / "concise_honest.yaml")


def _cfg(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load((ROOT / "pipelines" / "quickstart.yaml").read_text())
    mutate(data)
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


BAD = {
    "unknown-top-key": (lambda d: d.update(extra_stage={}), "extra_stage", "unknown key"),
    "unknown-nested-key": (lambda d: d["generate"].update(num_candidate=3), "generate.num_candidate", "unknown key"),
    "wrong-type": (lambda d: d["generate"].update(num_candidates="many"), "generate.num_candidates", "integer"),
    "out-of-range": (lambda d: d["generate"].update(num_candidates=1), "generate.num_candidates", "greater"),
    "bad-literal": (lambda d: d["judge"].update(pairs="some"), "judge.pairs", "best_worst"),
    "missing-section": (lambda d: d.pop("judge"), "judge", "missing"),
    "bad-algorithm": (lambda d: d["policy_training"].update(algorithm="sgd"), "policy_training.algorithm", "dpo"),
    "unknown-dpo-loss": (lambda d: d["policy_training"].update(dpo={"loss_type": ["sigmoid", "sfft"]}),
                         "policy_training.dpo.loss_type.1", "sigmoid"),
    "dpo-loss-weights-count": (lambda d: d["policy_training"].update(dpo={"loss_type": ["sigmoid", "sft"],
                                                                          "loss_weights": [1.0]}),
                               "policy_training.dpo", "one weight per loss"),
    # YAML's true/false in a number field was read as 1/0 (`rounds: true` ran one round).
    "bool-for-int": (lambda d: d.update(rounds=True), "rounds", "expected a number, got true"),
    "bool-for-float": (lambda d: d["generate"].update(temperature=False), "generate.temperature",
                       "expected a number, got false"),
}


@pytest.mark.parametrize("case", sorted(BAD), ids=str)
def test_bad_config_names_file_line_field(case, tmp_path):
    mutate, field, msg = BAD[case]
    p = _cfg(tmp_path, mutate)
    with pytest.raises(RlaifError) as e:
        load_config(p)
    m = e.value.message
    assert m.startswith(f"{p}:"), m
    assert f": {field}:" in m and msg in m.lower(), m


@pytest.mark.parametrize("override,msg", [
    ("generate.num_candidates=zero", "--set generate.num_candidates"),
    ("generate.bogus=1", "--set generate.bogus"),
    ("novalue", "expected key.sub=value"),
    ("data=3", "--set data"),
], ids=["bad-type", "unknown-key", "no-equals", "section-as-scalar"])
def test_bad_override(override, msg):
    with pytest.raises(RlaifError) as e:
        load_config(ROOT / "pipelines" / "quickstart.yaml", [override])
    assert msg in e.value.message


def test_missing_and_malformed_config(tmp_path):
    with pytest.raises(RlaifError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\n  data: [\n")
    with pytest.raises(RlaifError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(p)


def test_gradient_checkpointing_is_in_the_sft_and_reward_model_hashes_only_when_on():
    """Off (the default) hashes as before the key existed; on re-trains (it can change the dropout stream)."""
    base = load_config(ROOT / "pipelines" / "quickstart.yaml")
    on = load_config(ROOT / "pipelines" / "quickstart.yaml",
                     ["policy.gradient_checkpointing=true", "reward_model.gradient_checkpointing=true"])
    assert on.policy.gradient_checkpointing and on.reward_model.gradient_checkpointing
    assert not base.policy.gradient_checkpointing and not base.reward_model.gradient_checkpointing
    assert set(base.policy.hash_view()) == {"model", "tiny", "sft", "skip_sft"}
    assert set(base.reward_model.hash_view()) == {"base", "train"}
    assert on.policy.hash_view() != base.policy.hash_view()
    assert on.reward_model.hash_view() != base.reward_model.hash_view()
    assert load_config(ROOT / "pipelines" / "quickstart.yaml", ["policy.sft.epochs=2"]).policy.hash_view() != \
        base.policy.hash_view()


def test_dpo_loss_section_hashes_only_when_set():
    """The default DPO loss keeps the hashes of runs made before the section existed; another loss re-trains."""
    base = load_config(ROOT / "pipelines" / "quickstart.yaml")
    assert "dpo" not in base.policy_training.hash_view()
    rpo = load_config(ROOT / "pipelines" / "quickstart.yaml", ["policy_training.dpo.loss_type=[sigmoid, sft]"])
    assert rpo.policy_training.dpo.loss_type == ["sigmoid", "sft"]
    assert rpo.policy_training.hash_view()["dpo"]["loss_type"] == ["sigmoid", "sft"]
    ppo = load_config(ROOT / "pipelines" / "quickstart.yaml",
                      ["policy_training.algorithm=ppo", "policy_training.dpo.loss_type=[ipo]"])
    assert "dpo" not in ppo.policy_training.hash_view()
