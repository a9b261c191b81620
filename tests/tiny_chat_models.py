"""Tiny random-weight chat models with REAL architectures and chat-template conventions, built locally.

- ``qwen2``: ``Qwen2ForCausalLM`` with Qwen2.5-Instruct's conventions: ChatML (``<|im_start|>role\\n...<|im_end|>\\n``),
  the default system prompt when the conversation has none, eos = ``<|im_end|>``, pad = ``<|endoftext|>``, no BOS.
- ``llama``: ``LlamaForCausalLM`` with Llama-3-Instruct's conventions: ``<|begin_of_text|>`` added by the template
  AND by the tokenizer's post-processor (as the real one does), ``<|start_header_id|>role<|end_header_id|>\\n\\n``
  headers, ``<|eot_id|>`` ends a turn and is eos, no pad token.

The tokenizer is a byte-level BPE trained with ``tokenizers`` on a small corpus; nothing is downloaded. Models are
2 layers, hidden 32, so a test step takes milliseconds. Fixtures (a pytest plugin, registered in conftest.py):
``qwen2_dir``, ``llama_dir`` and ``chat_model_dir_any`` (parametrized over both), session-scoped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# Qwen2.5-Instruct's template, without its tool-calling branches (not used here).
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + QWEN_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or (message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Meta-Llama-3-8B-Instruct's template, verbatim.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

CORPUS = [
    "Give one tip for sleeping better.", "Keep a regular bedtime and avoid screens late at night.",
    "How do I boil an egg?", "Put the egg in boiling water for eight minutes, then cool it.",
    "Explain what a reward model is.", "A reward model scores responses so a policy can learn preferences.",
    "Write a short poem about rain.", "Rain taps the window, soft and slow.",
    "What is the capital of France?", "Paris is the capital of France.",
    "How can I stay safe online?", "Use strong passwords and do not share them.",
    "Human: hello Assistant: hi there, how can I help you today?",
] * 4


def _tokenizer(specials: list[str], **kw):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer=trainer)
    bos = kw.get("bos_token")
    if bos:  # Llama-3's tokenizer prepends <|begin_of_text|> to every encoded text
        from tokenizers import processors

        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=512, **kw)


def build_qwen2(out: Path) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = _tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eos_token="<|im_end|>",
                     pad_token="<|endoftext|>")
    tok.chat_template = QWEN25_TEMPLATE
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=None,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_llama(out: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _tokenizer(["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                      "<|eot_id|>"], bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    tok.chat_template = LLAMA3_TEMPLATE
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids("<|end_of_text|>"), tok.eos_token_id]
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


BUILDERS = {"qwen2": build_qwen2, "llama": build_llama}


def chat_model_dir(tmp_path_factory, name: str) -> Path:
    """Build once per session (a second fixture instance reuses the directory)."""
    out = tmp_path_factory.getbasetemp() / "tiny_chat_models" / name
    if not (out / "config.json").exists():
        BUILDERS[name](out)
    return out


@pytest.fixture(scope="session")
def qwen2_dir(tmp_path_factory) -> Path:
    return chat_model_dir(tmp_path_factory, "qwen2")


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> Path:
    return chat_model_dir(tmp_path_factory, "llama")


@pytest.fixture(scope="session", params=["qwen2", "llama"])
def chat_model_dir_any(request, tmp_path_factory) -> Path:
    return chat_model_dir(tmp_path_factory, request.param)
