"""Edges of the real-model paths: prompts longer than the model takes, truncation sides, served and local policies."""

from __future__ import annotations

import pytest

from rlaif import chat


def _tiny_gpt2(tmp_path, n_positions=64):
    """A tiny GPT-2 (absolute positions: an input past ``n_positions`` is an IndexError, not a silent wrap)."""
    from rlaif.config import TinyModel
    from rlaif.train.tiny import build_tiny_model

    d = tmp_path / "tiny"
    build_tiny_model(["hello world how are you today"] * 20,
                     TinyModel(vocab_size=300, n_layer=1, n_head=2, n_embd=32, n_positions=n_positions), d)
    return d


@pytest.mark.parametrize("max_new", [8, 200], ids=["room-for-new-tokens", "max-new-over-positions"])
def test_sampling_a_prompt_longer_than_the_model_keeps_its_end(tmp_path, monkeypatch, max_new):
    """generate / eval / policy eval sample with ``sample``: a prompt over the model's positions is cut at its
    start (the generation prompt stays) instead of crashing generate() with an IndexError."""
    from rlaif.generate import load_policy, sample

    model, tok = load_policy(_tiny_gpt2(tmp_path), "cpu")
    seen = []
    orig = model.generate

    def spy(**kw):
        seen.append((kw["input_ids"][0].tolist(), kw["max_new_tokens"]))
        return orig(**kw)

    monkeypatch.setattr(model, "generate", spy)
    outs = sample(model, tok, ["hello " * 100, "hi"], 2, max_new, 1.0, 1.0, 0, "cpu")
    assert len(outs) == 2 and all(len(o) == 2 for o in outs)
    (fed, new), = seen
    assert len(fed) + new <= 64 and new >= 1
    whole = chat.encode_policy_inputs(tok, ["hello " * 100])["input_ids"][0]
    assert fed == whole[-len(fed):]  # the end of the rendering, "### Response:\n" last


@pytest.mark.parametrize("model", ["qwen2", "llama", "plain"], ids=["qwen2", "llama", "no-template"])
def test_reward_model_input_keeps_the_response_of_a_long_prompt(model, qwen2_dir, llama_dir):
    """The reward model reads its score at the end of the text: a long prompt is cut at its start, so the
    response (and the template's end of turn) stays and two responses to one long prompt are told apart."""
    from rlaif.train.hf import load_tokenizer
    from rlaif.train.reward import encode

    tok = load_tokenizer(llama_dir if model == "llama" else qwen2_dir)
    if model == "plain":
        tok.chat_template = None
    long_prompt = chat.encode([{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "How do I boil an egg? " * 60}])
    a, b = (encode(tok, long_prompt, r, 48) for r in ("Boil it for eight minutes.", "No."))
    assert len(a) == 48 and a != b
    want = chat.rm_text(tok, long_prompt, "No.")
    assert tok.decode(b).endswith(want[-20:])
    short = encode(tok, "Hi", "No.", 400)  # a text that fits is unchanged
    assert short == chat.encode_rendered(tok, chat.rm_text(tok, "Hi", "No."))["input_ids"]


@pytest.mark.parametrize("max_tokens", [1, 3], ids=["verdict-token", "generated-text"])
def test_transformers_judge_refuses_a_prompt_over_max_length_instead_of_reading_a_cut_one(qwen2_dir, max_tokens):
    """A judge prompt over ``judge.max_length`` tokens was cut at its end (the question and the assistant header),
    and the verdict read after a piece of response B; it is an error (an unscored record, not cached) now,
    naming the setting. A prompt that fits is judged in the same batch as before."""
    from rlaif.config import JudgeConfig
    from rlaif.judges.hf_backend import TransformersCompleter
    from rlaif.judges.llm import Call

    comp = TransformersCompleter(JudgeConfig(backend="transformers", model=str(qwen2_dir), constitution="x",
                                             max_length=64))
    short = [{"role": "system", "content": "Judge."}, {"role": "user", "content": "A or B?"}]
    long = [{"role": "system", "content": "Judge."}, {"role": "user", "content": "Rain taps. " * 80 + "A or B?"}]
    out = comp.run([Call(short, max_tokens=max_tokens, options=("A", "B")),
                    Call(long, max_tokens=max_tokens, options=("A", "B"))])
    assert out[0].error is None and out[0].text is not None
    assert out[1].error is not None and "judge.max_length" in out[1].error and out[1].text is None
