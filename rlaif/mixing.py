"""The mixed queue: AI pairs + human labels -> training and eval pairs.

Rules (all counted in the returned stats and recorded in the manifest):
- a human label on the same prompt and pair as an AI pair overrides it
  (disagreements counted);
- AI pairs below ``min_confidence`` are dropped;
- a ``human_eval_fraction`` share of human preference labels is held out as
  the eval split, chosen by content hash (stable across runs) and never
  trained on, not even through an AI pair on the same comparison; labels
  imported without ``--human`` are never held out (``HumanLabel.train_only``);
- ``max_ai_per_human`` caps AI pairs per human train pair (highest
  confidence kept) and ``human_weight`` sets a human pair's loss weight.
"""

from __future__ import annotations

from rlaif.config import MixConfig
from rlaif.hashing import content_hash
from rlaif.layout import RunLayout, finalize_dir
from rlaif.records import HumanLabel, PreferencePair, pair_key
from rlaif.vocab import AI, FILE, HUMAN, PREFERENCE


def _held_out(key: str, fraction: float, seed: int) -> bool:
    return int(content_hash([seed, key], 8), 16) / 0xFFFFFFFF < fraction


def mix(ai_pairs: list[dict], human: list[HumanLabel], cfg: MixConfig, seed: int) -> tuple[dict, dict]:
    """Return ({"train": [...], "eval": [...]}, stats)."""
    stats = {"ai_pairs_in": len(ai_pairs), "human_labels_in": len(human), "human_ties": 0,
             "human_overrides": 0, "human_disagreements": 0, "ai_dropped_low_confidence": 0,
             "ai_dropped_held_out": 0, "ai_dropped_mix_ratio": 0, "ai_unscored": 0}
    prefs: dict[str, HumanLabel] = {}
    # File labels are re-inserted on every run; viewer and import labels must still win over them.
    for h in sorted(human, key=lambda h: not h.source.startswith(FILE)):
        if h.label != PREFERENCE:
            stats["human_ties"] += 1
            continue
        prefs[h.key] = h  # a later label (e.g. from the viewer) replaces an earlier one
    train_h, eval_h = [], []
    for key, h in prefs.items():
        held = not h.train_only and _held_out(key, cfg.human_eval_fraction, seed)  # imports: train only
        (eval_h if held else train_h).append(h)
    eval_keys = {h.key for h in eval_h}

    ai_train: list[PreferencePair] = []
    overridden: set[str] = set()
    for a in ai_pairs:
        if a.get("status", "scored") != "scored":
            stats["ai_unscored"] += 1
            continue
        key = pair_key(a["prompt"], a["chosen"], a["rejected"])
        if key in prefs:
            stats["human_overrides"] += 1
            overridden.add(key)
            if prefs[key].chosen.strip() != a["chosen"].strip():
                stats["human_disagreements"] += 1
            if key in eval_keys:
                stats["ai_dropped_held_out"] += 1
            continue  # the human pair (train or eval) takes its place
        if a["confidence"] < cfg.min_confidence:
            stats["ai_dropped_low_confidence"] += 1
            continue
        ai_train.append(PreferencePair(a["prompt"], a["chosen"], a["rejected"], AI, 1.0, a["confidence"],
                                       a.get("prompt_id"), {"gap": a["details"].get("gap")}))
    if cfg.max_ai_per_human is not None:
        cap = int(cfg.max_ai_per_human * max(1, len(train_h)))
        if len(ai_train) > cap:
            ai_train.sort(key=lambda p: -(p.confidence or 0))
            stats["ai_dropped_mix_ratio"] = len(ai_train) - cap
            ai_train = ai_train[:cap]

    def human_pair(h: HumanLabel, split: str) -> PreferencePair:
        return PreferencePair(h.prompt, h.chosen, h.rejected, HUMAN, cfg.human_weight if split == "train" else 1.0,
                              None, None, {"origin": h.source, "annotator": h.annotator})

    train = ai_train + [human_pair(h, "train") for h in train_h]
    evals = [human_pair(h, "eval") for h in eval_h]
    if not evals and ai_train and cfg.human_eval_fraction > 0:
        # No human labels at all: hold out AI pairs instead, so the RM still has an eval split.
        keep, held = [], []
        for p in train:
            (held if _held_out(p.key, cfg.human_eval_fraction, seed) else keep).append(p)
        train, evals = keep, held
        stats["eval_source"] = AI
    else:
        stats["eval_source"] = HUMAN
    train.sort(key=lambda p: content_hash([seed, p.key]))  # stable shuffle
    stats.update({"ai_pairs": len(ai_train), "human_pairs": len(train_h) + len(eval_h),
                  "human_train_pairs": len(train_h), "train_pairs": len(train), "eval_pairs": len(evals),
                  "human_weight": cfg.human_weight, "max_ai_per_human": cfg.max_ai_per_human,
                  "min_confidence": cfg.min_confidence})
    return {"train": train, "eval": evals}, stats


def save_pairs(splits: dict[str, list[PreferencePair]], layout: RunLayout) -> None:
    """Write a datasets.DatasetDict with train/eval splits to ``layout.pairs`` (whole or not at all)."""
    from datasets import Dataset, DatasetDict, Features, Value

    features = Features({"prompt": Value("string"), "chosen": Value("string"), "rejected": Value("string"),
                         "source": Value("string"), "weight": Value("float64"), "confidence": Value("float64"),
                         "prompt_id": Value("string"), "meta": Value("string")})
    def to_dataset(rows):
        recs = [p.to_row() for p in rows]
        return Dataset.from_dict({k: [r[k] for r in recs] for k in features}, features=features)

    dd = DatasetDict({name: to_dataset(rows) for name, rows in splits.items()})
    tmp = layout.partial(layout.pairs)
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    # num_shards=1: datasets writes zero shards for an empty split and then cannot load it.
    dd.save_to_disk(str(tmp), num_shards={name: 1 for name in dd})
    finalize_dir(tmp, layout.pairs)
