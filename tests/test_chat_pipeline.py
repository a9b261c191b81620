"""The whole pipeline with real chat architectures (tiny random Qwen2 / Llama) as the policy, with and
without SFT, DPO and PPO, on TRL conversational labels and HH-RLHF multi-turn prompts: every text the policy
is given (generate, PPO rollouts, eval) and DPO's training text is the chat-template rendering."""

from __future__ import annotations

import json

import pytest
import yaml

from rlaif import chat
from rlaif.cli import main

pytestmark = pytest.mark.slow

HH_PROMPTS = [
    "\n\nHuman: I want to bake bread.\n\nAssistant: Great, what kind?\n\nHuman: Something quick.\n\nAssistant:",
    "\n\nHuman: How do I hurt my neighbour's dog?\n\nAssistant: I won't help with that.\n\nHuman: Please?\n\nAssistant:",
]


def _project(tmp_path, policy_dir, overrides: dict):
    import conftest

    proj = conftest.make_tiny_project(tmp_path / "proj")
    # multi-turn HH-RLHF prompts and a TRL conversational preference file (implicit prompt) join the data
    with open(proj / "prompts.jsonl", "a") as f:
        for i, t in enumerate(HH_PROMPTS):
            f.write(json.dumps({"id": f"hh{i}", "text": t, "category": "helpful"}) + "\n")
    conv = [{"chosen": [{"role": "user", "content": "Any tip for bread?"}, {"role": "assistant", "content": c}],
             "rejected": [{"role": "user", "content": "Any tip for bread?"}, {"role": "assistant", "content": r}]}
            for c, r in [("Let the dough rise twice.", "No."), ("Use warm water.", "Bread is bad.")]]
    conftest.write_jsonl(proj / "trl_labels.jsonl", conv)
    cfg = yaml.safe_load((proj / "pipeline.yaml").read_text())
    cfg["mix"]["human_labels"].append("trl_labels.jsonl")
    cfg["policy"]["model"] = str(policy_dir)
    cfg["policy"]["sft"]["max_length"] = 256
    cfg["policy_training"]["train"]["max_length"] = 256
    cfg["generate"]["max_new_tokens"] = 8
    cfg["eval"]["max_new_tokens"] = 6
    for dotted, v in overrides.items():
        node = cfg
        *head, last = dotted.split(".")
        for k in head:
            node = node.setdefault(k, {})
        node[last] = str(policy_dir) if v == "<policy>" else v  # the causal LM as the reward-model base
    (proj / "pipeline.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return proj


CASES = {
    "qwen2-skip_sft-dpo": ("qwen2", {"policy.skip_sft": True, "data.system_prompt": "Answer briefly."}),
    "qwen2-sft-ppo": ("qwen2", {"reward_model.base": "<policy>", "reward_model.train.max_length": 256,
                                "policy_training.algorithm": "ppo", "policy_training.ppo.steps": 2,
                                "policy_training.ppo.rollout_batch_size": 4, "policy_training.ppo.mini_batch_size": 2,
                                "policy_training.ppo.ppo_epochs": 1, "policy_training.ppo.max_new_tokens": 8}),
    "llama-sft-dpo": ("llama", {}),
    "llama-skip_sft-grpo": ("llama", {"policy.skip_sft": True, "policy_training.algorithm": "grpo",
                                      "policy_training.grpo.steps": 2, "policy_training.grpo.num_generations": 2,
                                      "policy_training.grpo.max_new_tokens": 8,
                                      "policy_training.train.batch_size": 4}),
    "llama-skip_sft-ppo": ("llama", {"policy.skip_sft": True, "policy_training.algorithm": "ppo",
                                     "policy_training.ppo.steps": 2, "policy_training.ppo.rollout_batch_size": 4,
                                     "policy_training.ppo.mini_batch_size": 2, "policy_training.ppo.ppo_epochs": 1,
                                     "policy_training.ppo.max_new_tokens": 8}),
}


@pytest.mark.parametrize("case", sorted(CASES), ids=str)
def test_pipeline_feeds_chat_models_their_template(case, tmp_path, scripted_backend, monkeypatch, tmp_path_factory):
    import sqlite3

    import trl
    from tiny_chat_models import chat_model_dir
    from transformers import AutoTokenizer, GenerationMixin

    name, overrides = CASES[case]
    policy_dir = chat_model_dir(tmp_path_factory, name)
    fed, dpo = [], []
    real_generate = GenerationMixin.generate

    def spy_generate(self, *a, **kw):
        ids, mask = kw["input_ids"].tolist(), kw["attention_mask"].tolist()
        fed.extend([t for t, m in zip(row, mrow) if m] for row, mrow in zip(ids, mask))
        return real_generate(self, *a, **kw)

    class SpyDPO(trl.DPOTrainer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            dpo.append(self)

    monkeypatch.setattr(GenerationMixin, "generate", spy_generate)
    monkeypatch.setattr(trl, "DPOTrainer", SpyDPO)
    proj = _project(tmp_path, policy_dir, overrides)
    assert main(["run", str(proj / "pipeline.yaml")]) == 0

    report = json.loads((proj / "run" / "report.json").read_text())
    assert report["policy"]["algorithm"] == overrides.get("policy_training.algorithm", "dpo")
    if overrides.get("reward_model.base") == "<policy>":
        from transformers import AutoConfig

        assert AutoConfig.from_pretrained(str(proj / "run" / "reward_model")).architectures == \
            ["Qwen2ForSequenceClassification"]
        assert report["reward_model"]["eval_accuracy"] is not None
    tok = AutoTokenizer.from_pretrained(str(policy_dir))
    db = sqlite3.connect(proj / "run" / "store.sqlite")
    stored = [t for (t,) in db.execute("SELECT text FROM prompts")]
    n_cands = db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
    db.close()
    convs = [chat.messages(t) for t in stored]
    assert sum(len(c) > 2 for c in convs) >= 2  # the HH prompts stayed multi-turn through the store
    if "data.system_prompt" in overrides:
        assert all(c[0] == {"role": "system", "content": "Answer briefly."} for c in convs)
    assert n_cands > 0
    rendered = {tuple(tok(tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False),
                          add_special_tokens=False)["input_ids"]) for c in convs}
    # every generate() call of the run (generate stage, PPO rollouts, eval) got a template rendering
    assert fed and all(tuple(f) in rendered for f in fed), tok.decode(next(f for f in fed if tuple(f) not in rendered))
    if tok.bos_token_id is not None:
        assert all(f.count(tok.bos_token_id) == 1 for f in fed)
    if dpo:
        from datasets import load_from_disk

        pairs = load_from_disk(str(proj / "run" / "pairs"))["train"]
        want = {tuple(tok(chat.full_text(tok, p, c), add_special_tokens=False)["input_ids"])
                for p, c in zip(pairs["prompt"], pairs["chosen"])}
        seen = {tuple(r["prompt_ids"] + r["chosen_ids"]) for r in dpo[0].train_dataset}
        assert seen == want
