"""The mixed queue: AI pairs + human labels -> training and eval pairs.

Rules (all counted in the returned stats and recorded in the manifest):
- a human label on the same prompt and pair as an AI pair overrides it
  (disagreements counted);
- AI pairs below ``min_confidence`` are dropped;
- a ``human_eval_fraction`` share of the prompts that carry human preference
  labels is held out: every human pair on such a prompt is the eval split,
  chosen by content hash of the prompt (stable across runs), and nothing on
  that prompt is trained on (no AI pair, revision, or other human pair on it:
  a per-comparison split let other comparisons of a held-out prompt train);
  labels imported without ``--human`` are never held out
  (``HumanLabel.train_only``) and do not train on a held-out prompt either;
  a prompt is its turns (``prompt_unit``): the same turns under another system
  prompt or spaced otherwise are the same held-out prompt;
- ``max_ai_per_human`` caps AI pairs per human train pair (highest
  confidence kept) and ``human_weight`` sets a human pair's loss weight;
- thumbs, ratings and rankings become human pairs with a reward-model margin (rlaif/feedback.py);
  a pairwise human label on the same comparison wins over a pair made from feedback;
- an AI pair that thumbs on its responses contradict (``feedback.ai_verdict``) is dropped;
- every thumbs verdict is also kept unpaired (the ``unpaired`` split, what KTO trains on).
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence

from rlaif import chat
from rlaif import feedback as fb
from rlaif.config import MixConfig
from rlaif.hashing import content_hash
from rlaif.layout import RunLayout, finalize_dir
from rlaif.records import Feedback, HumanLabel, PreferencePair, pair_key
from rlaif.vocab import AI, FILE, HUMAN, PREFERENCE, REVISION


def prompt_unit(prompt: str) -> str:
    """What the held-out split holds out together: a stored prompt's turns without its system message, each
    turn's whitespace collapsed (a plain prompt: its text). The same question under another system prompt (a
    label file from another run), or spaced otherwise (an HH-text label file against message-list prompts), is
    one prompt: holding out one of its stored forms while another trained was a leak."""
    turns = [(m["role"], " ".join(m["content"].split())) for m in chat.messages(prompt) if m["role"] != "system"]
    if len(turns) == 1 and turns[0][0] == "user":
        return turns[0][1]
    return json.dumps(turns, ensure_ascii=False)


def _drawn(unit: str, fraction: float, seed: int) -> bool:
    """Whether the prompt ``unit`` is drawn for the held-out split (by content hash: stable across runs)."""
    return int(content_hash([seed, content_hash(["prompt", unit])], 8), 16) / 0xFFFFFFFF < fraction


def split_human(human: list[HumanLabel], cfg: MixConfig, seed: int, derived: list[HumanLabel] = (),
                policy_eval: frozenset[str] = frozenset()) -> tuple[list[HumanLabel], list[HumanLabel], int, int]:
    """The human preference labels (and the pairs ``derived`` from feedback) as (train, held-out eval,
    number of non-preference labels left out, number of train-only labels left out because their prompt is
    held out): one label per comparison, held out per prompt, the split the mix makes (the agreement gate
    and the weight fit read it through ``human_split``). ``policy_eval``: the units (``prompt_unit``) of the
    prompts the policy is evaluated on; a labelled one is always held out, so nothing on it trains."""
    prefs: dict[str, HumanLabel] = {}
    ties = 0
    # Pairs made from feedback first: a pairwise label on the same comparison wins over them.
    # File labels are re-inserted on every run; viewer and import labels must still win over them.
    for h in list(derived) + sorted(human, key=lambda h: not h.source.startswith(FILE)):
        if h.label != PREFERENCE:
            ties += 1
            continue
        prefs[h.key] = h  # a later label (e.g. from the viewer) replaces an earlier one
    # A prompt is held out when drawn and it has a label that may be held out (imports are train only).
    unit = {h.key: prompt_unit(h.prompt) for h in prefs.values()}
    held = {unit[h.key] for h in prefs.values() if not h.train_only and _drawn(unit[h.key], cfg.human_eval_fraction, seed)}
    held |= set(unit.values()) & policy_eval
    train_h, eval_h, dropped = [], [], 0
    for h in prefs.values():
        if unit[h.key] not in held:
            train_h.append(h)
        elif h.train_only:
            dropped += 1  # may not be measured, and may not train beside its prompt's held-out pairs
        else:
            eval_h.append(h)
    return train_h, eval_h, ties, dropped


def human_split(human: list[HumanLabel], feedback: list[Feedback], cfg: MixConfig, seed: int,
                policy_eval: frozenset[str] = frozenset()) -> tuple[list[HumanLabel], list[HumanLabel]]:
    """(train, held-out) human preference pairs exactly as ``mix`` splits them (``Run.human_split``)."""
    derived, _ = fb.feedback_pairs(list(feedback), cfg.feedback)
    train_h, eval_h, _, _ = split_human(human, cfg, seed, derived, policy_eval)
    return train_h, eval_h


class Pairs(Sequence):
    """Preference pairs in order. An AI pair read from the store is held as its row id and its texts are read
    back in chunks when the pairs are iterated (``resolve``: ``Store.ai_pairs_by_rows``): the mix of a million
    AI pairs holds a few numbers per pair, not its texts. Other pairs are held as ``PreferencePair``s
    (``side``, negative handles)."""

    def __init__(self, handles, side: list[PreferencePair], resolve: Callable[[list[int]], dict] | None):
        self._handles, self._side, self._resolve = handles, side, resolve

    def __len__(self) -> int:
        return len(self._handles)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Pairs(self._handles[i], self._side, self._resolve)
        n = len(self._handles)
        if not -n <= i < n:
            raise IndexError(i)
        i %= n
        return next(iter(Pairs(self._handles[i:i + 1], self._side, self._resolve)))

    def __iter__(self) -> Iterator[PreferencePair]:
        for start in range(0, len(self._handles), 1000):
            chunk = self._handles[start:start + 1000].tolist()
            rows = [h for h in chunk if h >= 0]
            got = self._resolve(rows) if rows else {}
            for h in chunk:
                yield self._side[-1 - h] if h < 0 else _ai_pair(got[h])

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)


def _ai_pair(a: dict) -> PreferencePair:
    return PreferencePair(a["prompt"], a["chosen"], a["rejected"], AI, 1.0, a["confidence"], a.get("prompt_id"),
                          {"gap": a["details"].get("gap")})


def mix(ai_pairs: Iterable[dict], human: list[HumanLabel], cfg: MixConfig, seed: int,
        feedback: list[Feedback] = (), revisions: list[dict] = (),
        resolve: Callable[[list[int]], dict] | None = None, policy_eval: frozenset[str] = frozenset()
        ) -> tuple[dict, dict]:
    """Return ({"train": Pairs, "eval": Pairs, "unpaired": [rows]}, stats). With ``resolve``, AI pairs that
    carry a store ``row`` are kept as row ids and read back through it (see ``Pairs``). ``policy_eval``: the
    units of the prompts the policy is evaluated on (``Run.policy_eval_units``): no pair on one trains (its
    human pairs are held out, its AI pairs and revisions dropped), or the policy evaluation would measure
    prompts the reward model and the policy were trained on."""
    from functools import lru_cache

    import numpy as np

    stats = {"ai_pairs_in": 0, "human_labels_in": len(human), "human_ties": 0,
             "human_overrides": 0, "human_disagreements": 0, "ai_dropped_low_confidence": 0,
             "ai_dropped_held_out": 0, "human_dropped_held_out": 0, "ai_dropped_policy_eval": 0,
             "ai_dropped_mix_ratio": 0, "ai_unscored": 0,
             "ai_feedback_agreements": 0, "ai_feedback_disagreements": 0, "ai_dropped_human_feedback": 0}
    derived, fstats = fb.feedback_pairs(list(feedback), cfg.feedback)
    stats.update(fstats)
    thumbs = fb.thumbs_index(list(feedback))
    train_h, eval_h, stats["human_ties"], stats["human_dropped_held_out"] = split_human(human, cfg, seed, derived,
                                                                                        policy_eval)
    prefs = {h.key: h for h in train_h + eval_h}
    eval_keys = {h.key for h in eval_h}
    eval_prompts = {prompt_unit(h.prompt) for h in eval_h}
    # The AI pairs of a prompt come together from the store: their prompt's unit is worked out once, not per pair.
    unit_of = lru_cache(maxsize=4096)(prompt_unit)

    side: list[PreferencePair] = []

    def held(p: PreferencePair) -> int:  # a handle for a pair held whole
        side.append(p)
        return -len(side)

    # The kept AI pairs as columns: handle (store row id, or a negative index into ``side``), confidence,
    # stable-shuffle key, and whether the pair is held out when there are no human eval labels.
    handle, conf, order_key, held_ai = array("q"), array("d"), array("Q"), bytearray()
    ai_held_out = not eval_h and cfg.human_eval_fraction > 0  # no human eval labels: AI pairs held out instead
    held_ai_prompts: set[int] = set()
    for a in ai_pairs:  # streamed from the store: only a few numbers per kept pair are held
        stats["ai_pairs_in"] += 1
        if a.get("status", "scored") != "scored":
            stats["ai_unscored"] += 1
            continue
        key = a.get("pair_key") or pair_key(a["prompt"], a["chosen"], a["rejected"])
        if key in prefs:
            stats["human_overrides"] += 1
            if prefs[key].chosen.strip() != a["chosen"].strip():
                stats["human_disagreements"] += 1
            if key in eval_keys:
                stats["ai_dropped_held_out"] += 1
            continue  # the human pair (train or eval) takes its place
        unit = unit_of(a["prompt"])
        if unit in policy_eval:
            stats["ai_dropped_policy_eval"] += 1  # a prompt the policy is evaluated on
            continue
        if unit in eval_prompts:
            stats["ai_dropped_held_out"] += 1  # another comparison of a held-out prompt
            continue
        verdict = fb.ai_verdict(thumbs, a["prompt"], a["chosen"], a["rejected"])
        if verdict is not None:
            stats["ai_feedback_agreements" if verdict == fb.AGREE else "ai_feedback_disagreements"] += 1
        if verdict == fb.DISAGREE:
            stats["ai_dropped_human_feedback"] += 1
            continue  # human thumbs say the AI chose wrong
        if a["confidence"] < cfg.min_confidence:
            stats["ai_dropped_low_confidence"] += 1
            continue
        handle.append(a["row"] if resolve is not None and "row" in a else held(_ai_pair(a)))
        conf.append(a["confidence"])
        order_key.append(_order_key(key, seed))
        if ai_held_out:
            held_ai.append(_drawn(unit, cfg.human_eval_fraction, seed))
            if held_ai[-1]:
                held_ai_prompts.add(hash(unit))  # a number per held-out prompt, not its text (one process: one call)
    keep = np.arange(len(handle))
    if cfg.max_ai_per_human is not None:
        cap = int(cfg.max_ai_per_human * max(1, len(train_h)))
        if len(handle) > cap:  # the most confident kept
            keep = np.argsort(-np.frombuffer(conf, dtype=np.float64), kind="stable")[:cap]
            stats["ai_dropped_mix_ratio"] = len(handle) - cap
    n_ai = len(keep)
    ai_held_out = ai_held_out and n_ai > 0  # so the RM still has an eval split

    def human_pair(h: HumanLabel, split: str) -> PreferencePair:
        meta = {"origin": h.source, "annotator": h.annotator} | ({"feedback": h.feedback} if h.feedback else {})
        return PreferencePair(h.prompt, h.chosen, h.rejected, HUMAN, cfg.human_weight if split == "train" else 1.0,
                              None, None, meta, h.margin)

    if ai_held_out:  # train-only human pairs are held out with their prompt's AI pairs
        held_ai_prompts.update(hash(u) for u in map(unit_of, (h.prompt for h in train_h))
                               if _drawn(u, cfg.human_eval_fraction, seed))
    # The critique stage's revisions (rlaif/critique.py): weighted like AI pairs, never held out, and not
    # trained on a prompt whose pairs are held out.
    def held_prompt(prompt: str) -> bool:
        u = unit_of(prompt)
        return u in policy_eval or (hash(u) in held_ai_prompts if ai_held_out else u in eval_prompts)

    revised = [PreferencePair(r["prompt"], r["chosen"], r["rejected"], REVISION, 1.0, None, r.get("prompt_id"),
                              {"principles": r.get("principles"), "writer": r.get("writer")})
               for r in revisions if pair_key(r["prompt"], r["chosen"], r["rejected"]) not in prefs]
    if revisions:
        kept = [p for p in revised if not held_prompt(p.prompt)]
        stats["revision_pairs"], stats["revisions_dropped_held_out"] = len(kept), len(revised) - len(kept)
        revised = kept
    whole = revised + [human_pair(h, "train") for h in train_h]
    handles = np.concatenate([np.frombuffer(handle, dtype=np.int64)[keep],
                              np.array([held(p) for p in whole], dtype=np.int64)])
    keys = np.concatenate([np.frombuffer(order_key, dtype=np.uint64)[keep],
                           np.array([_order_key(p.key, seed) for p in whole], dtype=np.uint64)])
    evals = np.array([held(human_pair(h, "eval")) for h in eval_h], dtype=np.int64)
    human_train = len(train_h)
    if ai_held_out:
        out = np.concatenate([np.frombuffer(held_ai, dtype=np.uint8)[keep].astype(bool),
                              np.array([p.source != REVISION and held_prompt(p.prompt) for p in whole], dtype=bool)])
        handles, keys, evals = handles[~out], keys[~out], handles[out]
        human_train -= int(out[n_ai:].sum())  # train-only human pairs held out with their prompt's AI pairs
        stats["eval_source"] = AI
    else:
        stats["eval_source"] = HUMAN
    handles = handles[np.argsort(keys, kind="stable")]  # stable shuffle
    unpaired = fb.unpaired_rows(list(feedback))
    stats["policy_eval_prompts_labelled"] = len({unit_of(h.prompt) for h in eval_h} & policy_eval)
    stats.update({"ai_pairs": n_ai, "human_pairs": len(train_h) + len(eval_h), "unpaired": len(unpaired),
                  "margin_pairs": sum(side[-1 - h].margin > 0 for h in handles.tolist() if h < 0),
                  "human_train_pairs": human_train, "train_pairs": len(handles), "eval_pairs": len(evals),
                  "human_weight": cfg.human_weight, "max_ai_per_human": cfg.max_ai_per_human,
                  "min_confidence": cfg.min_confidence})
    return {"train": Pairs(handles, side, resolve), "eval": Pairs(evals, side, resolve), "unpaired": unpaired}, stats


def _order_key(key: str, seed: int) -> int:
    """The stable shuffle's sort key of a pair (a 64-bit number: the 16-hex-digit content hash)."""
    return int(content_hash([seed, key]), 16)


def save_pairs(splits: dict[str, list], layout: RunLayout) -> None:
    """Write a datasets.DatasetDict to ``layout.pairs`` (whole or not at all): train/eval preference pairs
    and the ``unpaired`` split of single-response feedback (prompt, completion, label: KTO's format)."""
    from datasets import Dataset, DatasetDict, Features, Value

    features = Features({"prompt": Value("string"), "chosen": Value("string"), "rejected": Value("string"),
                         "source": Value("string"), "weight": Value("float64"), "confidence": Value("float64"),
                         "prompt_id": Value("string"), "meta": Value("string"), "margin": Value("float64")})
    unpaired = Features({"prompt": Value("string"), "completion": Value("string"), "label": Value("bool"),
                         "source": Value("string"), "meta": Value("string")})

    import shutil
    import tempfile

    from datasets.arrow_writer import ArrowWriter
    from datasets.table import MemoryMappedTable

    from rlaif.hashing import file_hash

    tmp = layout.partial(layout.pairs)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=".pairs-build-") as build:

        def to_dataset(name, rows, feats):
            # Written to an Arrow file in batches (not a list of rows and then a dict of columns: three
            # copies of a million pairs), then memory-mapped.
            path = f"{build}/{name}.arrow"
            with ArrowWriter(features=feats, path=path) as writer:
                batch: list[dict] = []
                for p in rows:
                    batch.append(p if isinstance(p, dict) else p.to_row())
                    if len(batch) >= 10_000:
                        writer.write_batch({k: [r[k] for r in batch] for k in feats})
                        batch = []
                writer.write_batch({k: [r[k] for r in batch] for k in feats})
                writer.finalize()
            # a content fingerprint (from_file's is the temporary path's): the same pairs save the same files
            return Dataset(MemoryMappedTable.from_file(path), fingerprint=file_hash(path))

        dd = DatasetDict({name: to_dataset(name, rows, unpaired if name == "unpaired" else features)
                          for name, rows in splits.items()})
        # num_shards=1: datasets writes zero shards for an empty split and then cannot load it.
        dd.save_to_disk(str(tmp), num_shards={name: 1 for name in dd})
        del dd
    finalize_dir(tmp, layout.pairs)
