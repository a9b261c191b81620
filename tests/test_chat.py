"""Prompts as conversations and the chat-template rendering every stage feeds the model."""

from __future__ import annotations

import pytest
from tiny_chat_models import QWEN_SYSTEM

from rlaif import chat
from rlaif.errors import RlaifError


def _tok(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def test_plain_prompt_round_trips_as_itself():
    assert chat.encode([{"role": "user", "content": "Hi?"}]) == "Hi?"
    assert chat.messages("Hi?") == [{"role": "user", "content": "Hi?"}]


def test_conversation_round_trips_and_json_looking_text_stays_text():
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert chat.messages(chat.encode(conv)) == conv
    tricky = '[{"role": "user", "content": "x"}]'  # a user who literally typed an encoded conversation
    enc = chat.encode([{"role": "user", "content": tricky}])
    assert enc != tricky and chat.messages(enc) == [{"role": "user", "content": tricky}]


def test_with_system_adds_once():
    p = chat.with_system("Hi", "Be brief.")
    assert chat.messages(p)[0] == {"role": "system", "content": "Be brief."}
    assert chat.with_system(p, "Other") == p
    assert chat.with_system("Hi", None) == "Hi"


@pytest.mark.parametrize("bad", [[], [{"role": "bot", "content": "x"}], [{"role": "user"}], "x",
                                 [{"role": "user", "content": "x", "extra": 1}]],
                         ids=["empty", "bad-role", "no-content", "not-list", "extra-key"])
def test_bad_conversation_is_one_error(bad):
    with pytest.raises(RlaifError, match="message|conversation"):
        chat.check_messages(bad, "f.jsonl:3")


def test_qwen2_rendering_is_chatml_with_default_system(qwen2_dir):
    tok = _tok(qwen2_dir)
    assert chat.policy_input(tok, "Hi") == (f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n"
                                           "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    own = chat.with_system("Hi", "Be brief.")
    assert chat.policy_input(tok, own).startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert chat.full_text(tok, "Hi", "Yo").endswith("<|im_start|>assistant\nYo<|im_end|>\n")


def test_llama_rendering_has_one_bos(llama_dir):
    tok = _tok(llama_dir)
    text = chat.policy_input(tok, "Hi")
    assert text == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
    ids = chat.encode_policy_inputs(tok, ["Hi"])["input_ids"][0]
    assert ids.count(tok.bos_token_id) == 1  # the tokenizer would add a second BOS to the rendered text
    pids, rids = chat.prompt_response_ids(tok, "Hi", "Yo")
    assert pids == ids and tok.decode(rids) == "Yo<|eot_id|>"


def test_tiny_model_gets_a_chat_template_rendering_the_plain_format():
    from rlaif.formats import policy_prompt
    from rlaif.train.tiny import build_tokenizer

    tok = build_tokenizer(["### Prompt:\nhello\n### Response:\nhi there"] * 5, 300)
    assert chat.has_template(tok)  # same chat path as real models
    assert chat.policy_input(tok, "hello") == policy_prompt("hello")
    assert chat.full_text(tok, "hello", "hi") == policy_prompt("hello") + "hi" + tok.eos_token


def test_generate_feeds_the_template_rendering(chat_model_dir_any, monkeypatch):
    """The ids the model's generate() receives are exactly the rendered template, for Qwen2 and Llama."""
    from rlaif.generate import load_policy, sample

    model, tok = load_policy(chat_model_dir_any, "cpu")
    seen = []
    orig = model.generate

    def spy(**kw):
        seen.append((kw["input_ids"].tolist(), kw["attention_mask"].tolist()))
        return orig(**kw)

    monkeypatch.setattr(model, "generate", spy)
    prompts = ["How do I boil an egg?", chat.encode([{"role": "system", "content": "Be brief."},
                                                     {"role": "user", "content": "Hi"},
                                                     {"role": "assistant", "content": "Hello."},
                                                     {"role": "user", "content": "Rain poem?"}])]
    outs = sample(model, tok, prompts, 2, 4, 1.0, 1.0, 0, "cpu")
    assert len(outs) == 2 and all(len(o) == 2 for o in outs)
    (ids, mask), = seen
    for row, m, p in zip(ids, mask, prompts):
        fed = [t for t, k in zip(row, m) if k]
        want = tok.apply_chat_template(chat.messages(p), add_generation_prompt=True, tokenize=False)
        assert tok.decode(fed) == want
        assert fed == tok(want, add_special_tokens=False)["input_ids"]


def test_judges_see_a_readable_transcript_of_multi_turn_prompts():
    from rlaif.judges.prompts import load_template, pairwise_messages

    conv = chat.encode([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Rain poem?"}])
    user = pairwise_messages(load_template("pairwise"), "be kind", conv, "a", "b")[1]["content"]
    assert "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello.\n\nUser: Rain poem?" in user
    assert '"role"' not in user
    assert chat.transcript("  plain  ") == "  plain  "  # plain prompts reach the judge unchanged


def test_text_for_a_tokenizer_that_adds_bos_gives_the_template_ids(chat_model_dir_any):
    """trl's RLOO/GRPO tokenize string prompts WITH special tokens: the text handed to them must still give
    exactly the template's ids (one BOS for Llama-3, unchanged for Qwen2)."""
    tok = _tok(chat_model_dir_any)
    p = chat.with_system("How do I boil an egg?", "Be brief.")
    want = chat.encode_policy_inputs(tok, [p])["input_ids"][0]
    assert tok(chat.policy_text_for_adding_tokenizer(tok, p))["input_ids"] == want


def test_truncated_policy_input_keeps_the_generation_prompt(qwen2_dir):
    tok = _tok(qwen2_dir)
    ids = chat.encode_policy_inputs(tok, ["word " * 200], truncation=True, max_length=16)["input_ids"][0]
    assert len(ids) == 16 and tok.decode(ids).endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert tok.truncation_side == "right"  # the tokenizer's own setting is left as it was


def test_generate_hash_ignores_speed_settings_and_keeps_old_runs_valid():
    from rlaif.config import GenerateConfig

    local = GenerateConfig()
    assert "served" not in local.hash_view() and "backend" not in local.hash_view()
    a = GenerateConfig(backend="openai", served={"model": "m", "base_url": "u", "concurrency": 4})
    b = GenerateConfig(backend="openai", served={"model": "m", "base_url": "u", "concurrency": 64, "timeout_s": 9})
    c = GenerateConfig(backend="openai", served={"model": "other", "base_url": "u"})
    assert a.hash_view() == b.hash_view() != c.hash_view()


def test_saved_template_hash_is_the_tokenizers_template(chat_model_dir_any, tmp_path):
    """The manifest's policy.chat_template_hash: the hash of the template the tokenizer renders with."""
    import json
    import shutil

    from rlaif.chat import saved_template_hash
    from rlaif.hashing import content_hash

    tok = _tok(chat_model_dir_any)
    assert tok.chat_template and saved_template_hash(chat_model_dir_any) == content_hash(tok.chat_template)
    bare = tmp_path / "bare"
    shutil.copytree(chat_model_dir_any, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((bare / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert saved_template_hash(bare) is None and saved_template_hash(tmp_path / "missing") is None
