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


def _generation_eos(model) -> set[int]:
    e = model.generation_config.eos_token_id
    return {e} if isinstance(e, int) else set(e)


@pytest.mark.parametrize("old_llama_tokenizer", [False, True], ids=["as-saved", "tokenizer-eos-end_of_text"])
def test_sampling_stops_at_every_eos_of_the_generation_config(chat_model_dir_any, tmp_path, monkeypatch,
                                                              old_llama_tokenizer):
    """generate() was given only the tokenizer's EOS, which replaces the model's generation_config list: Qwen2.5's
    <|endoftext|> did not stop a sample, nor Llama-3's <|eot_id|> under a tokenizer whose eos is <|end_of_text|>
    (Meta's first Llama-3-Instruct release and fine-tunes of it). The stop set is the union, as trl's GRPO/RLOO use."""
    import shutil

    from rlaif.generate import load_policy, sample

    d = chat_model_dir_any
    if old_llama_tokenizer:
        from transformers import AutoTokenizer

        d = tmp_path / "m"
        shutil.copytree(chat_model_dir_any, d)
        tok = AutoTokenizer.from_pretrained(d)
        other = "<|end_of_text|>" if "<|end_of_text|>" in tok.get_vocab() else "<|endoftext|>"
        tok.eos_token = other
        tok.save_pretrained(d)
    model, tok = load_policy(d, "cpu")
    seen = []
    orig = model.generate

    def spy(**kw):
        seen.append(kw["eos_token_id"])
        return orig(**kw)

    monkeypatch.setattr(model, "generate", spy)
    sample(model, tok, ["hi"], 1, 2, 1.0, 1.0, 0, "cpu")
    stop = set(seen[0]) if isinstance(seen[0], list) else {seen[0]}
    assert stop == _generation_eos(model) | {tok.eos_token_id}


def test_ppo_response_ends_at_the_first_of_any_stop_token():
    import torch

    from rlaif.train.ppo_model import response_ends

    response = torch.tensor([[5, 7, 2, 9], [5, 3, 7, 7], [5, 6, 6, 6]])
    lengths, has_eos = response_ends(response, [7, 3])
    assert lengths.tolist() == [2, 2, 4] and has_eos.tolist() == [True, True, False]


@pytest.mark.parametrize("cls", ["score", "penalty"])
def test_missing_eos_penalty_counts_every_stop_token(cls):
    from rlaif.train.online import ScoreReward
    from rlaif.train.rewards import MissingEOSPenalty

    fn = (ScoreReward(lambda p, r: [0.0] * len(p), [7, 3], 1.0) if cls == "score" else MissingEOSPenalty([7, 3], 1.0))
    assert fn(prompts=["p"] * 3, completions=["a"] * 3, completion_ids=[[1, 7], [1, 3], [1, 2]]) == [0.0, 0.0, -1.0]


@pytest.mark.slow
@pytest.mark.parametrize("model, max_length, kept", [("llama", 48, 3), ("qwen2", 48, 0)],
                         ids=["some-prompts-too-long", "every-prompt-too-long"])
def test_dpo_counts_the_pairs_trl_keeps_and_refuses_to_train_on_none(model, max_length, kept, qwen2_dir, llama_dir,
                                                                     tmp_path, scripted_backend):
    """trl drops a pair whose prompt alone fills max_length: the stage reported every pair as trained, and with none
    left it 'trained' nothing and saved the SFT policy as the DPO policy. Now the count is trl's, and none is exit 2
    naming the setting."""
    from test_chat_training import PAIRS, _cfg, _pairs_dir

    from rlaif.errors import RlaifError
    from rlaif.layout import RunLayout
    from rlaif.train.dpo import train_dpo

    d = llama_dir if model == "llama" else qwen2_dir
    cfg = _cfg(tmp_path, [f"policy.model={d}", "policy_training.train.max_steps=1",
                          "policy_training.train.batch_size=2", f"policy_training.train.max_length={max_length}"])
    layout = RunLayout(tmp_path, sft=d, pairs=_pairs_dir(tmp_path))
    if not kept:
        with pytest.raises(RlaifError, match="policy_training.train.max_length"):
            train_dpo(cfg.policy_training, cfg.seed, layout, "cpu")
        assert not (tmp_path / "policy").exists()
        return
    info = train_dpo(cfg.policy_training, cfg.seed, layout, "cpu")
    assert info["train_pairs"] == kept and info["dropped_too_long"] == len(PAIRS) - kept
    assert (tmp_path / "policy" / "config.json").exists()


@pytest.mark.slow
def test_sft_with_every_prompt_over_max_length_is_refused(qwen2_dir, tmp_path, scripted_backend):
    from test_chat_training import _cfg

    from rlaif.errors import RlaifError
    from rlaif.layout import RunLayout
    from rlaif.train.sft import run_sft

    cfg = _cfg(tmp_path, [f"policy.model={qwen2_dir}", "policy.sft.max_steps=1", "policy.sft.max_length=32"])
    with pytest.raises(RlaifError, match="policy.sft.max_length"):
        run_sft(cfg.policy, cfg.seed, RunLayout(tmp_path), [], "cpu", cfg.data.system_prompt)
    assert not (tmp_path / "sft").exists()


def test_eval_logprobs_of_a_response_to_a_long_prompt_keep_the_response(tmp_path):
    """eval's KL sums log p(response | prompt): a sequence over the model's positions was cut at its END, so the
    response of a long prompt summed to 0 (a KL of 0 for it, whatever the policy did). It keeps its end now, as
    sampling does: the response's log-probability given the prompt's end."""
    import torch

    from rlaif.evaluate import sequence_logprobs
    from rlaif.generate import load_policy

    model, tok = load_policy(_tiny_gpt2(tmp_path), "cpu")
    tok.padding_side = "right"
    long_prompt, response = "hello " * 100, "world how are you"
    got, short = sequence_logprobs(model, tok, [long_prompt, "hi"], [response, response], "cpu")
    pids, rids = chat.prompt_response_ids(tok, long_prompt, response)
    ids = (pids + rids)[-64:]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, :-1].float(), -1)
    want = float(logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])][-len(rids):].sum())
    assert got == pytest.approx(want, rel=1e-4) and got < 0 and short < 0


def test_transformers_judge_verdict_does_not_depend_on_its_batch(tmp_path):
    """Verdict logits come from one forward pass over a left-padded batch: without position ids from the mask, a
    model with absolute positions (GPT-2) read a short call at shifted positions when a longer call shared its
    batch, so the same call got another verdict (and cache entry) with other company."""
    from rlaif.config import JudgeConfig
    from rlaif.judges.hf_backend import TransformersCompleter
    from rlaif.judges.llm import Call

    comp = TransformersCompleter(JudgeConfig(backend="transformers", model=str(_tiny_gpt2(tmp_path, 256)),
                                             constitution="x", max_length=256))
    short = Call([{"role": "user", "content": "A or B?"}], options=("A", "B"))
    long = Call([{"role": "user", "content": "hello world " * 30 + "A or B?"}], options=("A", "B"))
    alone = comp.run([short])[0].top_logprobs
    batched = comp.run([short, long])[0].top_logprobs
    for opt in ("A", "B"):
        assert batched[opt] == pytest.approx(alone[opt], abs=1e-4)



# Gemma-2's convention: no system role (its template raises), "model" for the assistant.
GEMMA_LIKE_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + m['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


def test_a_template_without_a_system_role_gets_the_system_prompt_in_the_first_user_turn(qwen2_dir):
    """data.system_prompt, or the judge's own system message, with a model whose template refuses a system role
    (Gemma's raises "System role not supported") was a jinja traceback in every stage; the system text now opens the
    first user turn, as those models' cards advise, in every rendering (policy, trl rows, reward model, judge)."""
    from rlaif.judges.hf_backend import render_chat
    from rlaif.train.hf import load_tokenizer

    tok = load_tokenizer(qwen2_dir)
    tok.chat_template = GEMMA_LIKE_TEMPLATE
    p = chat.with_system(chat.encode([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                                      {"role": "user", "content": "Rain poem?"}]), "Be brief.")
    want = ("<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
            "<start_of_turn>user\nRain poem?<end_of_turn>\n<start_of_turn>model\n")
    assert chat.policy_input(tok, p).endswith(want)
    assert chat.full_text(tok, p, "Drops.").endswith(want + "Drops.<end_of_turn>\n")
    row = chat.completion_row(tok, p, completion="Drops.")  # what trl renders itself
    assert [m["role"] for m in row["prompt"]] == ["user", "assistant", "user"]
    assert row["prompt"][0]["content"] == "Be brief.\n\nHi"
    assert render_chat(tok, [{"role": "system", "content": "Judge."}, {"role": "user", "content": "A or B?"}]) \
        .endswith("<start_of_turn>user\nJudge.\n\nA or B?<end_of_turn>\n<start_of_turn>model\n")
    tok.chat_template = load_tokenizer(qwen2_dir).chat_template  # a template with a system role keeps it
    assert chat.completion_row(tok, p, completion="x")["prompt"][0] == {"role": "system", "content": "Be brief."}


def _bf16_checkpoint(src, dst):
    """A copy of ``src`` saved in bf16 (as Qwen2.5 / Llama-3 checkpoints are: config dtype bfloat16)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(src, dst)
    AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).save_pretrained(dst)
    return dst


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "train-rm"])
def test_fully_trained_weights_load_in_fp32_from_a_bf16_checkpoint(stage, qwen2_dir, tmp_path, monkeypatch,
                                                                   scripted_backend):
    """transformers 5 loads a checkpoint in its own dtype by default: SFT and the reward model trained a bf16
    checkpoint's weights in bf16, where an update under ~1/256 of a weight is lost (the policy trainers load fp32
    for that reason, rlaif/train/gpu.py)."""
    import torch
    import trl
    from test_chat_training import _cfg, _pairs_dir

    from rlaif.layout import RunLayout

    base = _bf16_checkpoint(qwen2_dir, tmp_path / "bf16")
    seen = []
    name = "SFTTrainer" if stage == "sft" else "RewardTrainer"

    class Spy(getattr(trl, name)):
        def __init__(self, *a, **kw):
            seen.append(kw["model"].dtype)
            super().__init__(*a, **kw)

    monkeypatch.setattr(trl, name, Spy)
    if stage == "sft":
        from rlaif.train.sft import run_sft

        cfg = _cfg(tmp_path, [f"policy.model={base}", "policy.sft.max_steps=1", "policy.sft.max_length=256"])
        run_sft(cfg.policy, cfg.seed, RunLayout(tmp_path), [], "cpu")
    else:
        from rlaif.train.reward import train_reward_model

        cfg = _cfg(tmp_path, [f"reward_model.base={base}", "reward_model.train.max_steps=1",
                              "reward_model.train.batch_size=2", "reward_model.train.max_length=256"])
        train_reward_model(cfg.reward_model, cfg.seed, RunLayout(tmp_path, pairs=_pairs_dir(tmp_path)), "cpu")
    assert seen == [torch.float32]


@pytest.mark.parametrize("max_tokens", [1, 8], ids=["verdict-token", "generated-text"])
def test_transformers_judge_prompt_over_the_models_positions_is_unscored_not_a_crash(tmp_path, max_tokens):
    """judge.max_length (2048 by default) above the judge model's positions: a prompt in between crashed the judge
    stage on an absolute-position model (GPT-2: IndexError); it is an unscored error naming both limits now."""
    from rlaif.config import JudgeConfig
    from rlaif.judges.hf_backend import TransformersCompleter
    from rlaif.judges.llm import Call

    comp = TransformersCompleter(JudgeConfig(backend="transformers", model=str(_tiny_gpt2(tmp_path, 64)),
                                             constitution="x"))
    long = Call([{"role": "user", "content": "hello world " * 20 + "A or B?"}], max_tokens=max_tokens,
                options=("A", "B"))
    short = Call([{"role": "user", "content": "A or B?"}], max_tokens=max_tokens, options=("A", "B"))
    out = comp.run([long, short])
    assert out[0].error is not None and "64 positions" in out[0].error
    assert out[1].error is None


# Mistral-Instruct v0.2's rule: roles alternate user/assistant (its template raises otherwise).
ALTERNATING_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% else %}{{ m['content'] + eos_token }}"
    "{% endif %}{% endfor %}"
)


def test_a_conversation_the_template_refuses_is_one_error_naming_the_model(qwen2_dir):
    """A template that raises on a conversation (two user turns in a row under Mistral's alternation rule) was a
    jinja traceback inside generate, or inside trl's dataset preparation for SFT/DPO/KTO; it is one RlaifError
    naming the model and the fix now, raised before trl (``completion_row`` renders each row once)."""
    from rlaif.errors import RlaifError
    from rlaif.train.hf import load_tokenizer

    tok = load_tokenizer(qwen2_dir)
    tok.chat_template = ALTERNATING_TEMPLATE
    ok = chat.encode([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                      {"role": "user", "content": "Rain poem?"}])
    assert chat.policy_input(tok, ok).endswith("[INST] Rain poem? [/INST]")
    bad = chat.encode([{"role": "user", "content": "Hi"}, {"role": "user", "content": "Rain poem?"}])
    for render in (lambda: chat.policy_input(tok, bad), lambda: chat.full_text(tok, bad, "x"),
                   lambda: chat.completion_row(tok, bad, chosen="x", rejected="y")):
        with pytest.raises(RlaifError, match=r"chat template .*refuses .*User: Hi.*roles must alternate"):
            render()


def test_cutting_a_long_rendering_keeps_llama3s_begin_of_text(llama_dir, qwen2_dir):
    """A rendering cut at its start (policy inputs in generate/PPO/eval, reward-model inputs) lost Llama-3's
    <|begin_of_text|>, which every sequence it was trained on starts with; it stays (Qwen2 has none to keep)."""
    from rlaif.train.hf import load_tokenizer

    tok = load_tokenizer(llama_dir, padding_side="left")
    long = "How do I boil an egg? " * 40
    enc = chat.encode_policy_inputs(tok, [long, "Hi"], truncation=True, max_length=24, padding=True,
                                    return_tensors="pt")
    row = enc["input_ids"][0].tolist()
    assert len(row) == 24 and row[0] == tok.bos_token_id and row.count(tok.bos_token_id) == 1
    assert tok.decode(row).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    short = [t for t, m in zip(enc["input_ids"][1].tolist(), enc["attention_mask"][1].tolist()) if m]
    assert short == chat.encode_policy_inputs(tok, ["Hi"])["input_ids"][0]  # what fits is unchanged
    ids = chat.rm_ids(tok, long, "Boil it.", 24)
    assert len(ids) == 24 and ids[0] == tok.bos_token_id and tok.decode(ids).endswith("Boil it.<|eot_id|>")
    qtok = load_tokenizer(qwen2_dir)
    q = chat.rm_ids(qtok, long, "Boil it.", 24)
    assert len(q) == 24 and tok.bos_token_id not in q and qtok.decode(q).endswith("Boil it.<|im_end|>\n")
