"""Build a tiny GPT-2-style causal LM and its BPE tokenizer locally.

Nothing is downloaded: the tokenizer is trained with `tokenizers` on the
SFT corpus and prompts, and the model is a fresh GPT2 config. SFT then
teaches it the prompt format (see `rlaif.train.sft`).
"""

from __future__ import annotations

from pathlib import Path

from rlaif.config import TinyModel
from rlaif.formats import TINY_CHAT_TEMPLATE

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def build_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, PAD], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=PAD,
                                   unk_token=EOS, model_max_length=1024, chat_template=TINY_CHAT_TEMPLATE)


def build_tiny_model(texts: list[str], shape: TinyModel, out_dir: Path, seed: int = 0):
    """Write an untrained tiny model + trained tokenizer to ``out_dir``; return (model, tokenizer)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_tokenizer(texts, shape.vocab_size)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=shape.n_positions, n_embd=shape.n_embd, n_layer=shape.n_layer,
        n_head=shape.n_head, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model, tokenizer
