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
