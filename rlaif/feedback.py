"""Single-response human feedback (thumbs, ratings, rankings) -> training signal.

Rules (each counted in the mix stats, which go to the manifest and the report):

- feedback compares within a group: thumbs on the same prompt; ratings on the same prompt and scale;
  the completions of one ranking record. Several verdicts on one response in a group (two annotators)
  are averaged on a 0..1 "goodness" scale (``Feedback.goodness``: rating (r-1)/(N-1), rank (K-k)/(K-1),
  thumbs 1 up / 0 down);
- within a group, responses of different goodness become preference pairs: every such pair
  (``mix.feedback.pairs: all``) or only the best tier against the worst (``best_worst``); equal goodness
  is a tie and makes no pair (counted); a group gives at most ``mix.feedback.max_pairs_per_group`` pairs (a
  stable sample of a larger group's pairs; the rest counted as capped);
- a pair's reward-model margin is ``mix.feedback.margin`` times the goodness gap (so a 5 against a 1 on a
  1-5 scale, or a thumbs up against a down, gets the full margin; 0 turns margins off);
- thumbs on a prompt with both an up and a down become pairs; every thumbs verdict is also kept as an
  unpaired (KTO) example, the data ``policy_training.algorithm: kto`` trains on;
- thumbs on a response of an AI pair (``ai_verdict``) agree or disagree with the AI: a net thumbs-down
  on the response the AI chose, or a chosen response with a lower net verdict than the rejected one
  (a response without thumbs counts as 0.5), is a disagreement, and the mix drops that AI pair; else a
  net thumbs-up on the chosen or down on the rejected agrees (both up agrees, both down disagrees).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from typing import Literal

from rlaif.config import FeedbackConfig
from rlaif.records import Feedback, HumanLabel, feedback_key
from rlaif.vocab import PREFERENCE, RANK, RATING, THUMBS

AGREE, DISAGREE = "agree", "disagree"


def _group(f: Feedback) -> tuple:
    if f.kind == THUMBS:
        return THUMBS, f.prompt.strip()
    if f.kind == RATING:
        return RATING, f.prompt.strip(), f.scale
    return RANK, f.prompt.strip(), f.source  # a ranking orders its own completions only


def _source(items: list[Feedback]) -> str:
    """The source a derived pair carries: an imported one if any (then it may train but is never held out)."""
    return min((not f.train_only, f.source) for f in items)[1]


def _pair_indices(goodness: list[float], best_worst: bool, cap: int, seed: str) -> tuple[list[tuple[int, int]], int]:
    """The (better, worse) index pairs of a group sorted best first (``goodness`` non-increasing): every pair
    of different goodness (or the best tier against the worst), in ``combinations`` order; a group with more
    than ``cap`` gives a stable sample of ``cap`` of them. Returns (pairs, how many were left out).

    Never walks the tied pairs: a prompt with 3,000 thumbs has 2.25M pairs and as many ties."""
    import random
    from bisect import bisect_left, bisect_right

    n = len(goodness)
    neg = [-g for g in goodness]  # non-decreasing, for bisect
    if best_worst:
        n_top, lo = bisect_right(neg, neg[0]), bisect_left(neg, neg[-1])
        lower = [n - lo if i < n_top and lo >= n_top else 0 for i in range(n)]
    else:
        lower = [n - bisect_right(neg, neg[i]) for i in range(n)]  # how many are strictly worse than i
    total = sum(lower)
    if total <= cap:
        return [(i, j) for i in range(n) for j in range(n - lower[i], n)], 0
    rng, cum, got = random.Random(seed), list(itertools.accumulate(lower)), set()
    for _ in range(20 * cap):  # i drawn by its number of worse partners, then one of them: uniform over pairs
        i = bisect_right(cum, rng.randrange(total))
        got.add((i, n - lower[i] + rng.randrange(lower[i])))
        if len(got) == cap:
            break
    return sorted(got), total - len(got)


def _groups(feedback: list[Feedback]) -> dict[tuple, dict[str, list[Feedback]]]:
    """group -> response text (stripped) -> the verdicts on it there."""
    groups: dict[tuple, dict[str, list[Feedback]]] = defaultdict(lambda: defaultdict(list))
    for f in feedback:
        groups[_group(f)][f.completion.strip()].append(f)
    return groups


def goodness_index(feedback: list[Feedback]) -> dict[str, dict[str, float]]:
    """feedback_key of a response -> {its group (``repr``, the order ``feedback_pairs`` walks groups in):
    its mean goodness there}: which of two texts people put higher, without making every pair."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for group, responses in _groups(feedback).items():
        for fs in responses.values():
            out[fs[0].key][repr(group)] = sum(f.goodness for f in fs) / len(fs)
    return out


def feedback_pairs(feedback: list[Feedback], cfg: FeedbackConfig) -> tuple[list[HumanLabel], dict]:
    """Preference pairs (HumanLabel with ``margin`` and ``feedback`` set) and their stats."""
    groups = _groups(feedback)
    pairs: list[HumanLabel] = []
    by_kind = {k: 0 for k in (THUMBS, RATING, RANK)}
    ties = thumbs_paired = capped = 0
    for group, responses in sorted(groups.items(), key=lambda kv: repr(kv[0])):
        kind = group[0]
        scored = sorted(((sum(f.goodness for f in fs) / len(fs), text, fs) for text, fs in responses.items()),
                        key=lambda t: (-t[0], t[1]))
        if len(scored) < 2:
            continue
        made = 0
        ties += sum(k * (k - 1) // 2 for k in Counter(g for g, _, _ in scored).values())
        chosen, left_out = _pair_indices([g for g, _, _ in scored], cfg.pairs == "best_worst",
                                         cfg.max_pairs_per_group, repr(group))
        capped += left_out
        for (ga, _, fa), (gb, _, fb) in ((scored[i], scored[j]) for i, j in chosen):
            prompt = fa[0].prompt
            pairs.append(HumanLabel(prompt, fa[0].completion, fb[0].completion, PREFERENCE, _source(fa + fb),
                                    margin=round(cfg.margin * (ga - gb), 6), feedback=kind))
            made += 1
        by_kind[kind] += made
        if kind == THUMBS:  # the verdicts on the responses that are in a pair
            thumbs_paired += sum(len(scored[i][2]) for i in {i for pair in chosen for i in pair})
    n_thumbs = sum(f.kind == THUMBS for f in feedback)
    stats = {"feedback_in": len(feedback), "feedback_by_kind": {k: sum(f.kind == k for f in feedback)
                                                                 for k in (THUMBS, RATING, RANK)},
             "feedback_pairs": len(pairs), "feedback_pairs_by_kind": by_kind, "feedback_ties_dropped": ties,
             "feedback_pairs_capped": capped, "feedback_max_pairs_per_group": cfg.max_pairs_per_group,
             "thumbs_paired": thumbs_paired, "thumbs_unpaired": n_thumbs - thumbs_paired,
             "feedback_pairing": cfg.pairs, "feedback_margin": cfg.margin,
             "with_comment": sum(f.comment is not None for f in feedback)}
    return pairs, stats


def thumbs_index(feedback: list[Feedback]) -> dict[str, float]:
    """feedback_key -> net thumbs (mean of the verdicts: 1 all up, 0 all down)."""
    votes: dict[str, list[int]] = defaultdict(list)
    for f in feedback:
        if f.kind == THUMBS:
            votes[f.key].append(f.value)
    return {k: sum(v) / len(v) for k, v in votes.items()}


def ai_verdict(thumbs: dict[str, float], prompt: str, chosen: str, rejected: str) -> Literal["agree", "disagree"] | None:
    """What thumbs on an AI pair's responses say about the AI's choice (None: no thumbs on either, or no
    information). Unknown responses count as neutral (0.5)."""
    if not thumbs:
        return None  # no thumbs at all (the usual case): no key to hash
    c, r = thumbs.get(feedback_key(prompt, chosen)), thumbs.get(feedback_key(prompt, rejected))
    if c is None and r is None:
        return None
    c, r = 0.5 if c is None else c, 0.5 if r is None else r
    if c < 0.5 or c < r:
        return DISAGREE
    if c > 0.5 or r < 0.5:
        return AGREE
    return None


def unpaired_rows(feedback: list[Feedback]) -> list[dict]:
    """The thumbs as KTO rows: {prompt, completion, label, source, meta}."""
    import json

    return [{"prompt": f.prompt, "completion": f.completion, "label": f.up, "source": f.source,
             "meta": json.dumps({"annotator": f.annotator, "comment": f.comment}, sort_keys=True)}
            for f in feedback if f.kind == THUMBS]


def feedback_records(feedback: list[Feedback]) -> list[dict]:
    """Single-response feedback as the records a labels file holds (what `labels export` writes and
    `labels import` / ``mix.human_labels`` read back): thumbs and ratings one record each, a ranking one
    record (its completions, grouped by prompt and source); the prompt as a message list (exact either way),
    plus ``kind`` (human), ``source``, ``annotator``, ``comment``."""
    from rlaif import chat
    from rlaif.vocab import HUMAN

    out, ranks = [], defaultdict(list)
    for f in feedback:
        if f.kind == RANK:
            ranks[(f.prompt, f.source)].append(f)
            continue
        value = {"label": bool(f.value)} if f.kind == THUMBS else {"rating": f.value, "scale": f.scale}
        out.append({"kind": HUMAN, "prompt": chat.messages(f.prompt), "completion": f.completion, **value,
                    "source": f.source, "annotator": f.annotator, "comment": f.comment})
    for (prompt, source), fs in ranks.items():
        comments = sorted({f.comment for f in fs if f.comment})
        out.append({"kind": HUMAN, "prompt": chat.messages(prompt), "completions": [f.completion for f in fs],
                    "ranking": [f.value for f in fs], "source": source, "annotator": fs[0].annotator,
                    "comment": "; ".join(comments) or None})
    return out
