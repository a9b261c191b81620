"""Prompts as conversations, rendered with the model's chat template: the one path every stage takes.

A prompt travels through the pipeline (store, pairs, datasets) as ONE string, ``prompt_text``:
- a single user message is stored as its plain text (so old plain-text prompts stay valid);
- anything else (a system prompt, several turns) is stored as a JSON list of ``{"role", "content"}`` messages
  (``encode``); ``messages`` decodes either form. A plain text that would itself decode as a JSON conversation is
  stored as a one-message JSON list, so the encoding is exact both ways.

Model inputs come from the tokenizer's chat template when it has one (every chat model, and rlaif's tiny model,
which gets ``TINY_CHAT_TEMPLATE``): ``apply_chat_template(messages, add_generation_prompt=True, tokenize=False)``.
A rendered template already holds the model's special tokens (BOS included for Llama-3), so rendered text is
tokenized with ``add_special_tokens=False`` (otherwise Llama-3 gets two BOS). A model without a chat template (a
base model) gets the plain format of ``rlaif.formats``. A template that refuses a system role (Gemma's) gets the
system text at the start of the first user turn (``template_messages``); a served model gets that on request
(``served_messages``: a server cannot be asked what its template takes).
"""

from __future__ import annotations

import json
from typing import Any

from rlaif.errors import RlaifError
from rlaif.formats import POLICY_PROMPT, rm_plain_text

ROLES = ("system", "user", "assistant")
MAX_TURNS = 64


def check_messages(messages: Any, where: str = "prompt") -> list[dict[str, str]]:
    """A validated copy of a conversation (list of {role, content}); RlaifError naming ``where`` otherwise."""
    if not isinstance(messages, list) or not messages:
        raise RlaifError(f"{where}: a conversation must be a non-empty list of {{\"role\", \"content\"}} messages")
    if len(messages) > MAX_TURNS:
        raise RlaifError(f"{where}: conversation has {len(messages)} messages; at most {MAX_TURNS}: keep its last "
                         "turns or split it")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) - {"role", "content"} or m.get("role") not in ROLES \
                or not isinstance(m.get("content"), str):
            raise RlaifError(f"{where}: message {i} must be {{\"role\": one of {'/'.join(ROLES)}, "
                             f"\"content\": string}}, got {str(m)[:80]!r}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _decode(text: str) -> list[dict[str, str]] | None:
    if not text.startswith('[{"role":'):
        return None
    try:
        return check_messages(json.loads(text))
    except (ValueError, RlaifError):  # not JSON (ValueError: also an integer over 4,300 digits)
        return None


def encode(messages: list[dict[str, str]]) -> str:
    """The stored form of a conversation (see the module docstring)."""
    messages = check_messages(messages)
    if len(messages) == 1 and messages[0]["role"] == "user" and _decode(messages[0]["content"]) is None:
        return messages[0]["content"]
    return json.dumps(messages, ensure_ascii=False)


def messages(prompt_text: str) -> list[dict[str, str]]:
    """The conversation of a stored prompt (a plain string is one user message)."""
    return _decode(prompt_text) or [{"role": "user", "content": prompt_text.strip()}]


def with_system(prompt_text: str, system: str | None) -> str:
    """Add ``system`` as the first message unless the conversation already has a system message."""
    msgs = messages(prompt_text)
    if not system or msgs[0]["role"] == "system":
        return prompt_text
    return encode([{"role": "system", "content": system}, *msgs])


def with_system_all(records: list, system: str | None) -> list:
    """``with_system`` over records: Prompt (``text``), HumanLabel or SFT rows (``prompt``)."""
    if not system:
        return records
    from dataclasses import is_dataclass, replace

    out = []
    for r in records:
        if isinstance(r, dict):
            out.append({**r, "prompt": with_system(r["prompt"], system)})
        elif is_dataclass(r):
            key = "text" if hasattr(r, "text") else "prompt"
            out.append(replace(r, **{key: with_system(getattr(r, key), system)}))
        else:
            raise TypeError(type(r))
    return out


def transcript(prompt_text: str) -> str:
    """Readable text of a prompt for humans and judges ("User: ..." turns; a plain prompt is itself)."""
    msgs = _decode(prompt_text)
    if msgs is None:
        return prompt_text  # a plain prompt, unchanged
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in msgs)


def saved_template_hash(model_dir) -> str | None:
    """The content hash of the chat template saved with a model folder (``chat_template.jinja``, or the
    ``chat_template`` of ``tokenizer_config.json``); None without one. Read from the files: no tokenizer loaded."""
    from pathlib import Path

    from rlaif.hashing import content_hash

    d = Path(model_dir)
    jinja = d / "chat_template.jinja"
    if jinja.is_file():
        return content_hash(jinja.read_text(encoding="utf-8"))
    try:
        template = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError, AttributeError):
        return None
    return content_hash(template) if template else None


def has_template(tok) -> bool:
    return bool(getattr(tok, "chat_template", None))


_SYSTEM_OK: dict[str, bool] = {}  # chat template -> whether it takes a system message


def _takes_system(tok) -> bool:
    key = str(tok.chat_template)
    if key not in _SYSTEM_OK:
        from jinja2 import TemplateError

        try:
            tok.apply_chat_template([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                                    add_generation_prompt=True, tokenize=False)
            _SYSTEM_OK[key] = True
        except TemplateError:  # e.g. Gemma's: raise_exception('System role not supported')
            _SYSTEM_OK[key] = False
    return _SYSTEM_OK[key]


def fold_system(msgs: list[dict[str, str]]) -> list[dict[str, str]]:
    """``msgs`` without a leading system message: its text starts the first user turn, as the cards of models whose
    chat template has no system role (Gemma) advise. Any other conversation, unchanged."""
    if not msgs or msgs[0]["role"] != "system":
        return msgs
    system, rest = msgs[0]["content"].strip(), [dict(m) for m in msgs[1:]]
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}"
            break
    return rest


def served_messages(msgs: list[dict[str, str]], system_role: str) -> list[dict[str, str]]:
    """``msgs`` as sent to a served model (``judge.system_role``, ``generate.served.system_role``): ``system`` as they
    are, ``fold`` through ``fold_system`` (a server cannot be asked whether its template takes a system role)."""
    return fold_system(msgs) if system_role == "fold" else msgs


def template_messages(tok, msgs: list[dict[str, str]]) -> list[dict[str, str]]:
    """``msgs`` as the tokenizer's chat template takes them: a template that refuses a system role (Gemma) gets
    ``fold_system``; any other template, unchanged."""
    if not msgs or msgs[0]["role"] != "system" or not has_template(tok) or _takes_system(tok):
        return msgs
    return fold_system(msgs)


def render_messages(tok, msgs: list[dict[str, str]], add_generation_prompt: bool) -> str:
    """``apply_chat_template`` (to text) of ``msgs`` as the template takes them; a conversation the template refuses
    (its ``raise_exception``, e.g. Mistral's "roles must alternate") is one RlaifError naming the model."""
    from jinja2 import TemplateError

    try:
        return tok.apply_chat_template(template_messages(tok, msgs), add_generation_prompt=add_generation_prompt,
                                       tokenize=False)
    except TemplateError as e:
        shown = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in msgs)
        raise RlaifError(f"the chat template of {getattr(tok, 'name_or_path', '') or 'the model'} refuses the "
                         f"conversation {shown[:120]!r} ({e}); fix the data to the model's conversation rules (e.g. "
                         "turns that alternate user/assistant)") from None


def policy_input(tok, prompt_text: str) -> str:
    """The exact text the policy is given for a prompt: its chat-template rendering with the generation prompt."""
    if has_template(tok):
        return render_messages(tok, messages(prompt_text), add_generation_prompt=True)
    return POLICY_PROMPT.format(prompt=transcript(prompt_text).strip())


def policy_text_for_adding_tokenizer(tok, prompt_text: str) -> str:
    """``policy_input`` for code that tokenizes with special tokens ADDED (trl's RLOO/GRPO on string prompts):
    a BOS that the tokenizer adds itself is dropped from the text, so the ids are the template's exactly."""
    text = policy_input(tok, prompt_text)
    if has_template(tok) and tok.bos_token and text.startswith(tok.bos_token) \
            and tok("")["input_ids"] == [tok.bos_token_id]:
        text = text[len(tok.bos_token):]
    return text


def encode_rendered(tok, texts: list[str] | str, **kw):
    """Tokenize rendered text: the template already carries the special tokens."""
    return tok(texts, add_special_tokens=not has_template(tok), **kw)


def _cut_start(ids: list[int], max_length: int, bos: int | None) -> list[int]:
    """The last ``max_length`` ids, a leading BOS kept (Llama-3's <|begin_of_text|> starts every trained sequence)."""
    if len(ids) <= max_length:
        return ids
    if bos is not None and ids[0] == bos and max_length > 1:
        return [bos] + ids[len(ids) - max_length + 1:]
    return ids[len(ids) - max_length:]


def _encode_keeping_end(tok, texts: list[str] | str, **kw):
    """``encode_rendered`` whose truncation cuts the START of a long text. A rendered template is cut here, its
    leading BOS kept; text without a template (special tokens added by the tokenizer, e.g. an encoder's [CLS]) by
    the tokenizer from the left (its own side is restored)."""
    max_length = kw.get("max_length")
    if has_template(tok) and kw.get("truncation") and max_length:
        pad = {k: v for k, v in kw.items() if k not in ("truncation", "max_length")}
        rows = tok([texts] if isinstance(texts, str) else texts, add_special_tokens=False)["input_ids"]
        rows = [_cut_start(x, max_length, tok.bos_token_id) for x in rows]
        return tok.pad({"input_ids": rows[0] if isinstance(texts, str) else rows}, **pad)
    side = tok.truncation_side
    tok.truncation_side = "left"
    try:
        return encode_rendered(tok, texts, **kw)
    finally:
        tok.truncation_side = side


def encode_policy_inputs(tok, prompts: list[str], **kw):
    """Tokenized (batch) policy inputs; ``kw`` goes to the tokenizer (padding, truncation, return_tensors...).
    Truncation keeps the END of a long prompt: the generation prompt (e.g. ``<|im_start|>assistant``) stays."""
    return _encode_keeping_end(tok, [policy_input(tok, p) for p in prompts], **kw)


def full_text(tok, prompt_text: str, response: str) -> str:
    """Prompt plus the assistant's response as the template ends a turn (end-of-turn token included)."""
    if has_template(tok):
        msgs = messages(prompt_text) + [{"role": "assistant", "content": response.strip()}]
        return render_messages(tok, msgs, add_generation_prompt=False)
    return policy_input(tok, prompt_text) + response.strip() + (tok.eos_token or "")


def prompt_response_ids(tok, prompt_text: str, response: str) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of ``full_text``, split where the tokenized prompt stops being a prefix."""
    pids = encode_rendered(tok, policy_input(tok, prompt_text))["input_ids"]
    fids = encode_rendered(tok, full_text(tok, prompt_text, response))["input_ids"]
    n = 0
    while n < min(len(pids), len(fids)) and pids[n] == fids[n]:
        n += 1
    return fids[:n], fids[n:]


def completion_row(tok, prompt_text: str, **completions: str) -> dict[str, Any]:
    """A trl row: conversational (trl applies the chat template itself) when the tokenizer has a template,
    else the plain format (trl appends EOS). ``completions``: e.g. completion=... or chosen=..., rejected=..."""
    if has_template(tok):
        full_text(tok, prompt_text, next(iter(completions.values()), ""))  # a refused conversation fails here, not in trl
        return {"prompt": template_messages(tok, messages(prompt_text)),
                **{k: [{"role": "assistant", "content": v.strip()}] for k, v in completions.items()}}
    return {"prompt": policy_input(tok, prompt_text), **{k: v.strip() for k, v in completions.items()}}


def conversational_dataset(tok, rows, **columns: str):
    """A ``datasets.Dataset`` of ``completion_row``s; ``columns`` maps trl's column to the row's key
    (``completion="response"``; ``chosen="chosen", rejected="rejected"``). ``rows``: dicts or a Dataset."""
    from datasets import Dataset

    return Dataset.from_list([completion_row(tok, r["prompt"], **{k: r[v] for k, v in columns.items()})
                              for r in rows])


def rm_text(tok, prompt_text: str, response: str) -> str:
    """The reward model's input: the chat rendering for a model with a template, else "Question/Answer"."""
    if has_template(tok):
        return full_text(tok, prompt_text, response)
    return rm_plain_text(transcript(prompt_text), response)


def rm_ids(tok, prompt_text: str, response: str, max_length: int) -> list[int]:
    """The reward model's ids, at most ``max_length``: a long text loses its START, so the response and the end of
    turn stay (cut at the end, two responses to one long prompt were the same ids, hence the same score)."""
    return _encode_keeping_end(tok, rm_text(tok, prompt_text, response), truncation=True,
                               max_length=max_length)["input_ids"]
