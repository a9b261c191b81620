"""rlaif's PPO: loss functions on hand-computed tensors, a synthetic task with a known reward,
resuming a killed run, and the pipeline end to end with policy_training.algorithm=ppo."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from rlaif.config import PolicyTrainingConfig  # noqa: E402
from rlaif.train import ppo  # noqa: E402

# ---------------------------------------------------------------- a synthetic task with a known reward
WORDS = "yes no cat dog red blue one two sun moon tree rock fish bird milk tea up down left right".split()
PROMPTS = [" ".join(WORDS[i:i + 3]) for i in range(len(WORDS) - 3)]


def build_word_model(d: Path, seed: int = 0) -> Path:
    """A 1-layer GPT-2 over a 23-word vocabulary (word-level tokenizer), randomly initialised.

    Every word is one token, so a sampled response holds the target word 'yes' with a known
    probability (about 1 in 23 per token at the start)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<|endoftext|>", "<|pad|>", "[UNK]"] + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", pad_token="<|pad|>",
                                  unk_token="[UNK]")
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(vocab), n_positions=64, n_embd=32, n_layer=1, n_head=2, bos_token_id=0,
                     eos_token_id=0, pad_token_id=1)
    model = GPT2LMHeadModel(cfg)
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = 1, 0
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def count_yes(prompts, responses):
    """The known reward: how many times the response says 'yes'."""
    return [float(r.split().count("yes")) for r in responses]


def ppo_cfg(**ppo_kw) -> PolicyTrainingConfig:
    kw = dict(steps=14, rollout_batch_size=16, mini_batch_size=8, ppo_epochs=2, max_new_tokens=8, kl_coef=0.05,
              missing_eos_penalty=None)
    kw.update(ppo_kw)
    return PolicyTrainingConfig(algorithm="ppo", train={"learning_rate": 3e-3, "max_length": 48, "save_steps": 1000},
                                ppo=kw)


@pytest.fixture(scope="module")
def word_model(tmp_path_factory) -> Path:
    return build_word_model(tmp_path_factory.mktemp("word") / "model")


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is faster than two contended ones."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------- losses on hand-computed tensors
T = torch.tensor


def test_masked_mean_and_whiten():
    x, m = T([[1.0, 2.0, 3.0, 4.0]]), T([[1.0, 1.0, 1.0, 0.0]])
    assert ppo.masked_mean(x, m).item() == pytest.approx(2.0)
    # mean 2, unbiased variance 1: whitened [-1, 0, 1], masked entry 0
    assert torch.allclose(ppo.masked_whiten(x, m), T([[-1.0, 0.0, 1.0, 0.0]]), atol=1e-6)
    # shift_mean=False scales only: (x - 2) / 1 + 2
    assert torch.allclose(ppo.masked_whiten(x, m, shift_mean=False), T([[1.0, 2.0, 3.0, 0.0]]), atol=1e-6)
    # statistics over "two processes" holding the same data: n = 6, var = 4/5
    two = ppo.masked_whiten(x, m, reduce=lambda t: 2 * t)
    assert torch.allclose(two, T([[-1.0, 0.0, 1.0, 0.0]]) / math.sqrt(0.8), atol=1e-6)


def test_gae_by_hand():
    r, v, m = T([[0.0, 0.0, 1.0]]), T([[0.5, 0.5, 0.5]]), T([[1.0, 1.0, 1.0]])
    adv, ret = ppo.compute_gae(r, v, m, gamma=1.0, lam=1.0)  # Monte Carlo: return 1 everywhere
    assert torch.allclose(adv, T([[0.5, 0.5, 0.5]])) and torch.allclose(ret, T([[1.0, 1.0, 1.0]]))
    adv, ret = ppo.compute_gae(r, v, m, gamma=0.9, lam=0.5)
    # t=2: d=1-0.5=0.5; t=1: d=0.9*0.5-0.5=-0.05, A=-0.05+0.45*0.5; t=0: d=-0.05, A=-0.05+0.45*0.175
    assert torch.allclose(adv, T([[0.02875, 0.175, 0.5]]), atol=1e-6)
    assert torch.allclose(ret, T([[0.52875, 0.675, 1.0]]), atol=1e-6)
    # a response that ends after 2 tokens: the padded value (9) is never bootstrapped from
    adv, ret = ppo.compute_gae(T([[0.0, 1.0, 0.0]]), T([[0.2, 0.4, 9.0]]), T([[1.0, 1.0, 0.0]]), 1.0, 1.0)
    assert torch.allclose(adv, T([[0.8, 0.6, 0.0]]), atol=1e-6)
    assert torch.allclose(ret, T([[1.0, 1.0, 0.0]]), atol=1e-6)


def test_clipped_policy_loss_by_hand():
    old = T([[0.0, 0.0, 0.0]])
    new = torch.log(T([[1.5, 0.5, 1.1]]))
    adv, m = T([[1.0, -1.0, 1.0]]), T([[1.0, 1.0, 1.0]])
    loss, clipfrac, approx_kl = ppo.policy_loss(new, old, adv, m, cliprange=0.2)
    # ratio 1.5, A=+1 -> clipped to 1.2: -1.2; ratio 0.5, A=-1 -> clipped to 0.8: +0.8; ratio 1.1: -1.1
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 1.1) / 3)
    assert clipfrac.item() == pytest.approx(2 / 3)
    assert approx_kl.item() == pytest.approx(0.5 * float((new ** 2).mean()))
    # the gradient is zero through the clipped tokens and -A*ratio through the unclipped one
    new = new.clone().requires_grad_(True)
    ppo.policy_loss(new, old, adv, m, 0.2)[0].backward()
    assert torch.allclose(new.grad, T([[0.0, 0.0, -1.1 / 3]]), atol=1e-6)


def test_clipped_value_loss_by_hand():
    loss, clipfrac = ppo.value_loss(T([[0.5, 0.1]]), T([[0.0, 0.0]]), T([[1.0, 1.0]]), T([[1.0, 1.0]]), 0.2)
    # token 1: clipped value 0.2 -> max(0.25, 0.64) = 0.64 (clipped); token 2 inside the range: 0.81
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81) / 2)
    assert clipfrac.item() == pytest.approx(0.5)


def test_kl_estimates_and_per_token_rewards():
    lp, ref = torch.log(T([0.5])), torch.log(T([0.25]))
    assert ppo.kl_penalty(lp, ref, "k1").item() == pytest.approx(math.log(2))
    assert ppo.kl_penalty(lp, ref, "k3").item() == pytest.approx(0.5 - 1 + math.log(2))
    assert ppo.kl_penalty(lp, lp, "k3").item() == 0.0
    r = ppo.per_token_rewards(T([2.0]), T([[0.1, 0.2, 0.3]]), T([[1.0, 1.0, 0.0]]), kl_coef=0.5)
    assert torch.allclose(r, T([[-0.05, -0.1 + 2.0, 0.0]]))


def test_kl_controllers():
    fixed = ppo.FixedKLController(0.1)
    fixed.update(100.0, 64)
    assert fixed.value == 0.1
    ada = ppo.AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ada.update(12.0, 64)  # error clipped to +0.2
    assert ada.value == pytest.approx(0.1 * (1 + 0.2 * 64 / 10000))
    ada.update(6.0, 64)
    assert ada.value == pytest.approx(0.1 * (1 + 0.2 * 64 / 10000))


def test_config_defaults_and_hash_view():
    from pydantic import ValidationError

    p = PolicyTrainingConfig()
    assert p.algorithm == "dpo" and p.lora is None and p.bf16 is None and not p.gradient_checkpointing
    # DPO's hash does not move when another algorithm's settings change
    assert PolicyTrainingConfig(ppo={"kl_coef": 0.5}).hash_view() == p.hash_view()
    assert PolicyTrainingConfig(algorithm="ppo", ppo={"kl_coef": 0.5}).hash_view() != \
        PolicyTrainingConfig(algorithm="ppo").hash_view()
    with pytest.raises(ValidationError):
        PolicyTrainingConfig(ppo={"kl_coeff": 0.1})  # extra="forbid"
    with pytest.raises(ValidationError):
        PolicyTrainingConfig(algorithm="a2c")


def test_lora_without_peft_is_a_clear_error(monkeypatch):
    import sys

    from rlaif.config import LoraSettings
    from rlaif.errors import RlaifError

    monkeypatch.setitem(sys.modules, "peft", None)  # as if not installed
    with pytest.raises(RlaifError, match="pip install peft"):
        ppo.lora_config(LoraSettings())


# ---------------------------------------------------------------- the synthetic task
@pytest.mark.slow
def test_ppo_raises_known_reward_and_big_kl_pins_reference(word_model, tmp_path, one_thread):
    info = ppo.run_ppo(word_model, count_yes, PROMPTS, ppo_cfg(), tmp_path / "free", progress=None)
    h = info["history"]
    assert [x["step"] for x in h] == list(range(1, 15))
    start = sum(x["reward"] for x in h[:2]) / 2
    end = sum(x["reward"] for x in h[-3:]) / 3
    assert end > start + 1.5, (start, end)  # about 0.4 'yes' per response at the start, ~3.7 after 14 steps
    assert h[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # the first rollout comes from the reference itself
    assert max(x["kl"] for x in h) < 15.0
    for k in ("entropy", "clipfrac", "value_loss", "policy_loss", "approx_kl"):
        assert all(math.isfinite(x[k]) for x in h), k
    assert (tmp_path / "free" / "config.json").exists() and not (tmp_path / "free.partial").exists()

    pinned = ppo.run_ppo(word_model, count_yes, PROMPTS, ppo_cfg(kl_coef=100.0), tmp_path / "pinned", progress=None)
    hp = pinned["history"]
    # whitened advantages keep the step size, so the policy jitters around the reference, never leaves it
    assert max(x["kl"] for x in hp) < 0.6, [round(x["kl"], 3) for x in hp]
    assert sum(x["reward"] for x in hp[-3:]) / 3 < start + 0.5
    assert sum(x["kl"] for x in hp) < sum(x["kl"] for x in h) / 5


@pytest.mark.slow
def test_killed_ppo_resumes_from_checkpoint(word_model, tmp_path, monkeypatch, one_thread):
    from safetensors.torch import load_file

    cfg = ppo_cfg(steps=4).model_copy(update={"train": ppo_cfg().train.model_copy(update={"save_steps": 2})})
    full = ppo.run_ppo(word_model, count_yes, PROMPTS, cfg, tmp_path / "full", progress=None)

    real = ppo.PPOTrainer.optimize
    calls = {"n": 0}

    def killed_on_third(self, ro):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed during step 3, after the checkpoint of step 2
        return real(self, ro)

    monkeypatch.setattr(ppo.PPOTrainer, "optimize", killed_on_third)
    with pytest.raises(KeyboardInterrupt):
        ppo.run_ppo(word_model, count_yes, PROMPTS, cfg, tmp_path / "killed", progress=None)
    ckpts = sorted(p.name for p in (tmp_path / "killed.partial" / "checkpoints").iterdir())
    assert ckpts == ["step-2"]
    assert not (tmp_path / "killed").exists()
    state = json.loads((tmp_path / "killed.partial" / "checkpoints" / "step-2" / "ppo_state.json").read_text())
    assert state["step"] == 2 and state["reward_std"] > 0

    monkeypatch.setattr(ppo.PPOTrainer, "optimize", real)
    # a checkpoint of other settings is not resumed from
    shutil.copytree(tmp_path / "killed.partial", tmp_path / "other.partial")
    other = PolicyTrainingConfig.model_validate({**cfg.model_dump(), "ppo": {**cfg.ppo.model_dump(), "kl_coef": 0.2}})
    assert ppo.run_ppo(word_model, count_yes, PROMPTS, other, tmp_path / "other", progress=None)[
        "resumed_from_step"] is None

    resumed = ppo.run_ppo(word_model, count_yes, PROMPTS, cfg, tmp_path / "killed", progress=None)
    assert resumed["resumed_from_step"] == 2 and resumed["steps"] == 4
    assert [x["step"] for x in resumed["history"]] == [1, 2, 3, 4]
    # policy, value, optimizer, RNG and step restored: the resumed run is the uninterrupted one
    assert [round(x["reward"], 6) for x in resumed["history"]] == [round(x["reward"], 6) for x in full["history"]]
    a, b = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not (tmp_path / "killed.partial").exists()


@pytest.mark.slow
def test_ppo_with_lora_saves_a_merged_plain_model(word_model, tmp_path, one_thread):
    pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    cfg = PolicyTrainingConfig.model_validate(
        {**ppo_cfg(steps=2).model_dump(), "lora": {"r": 4, "alpha": 8, "target_modules": ["c_attn", "c_proj"]}})
    info = ppo.run_ppo(word_model, count_yes, PROMPTS, cfg, tmp_path / "lora", progress=None)
    assert info["steps"] == 2 and info["history"][0]["kl"] == pytest.approx(0.0, abs=1e-5)
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "lora"))  # a plain causal LM, no adapter files
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert not (tmp_path / "lora" / "adapter_config.json").exists()


# ---------------------------------------------------------------- the pipeline with algorithm=ppo
PPO_SETS = ["--set", "policy_training.algorithm=ppo", "--set", "policy_training.ppo.steps=3",
            "--set", "policy_training.ppo.rollout_batch_size=4", "--set", "policy_training.ppo.mini_batch_size=2",
            "--set", "policy_training.ppo.max_new_tokens=8", "--set", "policy_training.train.save_steps=2"]


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory):
    import conftest

    from rlaif.cli import main

    with conftest.scripted_backend_registered():
        proj = conftest.make_tiny_project(tmp_path_factory.mktemp("ppo_e2e") / "proj")
        assert main(["run", str(proj / "pipeline.yaml"), *PPO_SETS]) == 0
        yield proj


@pytest.mark.slow
def test_pipeline_end_to_end_with_ppo(ppo_run, capsys):
    import sqlite3

    from rlaif.cli import main

    run = ppo_run / "run"
    report = json.loads((run / "report.json").read_text())
    pol = report["policy"]
    assert pol["algorithm"] == "ppo"
    for k in ("reward_before", "reward_after", "kl", "win_rate_vs_ref"):
        assert isinstance(pol[k], float) and math.isfinite(pol[k]), (k, pol[k])
    assert 0.0 <= pol["win_rate_vs_ref"] <= 1.0
    md = (run / "report.md").read_text()
    assert "rl.png" in md and (run / "rl.png").stat().st_size > 1000
    db = sqlite3.connect(run / "store.sqlite")
    info = json.loads(db.execute("SELECT info FROM stages WHERE name='train-policy'").fetchone()[0])
    assert info["algorithm"] == "ppo" and info["steps"] == 3 and len(info["history"]) == 3
    assert {"reward", "kl", "entropy", "clipfrac", "value_loss"} <= set(info["history"][0])
    assert (run / "policy" / "config.json").exists() and not (run / "policy.partial").exists()
    # DPO's beta is not a PPO input: changing it re-runs nothing
    assert main(["run", str(ppo_run / "pipeline.yaml"), *PPO_SETS, "--set", "policy_training.beta=0.3"]) == 0
    assert "skip train-policy" in capsys.readouterr().err


@pytest.mark.slow
def test_pipeline_ppo_resumes_after_a_kill(ppo_run, tmp_path, monkeypatch):
    import sqlite3

    from rlaif.cli import main

    proj = tmp_path / "kill"
    shutil.copytree(ppo_run, proj)
    args = ["train-policy", str(proj / "pipeline.yaml"), *PPO_SETS, "--set", "policy_training.ppo.kl_coef=0.1"]
    real = ppo.PPOTrainer.optimize
    calls = {"n": 0}

    def flaky(self, ro):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, ro)

    monkeypatch.setattr(ppo.PPOTrainer, "optimize", flaky)
    assert main(args) == 130
    assert (proj / "run" / "policy.partial" / "checkpoints" / "step-2").is_dir()
    monkeypatch.setattr(ppo.PPOTrainer, "optimize", real)
    assert main(args) == 0
    db = sqlite3.connect(proj / "run" / "store.sqlite")
    info = json.loads(db.execute("SELECT info FROM stages WHERE name='train-policy'").fetchone()[0])
    assert info["resumed_from_step"] == 2 and info["steps"] == 3
