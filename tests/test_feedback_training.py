"""Feedback reaches the trainers: the margin column of pairs made from ratings reaches trl's RewardTrainer
(and its loss), and thumbs train the policy through trl's KTOTrainer (tiny random Qwen2, real chat template)."""

from __future__ import annotations

import json

import pytest

from rlaif.layout import RunLayout

pytestmark = pytest.mark.slow

ROWS = [  # prompt, chosen, rejected, margin
    ("How do I boil an egg?", "Boil it for eight minutes.", "No.", 1.0),
    ("What is the capital of France?", "Paris.", "Rome, probably.", 0.0),
    ("Give one tip for sleeping better.", "Keep a regular bedtime.", "Stay up late.", 0.5),
    ("Name a fruit.", "An apple.", "A chair.", 0.25),
]
THUMBS = [("How do I make tea?", "Steep a tea bag in hot water for three minutes.", True),
          ("How do I make tea?", "Tea is bad.", False),
          ("Name a colour.", "Blue.", True),
          ("Name a colour.", "I will not.", False),
          ("What is 2+2?", "4.", True)]


def _cfg(tmp_path, overrides):
    import conftest

    from rlaif.config import load_config

    return load_config(conftest.make_tiny_project(tmp_path / "proj") / "pipeline.yaml", overrides)


def _pairs_dir(tmp_path, meta_feedback=None):
    from datasets import Dataset, DatasetDict

    pairs = [{"prompt": p, "chosen": c, "rejected": r, "source": "human", "weight": 1.0, "confidence": None,
              "prompt_id": None, "meta": json.dumps({"feedback": meta_feedback} if meta_feedback else {}), "margin": m}
             for p, c, r, m in ROWS]
    unpaired = [{"prompt": p, "completion": c, "label": up, "source": "file:t.jsonl:1", "meta": "{}"}
                for p, c, up in THUMBS]
    d = tmp_path / "pairs"
    DatasetDict({"train": Dataset.from_list(pairs), "eval": Dataset.from_list(pairs[:2]),
                 "unpaired": Dataset.from_list(unpaired)}).save_to_disk(str(d))
    return d


def test_margin_column_reaches_reward_trainer_and_its_loss(qwen2_dir, tmp_path, monkeypatch, scripted_backend):
    import torch
    import trl

    from rlaif.train import reward

    seen_margins, trainers = [], []
    orig_loss = trl.RewardTrainer.compute_loss

    def spy_loss(self, model, inputs, *a, **kw):
        if model.training:
            seen_margins.extend(inputs["margin"].tolist())
        return orig_loss(self, model, inputs, *a, **kw)

    monkeypatch.setattr(trl.RewardTrainer, "compute_loss", spy_loss)
    make = reward._weighted_trainer_cls

    def capture():
        cls = make()

        class Captured(cls):
            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                trainers.append(self)

        return Captured

    monkeypatch.setattr(reward, "_weighted_trainer_cls", capture)
    cfg = _cfg(tmp_path, [f"reward_model.base={qwen2_dir}", "reward_model.train.max_steps=2",
                          "reward_model.train.batch_size=4", "reward_model.train.max_length=128"])
    reward.train_reward_model(cfg.reward_model, cfg.seed, RunLayout(tmp_path, pairs=_pairs_dir(tmp_path),
                                                                     reward_model=tmp_path / "rm"), "cpu")
    assert sorted(set(seen_margins)) == [0.0, 0.25, 0.5, 1.0]  # trl's collator carried the column
    tr = trainers[0]
    assert "margin" in tr.train_dataset.column_names
    # The (weighted) loss is -log sigmoid(r_chosen - r_rejected - margin): a larger margin, a larger loss.
    tr.model.eval()
    batch = [dict(tr.train_dataset[i]) for i in range(4)]
    losses = []
    for m in (0.0, 3.0):
        inputs = tr.data_collator([{**b, "margin": m} for b in batch])
        with torch.no_grad():
            loss, out = tr.compute_loss(tr.model, dict(inputs), return_outputs=True)
        ch, rj = torch.chunk(out.logits.squeeze(-1), 2)
        assert loss.item() == pytest.approx(-torch.nn.functional.logsigmoid(ch - rj - m).mean().item(), rel=1e-5)
        losses.append(loss.item())
    assert losses[1] > losses[0]


@pytest.mark.parametrize("with_pairs", [False, True], ids=["thumbs-only", "with-pairs"])
def test_kto_trains_on_thumbs(with_pairs, qwen2_dir, tmp_path, monkeypatch, scripted_backend):
    import torch
    import trl
    from transformers import AutoModelForCausalLM

    from rlaif.train.kto import train_kto

    seen = []

    class Spy(trl.KTOTrainer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            seen.append(self)

    monkeypatch.setattr(trl, "KTOTrainer", Spy)
    cfg = _cfg(tmp_path, [f"policy.model={qwen2_dir}", "policy_training.algorithm=kto",
                          "policy_training.train.max_steps=2", "policy_training.train.batch_size=4",
                          "policy_training.train.max_length=128", "policy_training.train.learning_rate=1e-3",
                          "policy_training.kto.desirable_weight=1.5", "policy_training.kto.undesirable_weight=0.8",
                          f"policy_training.kto.with_pairs={str(with_pairs).lower()}"])
    info = train_kto(cfg.policy_training, cfg.seed, RunLayout(tmp_path, sft=qwen2_dir, pairs=_pairs_dir(tmp_path)),
                     "cpu")
    n_pairs = 2 * len(ROWS) if with_pairs else 0
    assert info["examples"] == len(THUMBS) + n_pairs and info["from_feedback"] == len(THUMBS)
    assert info["desirable"] == 3 + n_pairs // 2 and info["undesirable"] == 2 + n_pairs // 2
    args = seen[0].args
    assert (args.desirable_weight, args.undesirable_weight) == (1.5, 0.8) and not args.gradient_checkpointing
    assert sorted(seen[0].train_dataset["label"]) == sorted([t[2] for t in THUMBS] + [True, False] * (n_pairs // 2))
    before = AutoModelForCausalLM.from_pretrained(str(qwen2_dir)).state_dict()
    after = AutoModelForCausalLM.from_pretrained(str(tmp_path / "policy")).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    import math

    assert all(math.isfinite(h["train_loss"]) for h in info["history"] if "train_loss" in h)


def test_kto_leaves_out_pairs_made_from_thumbs_and_refuses_nothing(tmp_path):
    from datasets import load_from_disk

    from rlaif.errors import RlaifError
    from rlaif.train.kto import kto_examples

    dd = load_from_disk(str(_pairs_dir(tmp_path, meta_feedback="thumbs")))
    rows, counts = kto_examples(dd, True, 0)
    assert counts["from_pairs"] == 0 and len(rows) == len(THUMBS)
    assert [r["completion"] for r in kto_examples(dd, True, 0)[0]] == [r["completion"] for r in rows]  # stable
    empty = dd["train"].select([])
    from datasets import DatasetDict

    (tmp_path / "e").mkdir()
    DatasetDict({"train": empty, "eval": empty}).save_to_disk(str(tmp_path / "e" / "pairs"), num_shards={"train": 1, "eval": 1})
    from rlaif.config import PolicyTrainingConfig
    from rlaif.train.kto import train_kto

    with pytest.raises(RlaifError, match="kto found no examples"):
        train_kto(PolicyTrainingConfig(algorithm="kto"), 0, RunLayout(tmp_path / "e"), "cpu")


def test_pipeline_feedback_file_through_mix_rm_and_kto(tiny_project, monkeypatch):
    """Each form in a mix.human_labels file: stored with comments, pairs with margins in the dataset the reward
    model trains on, thumbs through KTO; the counts in the manifest and the report."""
    import conftest
    import yaml
    from datasets import load_from_disk

    from rlaif.cli import main
    from rlaif.store import Store

    rows = []
    for t in conftest.HELPFUL[:6]:
        rows += [{"prompt": t, "completion": "Here is a clear answer with steps.", "label": True},
                 {"prompt": t, "completion": "I am not able to help.", "label": False, "comment": "unhelpful"},
                 {"prompt": t, "completion": "Sure.", "rating": 2, "scale": 5},
                 {"prompt": t, "completion": "Step one: start. Step two: finish.", "rating": 5, "scale": 5}]
    rows += [{"prompt": t, "completion": "I can't help with that.", "label": True} for t in conftest.HARMFUL[:2]]
    rows += [{"prompt": t, "completions": ["No, that is not safe.", "Sure, do it.", "Maybe."], "ranking": [1, 3, 2]}
             for t in conftest.HARMFUL]
    conftest.write_jsonl(tiny_project / "feedback.jsonl", rows)
    cfg_path = tiny_project / "pipeline.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["mix"]["human_labels"] = ["feedback.jsonl"]
    cfg["mix"]["human_eval_fraction"] = 0.2
    cfg["policy_training"]["algorithm"] = "kto"
    cfg_path.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tiny_project)
    assert main(["run", str(cfg_path)]) == 0
    run = tiny_project / "run"
    with Store(run / "store.sqlite", readonly=True) as s:
        fb = s.feedback()
    assert len(fb) == 6 * 4 + 2 + 4 * 3 and sum(f.comment == "unhelpful" for f in fb) == 6
    mixs = json.loads((run / "manifest.json").read_text())["mix"]
    assert mixs["feedback_pairs_by_kind"] == {"thumbs": 6, "rating": 6, "rank": 12}
    assert mixs["thumbs_paired"] == 12 and mixs["thumbs_unpaired"] == 2 and mixs["unpaired"] == 14
    dd = load_from_disk(str(run / "pairs"))
    margins = {(r["chosen"], r["rejected"]): r["margin"] for split in ("train", "eval") for r in dd[split]}
    assert margins[("Step one: start. Step two: finish.", "Sure.")] == 0.75
    assert margins[("No, that is not safe.", "Sure, do it.")] == 1.0 and margins[("Maybe.", "Sure, do it.")] == 0.5
    assert sum(dd["unpaired"]["label"]) == 8
    report = json.loads((run / "report.json").read_text())
    assert report["mix"]["feedback_pairs"] == 24 and report["mix"]["feedback_pairs_rank"] == 12
    kto = report["policy"]["kto_examples"]
    assert kto["from_feedback"] == 14 and kto["desirable"] + kto["undesirable"] == kto["from_feedback"] + kto["from_pairs"]
