"""Training stages on real chat architectures (tiny random Qwen2 / Llama): the text each trainer sees is the
chat-template rendering, and a causal LM works as the reward-model base."""

from __future__ import annotations

import pytest

from rlaif import chat
from rlaif.layout import RunLayout

pytestmark = pytest.mark.slow

PAIRS = [
    ("How do I boil an egg?", "Boil it for eight minutes.", "No."),
    (chat.encode([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Rain poem?"}]),
     "Rain taps the window.", "I will not."),
    ("What is the capital of France?", "Paris.", "Rome, probably."),
    ("Give one tip for sleeping better.", "Keep a regular bedtime.", "Stay up late."),
]


def _cfg(tmp_path, overrides):
    import conftest

    from rlaif.config import load_config

    proj = conftest.make_tiny_project(tmp_path / "proj")
    return load_config(proj / "pipeline.yaml", overrides)


def _pairs_dir(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = [{"prompt": p, "chosen": c, "rejected": r, "source": "ai", "weight": 1.0, "confidence": 1.0,
             "prompt_id": str(i), "meta": "{}"} for i, (p, c, r) in enumerate(PAIRS)]
    d = tmp_path / "pairs"
    DatasetDict({"train": Dataset.from_list(rows), "eval": Dataset.from_list(rows[:2])}).save_to_disk(str(d))
    return d


def test_dpo_trains_on_the_template_rendering(chat_model_dir_any, tmp_path, monkeypatch, scripted_backend):
    import trl
    from transformers import AutoTokenizer

    from rlaif.train.dpo import train_dpo

    seen = []

    class Spy(trl.DPOTrainer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            seen.append(self)

    monkeypatch.setattr(trl, "DPOTrainer", Spy)
    cfg = _cfg(tmp_path, [f"policy.model={chat_model_dir_any}", "policy_training.train.max_steps=2",
                          "policy_training.train.batch_size=2",
                          "policy_training.train.max_length=256"])
    layout = RunLayout(tmp_path, sft=chat_model_dir_any, pairs=_pairs_dir(tmp_path))
    info = train_dpo(cfg.policy_training, cfg.seed, layout, "cpu")
    assert info["train_pairs"] == len(PAIRS) and (tmp_path / "policy" / "config.json").exists()
    tok = AutoTokenizer.from_pretrained(str(chat_model_dir_any))
    ds = seen[0].train_dataset
    for row, (p, c, r) in zip(ds, PAIRS):
        for key, resp in (("chosen_ids", c), ("rejected_ids", r)):
            want = chat.full_text(tok, p, resp)
            assert tok.decode(row["prompt_ids"] + row[key]) == want
            assert row["prompt_ids"] + row[key] == tok(want, add_special_tokens=False)["input_ids"]
        assert tok.decode(row["prompt_ids"]) == chat.policy_input(tok, p)


def test_dpo_loss_mix_reaches_trl_and_trains(qwen2_dir, tmp_path, monkeypatch, scripted_backend):
    """policy_training.dpo.loss_type / loss_weights (e.g. RPO: DPO + NLL of the chosen) go to trl's DPOConfig."""
    import torch
    import trl
    from transformers import AutoModelForCausalLM

    seen = []

    class Spy(trl.DPOTrainer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            seen.append(self)

    monkeypatch.setattr(trl, "DPOTrainer", Spy)
    from rlaif.train.dpo import train_dpo

    cfg = _cfg(tmp_path, [f"policy.model={qwen2_dir}", "policy_training.train.max_steps=2",
                          "policy_training.train.batch_size=2", "policy_training.train.max_length=256",
                          "policy_training.dpo.loss_type=[sigmoid, sft]", "policy_training.dpo.loss_weights=[1.0, 0.5]"])
    train_dpo(cfg.policy_training, cfg.seed, RunLayout(tmp_path, sft=qwen2_dir, pairs=_pairs_dir(tmp_path)), "cpu")
    args = seen[0].args
    assert list(args.loss_type) == ["sigmoid", "sft"] and list(args.loss_weights) == [1.0, 0.5]
    before = AutoModelForCausalLM.from_pretrained(str(qwen2_dir)).state_dict()
    after = AutoModelForCausalLM.from_pretrained(str(tmp_path / "policy")).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_sft_trains_on_the_template_rendering(qwen2_dir, tmp_path, monkeypatch, scripted_backend):
    import trl
    from transformers import AutoTokenizer

    from rlaif.records import load_sft
    from rlaif.train.sft import run_sft

    seen = []

    class Spy(trl.SFTTrainer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            seen.append(self)

    monkeypatch.setattr(trl, "SFTTrainer", Spy)
    cfg = _cfg(tmp_path, [f"policy.model={qwen2_dir}", "policy.sft.max_steps=1", "policy.sft.max_length=256"])
    run_sft(cfg.policy, cfg.seed, RunLayout(tmp_path), [], "cpu", cfg.data.system_prompt)
    tok = AutoTokenizer.from_pretrained(str(qwen2_dir))
    rows = load_sft(cfg.policy.sft_data)
    row = seen[0].train_dataset[0]
    assert tok.decode(row["input_ids"]) == chat.full_text(tok, rows[0]["prompt"], rows[0]["response"])
    n = sum(1 for lab in row["labels"] if lab == -100)  # prompt tokens are masked out of the loss
    assert tok.decode(row["input_ids"][:n]) == chat.policy_input(tok, rows[0]["prompt"])
    assert tok.decode(row["input_ids"][n:]).endswith("<|im_end|>\n")  # the turn's end is trained
    assert not seen[0].args.gradient_checkpointing  # trl's SFTConfig defaults it on; policy.gradient_checkpointing off


def test_trl_export_trains_trl_dpo_as_is(qwen2_dir, tmp_path):
    """`rlaif labels export --format trl` writes TRL's conversational preference format: trl's own
    DPOTrainer loads and trains on it with no conversion."""
    import json

    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from rlaif.cli import main
    from rlaif.records import HumanLabel
    from rlaif.store import Store

    run = tmp_path / "run"
    run.mkdir()
    with Store(run / "store.sqlite") as s:
        s.add_human_labels([HumanLabel(p, c, r, "chosen", f"file:l.jsonl:{i}") for i, (p, c, r) in enumerate(PAIRS)])
    out = tmp_path / "prefs.jsonl"
    assert main(["labels", "export", str(run), "--source", "human", "--format", "trl", "-o", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == len(PAIRS) and set(rows[0]) == {"prompt", "chosen", "rejected", "rlaif_source"}
    assert {r["rlaif_source"] for r in rows} == {"human"}  # provenance; trl ignores the extra column
    multi = next(r for r in rows if len(r["prompt"]) > 1)
    assert [m["role"] for m in multi["prompt"]] == ["system", "user", "assistant", "user"]
    assert multi["chosen"] == [{"role": "assistant", "content": "Rain taps the window."}]

    ds = load_dataset("json", data_files=str(out), split="train")
    tok = AutoTokenizer.from_pretrained(str(qwen2_dir))
    model = AutoModelForCausalLM.from_pretrained(str(qwen2_dir))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=2, per_device_train_batch_size=2,
                     learning_rate=1e-2, report_to=[], use_cpu=True, save_strategy="no", logging_steps=1)
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    trainer.train()
    row = trainer.train_dataset[0]
    assert tok.decode(row["prompt_ids"]) == chat.policy_input(tok, chat.encode(rows[0]["prompt"]))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_causal_lm_reward_model(chat_model_dir_any, tmp_path, scripted_backend):
    """A decoder (Qwen2 / Llama) as the reward-model base: sequence-classification head, chat-template
    input, pad token handled; the scorer batches by length and gives the same scores as one by one."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from rlaif.train.reward import RewardScorer, encode, train_reward_model

    cfg = _cfg(tmp_path, [f"reward_model.base={chat_model_dir_any}", "reward_model.train.max_steps=3",
                          "reward_model.train.batch_size=2", "reward_model.train.learning_rate=1e-2",
                          "reward_model.train.max_length=256"])
    out = tmp_path / "rm"
    info = train_reward_model(cfg.reward_model, cfg.seed, RunLayout(tmp_path, pairs=_pairs_dir(tmp_path), reward_model=out),
                              "cpu")
    assert info["train_pairs"] == len(PAIRS)
    trained = load_file(str(out / "model.safetensors"))
    base = load_file(str(chat_model_dir_any / "model.safetensors"))
    assert any("score" in k for k in trained)
    shared = set(base) & set(trained)
    assert shared and any(not torch.equal(base[k], trained[k]) for k in shared)  # the decoder was trained
    tok = AutoTokenizer.from_pretrained(str(out))
    p, c, _ = PAIRS[1]
    assert tok.decode(encode(tok, p, c, 256)) == chat.full_text(tok, p, c)  # the chat template's rendering
    scorer = RewardScorer(out, "cpu", 256, batch_size=3)
    assert scorer.model.config.pad_token_id is not None
    prompts = [x[0] for x in PAIRS] * 2
    responses = [x[1] for x in PAIRS] + [x[2] for x in PAIRS]
    batched = scorer.score(prompts, responses)
    single = [scorer.score([q], [r])[0] for q, r in zip(prompts, responses)]
    assert batched == pytest.approx(single, abs=1e-4)
    assert len({round(x, 5) for x in batched}) > 1


def test_length_batches_cover_everything_once():
    from rlaif.batching import length_batches

    b = length_batches([3, 9, 1, 7, 5], 2)
    assert b == [[1, 3], [4, 0], [2]]


def test_transformers_judge_with_a_qwen2_model(qwen2_dir):
    """The transformers judge runs on the Qwen2-architecture model (its chat template, no BOS, pad != eos)."""
    from conftest import CONSTITUTION

    from rlaif.config import JudgeConfig
    from rlaif.constitution import Constitution
    from rlaif.judges import make_judge

    c = Constitution.model_validate(CONSTITUTION)
    items = [(p, a, b, c.principles[i % 3]) for i, (p, a, b) in enumerate(PAIRS)]
    # the fixture's small byte-level vocabulary makes a judge prompt about 1,000 tokens; a longer max_length
    # than its 512 positions is fine for a RoPE model (a prompt over max_length would be unscored)
    judge = make_judge(JudgeConfig(backend="transformers", model=str(qwen2_dir), constitution="x", max_length=2048))
    out = judge.compare(items)
    assert len(out) == len(items)
    assert all(v.status == "scored" and 0.0 < v.p_first < 1.0 for v in out)
