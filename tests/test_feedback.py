"""Human feedback in the forms people give it: thumbs (TRL KTO format), ratings, rankings, comments ->
stored feedback -> preference pairs with reward-model margins, unpaired KTO rows, AI-pair overrides."""

from __future__ import annotations

import io
import json

import pytest

from rlaif import chat
from rlaif.config import FeedbackConfig, MixConfig
from rlaif.errors import RlaifError
from rlaif.feedback import feedback_pairs
from rlaif.mixing import mix, save_pairs
from rlaif.records import Feedback, HumanLabel, load_human_labels, load_label_file
from rlaif.store import Store
from rlaif.vocab import import_name


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


CONV = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tea?"}]


def test_every_form_is_read_with_comments(tmp_path):
    p = _write(tmp_path / "fb.jsonl", [
        {"prompt": "q", "chosen": "good", "rejected": "bad", "comment": "clearer"},
        {"prompt": "q", "completion": "up answer", "label": True, "annotator": "ann"},
        {"prompt": CONV, "completion": [{"role": "assistant", "content": "Green."}], "label": False},
        {"prompt": "r", "completion": "four", "rating": 4, "scale": 5, "comment": " nice "},
        {"prompt": "s", "completions": ["a", "b", "c"], "ranking": [2, 1, 2]},
    ])
    labels, fb = load_label_file(p)
    assert [(h.chosen, h.note, h.source) for h in labels] == [("good", "clearer", "fb.jsonl:1")]
    got = [(f.prompt, f.completion, f.kind, f.value, f.scale, f.source) for f in fb]
    assert got == [("q", "up answer", "thumbs", 1, 2, "fb.jsonl:2"),
                   (chat.encode(CONV), "Green.", "thumbs", 0, 2, "fb.jsonl:3"),
                   ("r", "four", "rating", 4, 5, "fb.jsonl:4"),
                   ("s", "a", "rank", 2, 2, "fb.jsonl:5"), ("s", "b", "rank", 1, 2, "fb.jsonl:5"),
                   ("s", "c", "rank", 2, 2, "fb.jsonl:5")]
    assert fb[0].annotator == "ann" and fb[2].comment == "nice"
    assert [f.goodness for f in fb] == [1.0, 0.0, 0.75, 0.0, 1.0, 0.0]


BAD = {
    "thumbs-label-string": ({"prompt": "q", "completion": "a", "label": "up"}, "field 'label' must be true"),
    "thumbs-no-completion": ({"prompt": "q", "label": True}, "needs 'completion'"),
    "no-prompt": ({"completion": "a", "label": True}, "needs 'prompt'"),
    "empty-completion": ({"prompt": "q", "completion": " ", "label": True}, "field 'completion' is empty"),
    "user-completion": ({"prompt": "q", "completion": [{"role": "user", "content": "x"}], "label": True},
                        "only assistant messages"),
    "rating-no-scale": ({"prompt": "q", "completion": "a", "rating": 3}, "both 'rating' and 'scale'"),
    "rating-over-scale": ({"prompt": "q", "completion": "a", "rating": 6, "scale": 5},
                          "field 'rating' must be an integer from 1 to 5"),
    "rating-zero": ({"prompt": "q", "completion": "a", "rating": 0, "scale": 5}, "field 'rating'"),
    "rating-half": ({"prompt": "q", "completion": "a", "rating": 3.5, "scale": 5}, "field 'rating'"),
    "rating-bool": ({"prompt": "q", "completion": "a", "rating": True, "scale": 5}, "field 'rating'"),
    "scale-one": ({"prompt": "q", "completion": "a", "rating": 1, "scale": 1}, "field 'scale' must be an integer from 2"),
    "rank-and-label": ({"prompt": "q", "completions": ["a", "b"], "ranking": [1, 2], "label": True},
                       "a rank record with field 'label'"),
    "rank-and-completion": ({"prompt": "q", "completion": "a", "completions": ["a", "b"], "ranking": [2, 1]},
                            "a rank record with field 'completion'"),
    "rank-and-rating": ({"prompt": "q", "completions": ["a", "b"], "ranking": [1, 2], "rating": 4, "scale": 5},
                        "a rank record with field 'rating'"),
    "thumbs-and-chosen": ({"prompt": "q", "completion": "a", "label": True, "chosen": "a", "rejected": "b"},
                          "a thumbs record with field 'chosen'"),
    "rating-and-response-a": ({"prompt": "q", "completion": "a", "rating": 2, "scale": 5, "response_a": "b"},
                              "a rating record with field 'response_a'"),
    "rating-and-label": ({"prompt": "q", "completion": "a", "rating": 1, "scale": 5, "label": True}, "not both"),
    "rank-one": ({"prompt": "q", "completions": ["a"], "ranking": [1]}, "field 'completions' must be a list of 2"),
    "rank-not-list": ({"prompt": "q", "completions": "ab", "ranking": [1, 2]}, "field 'completions'"),
    "rank-length": ({"prompt": "q", "completions": ["a", "b"], "ranking": [1]}, "one rank per completion"),
    "rank-range": ({"prompt": "q", "completions": ["a", "b"], "ranking": [1, 3]},
                   "field 'ranking' must be an integer from 1 to 2"),
    "rank-duplicate": ({"prompt": "q", "completions": ["a", " a"], "ranking": [1, 2]}, "same text twice"),
    "rank-empty-text": ({"prompt": "q", "completions": ["a", ""], "ranking": [1, 2]}, "'completions[1]' is empty"),
    "comment-not-string": ({"prompt": "q", "completion": "a", "label": True, "comment": 5},
                           "field 'comment' must be a string"),
    "ai-marked": ({"prompt": "q", "completion": "a", "label": True, "source": "ai:llm"}, "an AI label"),
    # a number over Python's 4,300-digit int limit made json.loads raise ValueError (a traceback); one
    # under it was printed whole in the message
    "rating-5000-digits": ('{"prompt": "q", "completion": "a", "rating": ' + "9" * 5000 + ', "scale": 5}',
                           "more than 4300 digits"),
    "scale-1e308": ({"prompt": "q", "completion": "a", "rating": 1, "scale": 1e308},
                    "field 'scale' must be an integer from 2 to 100, got 1000000000"),
    "rank-4000-digits": ('{"prompt": "q", "completions": ["a", "b"], "ranking": [1, ' + "9" * 4000 + "]}",
                         "field 'ranking' must be an integer from 1 to 2"),
}


@pytest.mark.parametrize("case", sorted(BAD), ids=str)
def test_bad_feedback_names_file_line_and_field(case, tmp_path):
    record, msg = BAD[case]
    p = _write(tmp_path / "fb.jsonl", [{"prompt": "q", "completion": "fine", "label": True}, record])
    with pytest.raises(RlaifError) as e:
        load_label_file(p)
    assert e.value.message.startswith(f"{p}:2:"), e.value.message
    assert msg in e.value.message and "\n" not in e.value.message and len(e.value.message) < 300


def test_a_prompt_that_looks_like_json_with_a_huge_number_is_plain_text(tmp_path):
    # chat's decoding of a stored prompt that starts like a JSON conversation raised json's ValueError
    # (an integer over 4,300 digits) as a traceback
    text = '[{"role": ' + "9" * 5000 + "}]"
    _, fb = load_label_file(_write(tmp_path / "fb.jsonl", [{"prompt": text, "completion": "a", "label": True}]))
    assert chat.messages(fb[0].prompt) == [{"role": "user", "content": text}]


def test_a_utf8_byte_order_mark_is_read_as_utf8(tmp_path):
    # a file saved "UTF-8 with BOM" (Notepad, Excel) was refused on line 1: "invalid JSON (Unexpected UTF-8 BOM)"
    p = tmp_path / "fb.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompt": "q", "completion": "caf\u00e9", "label": True}).encode() + b"\n")
    assert [(f.prompt, f.completion) for f in load_label_file(p)[1]] == [("q", "caf\u00e9")]


def test_pairs_only_readers_refuse_feedback(tmp_path):
    p = _write(tmp_path / "fb.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"},
                                        {"prompt": "q", "completion": "a", "label": True}])
    with pytest.raises(RlaifError, match=r"fb.jsonl:2: a thumbs record .* mix.human_labels"):
        load_human_labels(p)


def test_store_keeps_feedback_and_comments(tmp_path):
    fb = [Feedback("q", "a", "rating", 4, 5, "file:x:1", "ann", "good"), Feedback("q", "b", "thumbs", 0, 2, "viewer:ann")]
    with Store(tmp_path / "s.sqlite") as s:
        s.add_feedback(fb)
        s.add_feedback([Feedback("q", "b", "thumbs", 1, 2, "viewer:ann", comment="changed my mind")])  # replaces
        got = s.feedback()
        assert [(f.completion, f.value, f.comment) for f in got] == [("a", 4, "good"), ("b", 1, "changed my mind")]
        s.delete_human_labels_from("file:")
        assert [f.source for f in s.feedback()] == ["viewer:ann"]


# ---------------------------------------------------------------- feedback -> pairs
def R(completion, rating, prompt="q", scale=5, source="file:f:1"):
    return Feedback(prompt, completion, "rating", rating, scale, source)


def T(completion, up, prompt="q", source="file:f:1"):
    return Feedback(prompt, completion, "thumbs", int(up), 2, source)


def test_ratings_all_pairs_margins_and_ties():
    fb = [R("five", 5), R("three", 3), R("three too", 3), R("one", 1)]
    pairs, st = feedback_pairs(fb, FeedbackConfig())
    got = sorted((h.chosen, h.rejected, h.margin) for h in pairs)
    assert got == [("five", "one", 1.0), ("five", "three", 0.5), ("five", "three too", 0.5),
                   ("three", "one", 0.5), ("three too", "one", 0.5)]
    assert st["feedback_ties_dropped"] == 1 and st["feedback_pairs_by_kind"]["rating"] == 5
    bw, st = feedback_pairs(fb, FeedbackConfig(pairs="best_worst", margin=2.0))
    assert [(h.chosen, h.rejected, h.margin) for h in bw] == [("five", "one", 2.0)]


def test_ratings_group_by_prompt_and_scale_and_average_annotators():
    fb = [R("a", 5), R("a", 3, source="file:f:2"), R("b", 2), R("c", 9, scale=10), R("d", 1, prompt="other")]
    pairs, st = feedback_pairs(fb, FeedbackConfig())
    assert [(h.chosen, h.rejected, h.margin) for h in pairs] == [("a", "b", 0.5)]  # mean of a: 4 -> (4-2)/4


def test_rankings_pair_within_their_record():
    fb = [Feedback("q", t, "rank", r, 3, "file:f:7") for t, r in (("x", 1), ("y", 2), ("z", 3))]
    fb.append(Feedback("q", "w", "rank", 1, 2, "file:f:8"))  # another ranking: never compared with the first
    pairs, st = feedback_pairs(fb, FeedbackConfig(pairs="all"))
    assert sorted((h.chosen, h.rejected, h.margin) for h in pairs) == [("x", "y", 0.5), ("x", "z", 1.0),
                                                                       ("y", "z", 0.5)]
    assert {h.feedback for h in pairs} == {"rank"}


def test_thumbs_pair_only_with_an_up_and_a_down():
    fb = [T("good", True), T("bad", False), T("fine", True, prompt="q2"), T("meh", True, prompt="q2")]
    pairs, st = feedback_pairs(fb, FeedbackConfig())
    assert [(h.chosen, h.rejected, h.margin) for h in pairs] == [("good", "bad", 1.0)]
    assert st["thumbs_paired"] == 2 and st["thumbs_unpaired"] == 2
    # best_worst: a response between the best and the worst (one up, one down) is in no pair: not "paired"
    fb = [T("good", True), T("bad", False), T("mixed", True, source="viewer:a"), T("mixed", False, source="viewer:b")]
    pairs, st = feedback_pairs(fb, FeedbackConfig(pairs="best_worst"))
    assert [(h.chosen, h.rejected) for h in pairs] == [("good", "bad")]
    assert st["thumbs_paired"] == 2 and st["thumbs_unpaired"] == 2


def test_a_large_group_gives_a_stable_sample_of_its_pairs():
    """3,000 thumbs on one prompt made 2.25M pairs (71 s, 1.9 GB in the mix; 10,000 would not fit in memory):
    a group gives at most mix.feedback.max_pairs_per_group (1000) pairs, a stable sample, ties never walked."""
    import time

    fb = [T(f"answer {i}", i % 2 == 0, source=f"file:f:{i}") for i in range(3000)]
    t = time.monotonic()
    pairs, st = feedback_pairs(fb, FeedbackConfig())
    assert time.monotonic() - t < 10
    assert len(pairs) == len({h.key for h in pairs}) == 1000 == st["feedback_pairs"]
    assert all(int(h.chosen.split()[1]) % 2 == 0 and int(h.rejected.split()[1]) % 2 == 1 and h.margin == 1.0
               for h in pairs)
    assert st["feedback_pairs_capped"] == 1500 * 1500 - 1000 and st["feedback_ties_dropped"] == 1500 * 1499
    paired = {t for h in pairs for t in (h.chosen, h.rejected)}
    assert st["thumbs_paired"] == len(paired) < 3000 and st["thumbs_unpaired"] == 3000 - len(paired)
    assert [h.key for h in feedback_pairs(fb[::-1], FeedbackConfig())[0]] == [h.key for h in pairs]  # stable
    everything = {(h.chosen, h.rejected, h.margin) for h in feedback_pairs(fb[:20], FeedbackConfig())[0]}
    assert len(everything) == 100  # under the cap: every pair
    for mode in ("all", "best_worst"):
        fb = [R(t, r) for t, r in (("a", 5), ("b", 5), ("c", 3), ("d", 1), ("e", 1))]
        full, _ = feedback_pairs(fb, FeedbackConfig(pairs=mode))
        few, st = feedback_pairs(fb, FeedbackConfig(pairs=mode, max_pairs_per_group=3))
        assert len(few) == 3 and {h.key for h in few} < {h.key for h in full}
        assert st["feedback_pairs_capped"] == len(full) - 3 and st["feedback_ties_dropped"] == 2
    # the default leaves the mix's hash as it was before the key existed (old runs' mix stays valid)
    assert "max_pairs_per_group" not in MixConfig().hash_view()["feedback"]
    assert MixConfig(feedback=FeedbackConfig(max_pairs_per_group=3)).hash_view()["feedback"]["max_pairs_per_group"] == 3


def ai(prompt, chosen, rejected, conf=0.9):
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "confidence": conf, "prompt_id": prompt,
            "details": {"gap": 1.0}}


def test_mix_feedback_pairs_margins_overrides_and_unpaired():
    fb = [R("five", 5, prompt="p1"), R("two", 2, prompt="p1"),      # overrides the AI pair on p1 (AI disagrees)
          T("ai-pick", False, prompt="p2"),                          # a thumbs-down on the AI's choice
          T("good", True, prompt="p3"),                              # agrees with the AI
          T("lonely", True, prompt="p4")]
    pairs = [ai("p1", "two", "five"), ai("p2", "ai-pick", "other"), ai("p3", "good", "worse"), ai("p5", "x", "y")]
    human = [HumanLabel("p6", "left", "right")]
    splits, st = mix(pairs, human, MixConfig(human_eval_fraction=0.0), 0, fb)
    train = {(p.prompt, p.chosen, p.rejected): p for p in splits["train"]}
    assert set(train) == {("p1", "five", "two"), ("p3", "good", "worse"), ("p5", "x", "y"), ("p6", "left", "right")}
    assert train[("p1", "five", "two")].margin == 0.75 and train[("p1", "five", "two")].source == "human"
    assert json.loads(json.dumps(train[("p1", "five", "two")].meta))["feedback"] == "rating"
    assert train[("p6", "left", "right")].margin == 0.0 and train[("p5", "x", "y")].margin == 0.0
    assert st["human_overrides"] == 1 and st["human_disagreements"] == 1
    assert st["ai_feedback_disagreements"] == 1 and st["ai_dropped_human_feedback"] == 1
    assert st["ai_feedback_agreements"] == 1
    assert st["feedback_pairs"] == 1 and st["margin_pairs"] == 1 and st["unpaired"] == 3
    assert sorted((r["completion"], r["label"]) for r in splits["unpaired"]) == [
        ("ai-pick", False), ("good", True), ("lonely", True)]


@pytest.mark.parametrize("chosen,rejected,verdict", [
    ([False], [], "disagree"), ([], [True], "disagree"), ([True], [], "agree"), ([], [False], "agree"),
    ([True], [True], "agree"),            # both up: the AI chose a good one (README: the chosen's verdict is not lower)
    ([False], [False], "disagree"),       # both down: the AI chose one people turned down
    ([True, True, False], [True], "disagree"),  # the chosen's net verdict (2/3) is lower than the rejected's (1)
    ([True, False], [], None), ([], [], None)], ids=str)
def test_ai_verdict_of_thumbs_on_an_ai_pair(chosen, rejected, verdict):
    from rlaif.feedback import ai_verdict, thumbs_index

    fb = [T("c", up, source=f"viewer:{i}") for i, up in enumerate(chosen)]
    fb += [T("r", up, source=f"viewer:r{i}") for i, up in enumerate(rejected)] + [T("x", True, prompt="other")]
    assert ai_verdict(thumbs_index(fb), "q", "c", "r") == verdict


def test_pairwise_label_beats_feedback_pair_on_same_comparison():
    fb = [R("a", 5), R("b", 1)]
    splits, _ = mix([], [HumanLabel("q", "b", "a", source="viewer:x")], MixConfig(human_eval_fraction=0.0), 0, fb)
    assert [(p.chosen, p.margin) for p in splits["train"]] == [("b", 0.0)]


def test_feedback_pairs_enter_the_held_out_human_split():
    fb = [R(f"good{i}", 5, prompt=f"q{i}") for i in range(100)] + [R(f"bad{i}", 1, prompt=f"q{i}") for i in range(100)]
    splits, st = mix([], [], MixConfig(human_eval_fraction=0.3), 3, fb)
    assert 10 < len(splits["eval"]) < 50 and st["eval_source"] == "human"
    assert not {p.key for p in splits["train"]} & {p.key for p in splits["eval"]}
    imported = [R("g", 5, source="import:f:1"), R("b", 1, source="import:f:2")]
    for seed in range(20):  # imported feedback trains but is never held out
        assert not mix([], [], MixConfig(human_eval_fraction=0.9), seed, imported)[0]["eval"]


def test_save_pairs_writes_margin_and_unpaired(tmp_path):
    from datasets import load_from_disk

    from rlaif.layout import RunLayout

    splits, _ = mix([], [], MixConfig(human_eval_fraction=0.0), 0, [R("a", 4), R("b", 2), T("c", False)])
    save_pairs(splits, RunLayout(tmp_path))
    dd = load_from_disk(str(tmp_path / "pairs"))
    assert dd["train"]["margin"] == [0.5]
    assert dd["unpaired"]["label"] == [False] and dd["unpaired"]["completion"] == ["c"]


# ---------------------------------------------------------------- labels stats
def test_labels_stats_agreement_on_ratings_rankings_and_thumbs(tmp_path, capsys):
    """On the test_viewer run (both principles pick the AI's chosen text except concise on p4), hand-computed."""
    from test_viewer import PAIRS, make_run

    from rlaif.cli import main
    from rlaif.evaluate import wilson

    run = make_run(tmp_path / "run")
    P = {pid: (t[0], t[2], t[3]) for pid, t in PAIRS.items()}  # prompt, AI chosen, AI rejected
    fb = [Feedback(P["p1"][0], P["p1"][1], "rating", 5, 5, "file:f:1"),     # people agree with the AI
          Feedback(P["p1"][0], P["p1"][2], "rating", 2, 5, "file:f:2"),
          Feedback(P["p2"][0], P["p2"][1], "rank", 2, 2, "file:f:3"),       # people prefer the AI's rejected
          Feedback(P["p2"][0], P["p2"][2], "rank", 1, 2, "file:f:3"),
          Feedback(P["p4"][0], P["p4"][1], "thumbs", 0, 2, "viewer:bo", comment="too long"),  # down on AI pick
          Feedback(P["p3"][0], P["p3"][1], "thumbs", 1, 2, "viewer:bo"),
          Feedback(P["p3"][0], P["p3"][2], "thumbs", 0, 2, "viewer:bo"),
          Feedback(P["p6"][0], P["p6"][1], "thumbs", 1, 2, "viewer:bo"),    # one up, one down: no verdict
          Feedback(P["p6"][0], P["p6"][1], "thumbs", 0, 2, "viewer:cy"),
          Feedback(P["p5"][0], P["p5"][2], "thumbs", 1, 2, "viewer:bo"),    # an unscored comparison
          Feedback("Not judged?", "x", "rating", 3, 5, "file:f:9")]
    with Store(run / "store.sqlite") as s:
        s.add_feedback(fb)
    out = tmp_path / "st.json"
    assert main(["labels", "stats", str(run), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    fs = json.loads(out.read_text())["feedback"]
    assert fs["by_kind"] == {"rank": 2, "rating": 3, "thumbs": 6} and fs["with_comment"] == 1
    g = fs["graded"]
    assert (g["agreement"], g["n"]) == (0.5, 2) and g["ci95"] == list(wilson(1, 2))
    assert {k: (v["agreement"], v["n"]) for k, v in g["per_principle"].items()} == {"concise": (0.5, 2),
                                                                                     "helpful": (0.5, 2)}
    t = fs["thumbs"]
    assert (t["agreement"], t["n"]) == (pytest.approx(2 / 3), 3) and t["ci95"] == list(wilson(2, 3))
    assert (t["down_ranked_low"]["agreement"], t["down_ranked_low"]["n"]) == (0.5, 2)
    assert (t["up_ranked_high"]["agreement"], t["up_ranked_high"]["n"]) == (1.0, 1)
    assert t["per_principle"]["helpful"]["agreement"] == pytest.approx(2 / 3)
    assert t["per_principle"]["concise"]["agreement"] == 1.0  # concise rejected the thumbs-down text on p4
    assert "thumbs-down" in printed and "0.667" in printed


def test_labels_stats_scores_every_comparison_a_large_ranking_orders():
    """Stats look the two texts of each AI comparison up in the feedback: not through the pairs the mix makes,
    which are a sample of a group past mix.feedback.max_pairs_per_group (a 64-completion ranking has 2,016)."""
    from test_viewer import _details

    from rlaif.labels import feedback_stats
    from rlaif.viewer.queue import Comparison

    fb = [Feedback("q", f"t{i}", "rank", i + 1, 64, "file:f:1") for i in range(64)]
    comps = [Comparison.from_record({"prompt_id": "q", "prompt": "q", "chosen": f"t{i}", "rejected": f"t{63 - i}",
                                     "confidence": 0.9, "status": "scored", "details": _details({}, "scored")})
             for i in range(40)]  # the AI picks the higher-ranked text in the first 32, the lower in the rest
    g = feedback_stats(fb, comps)["graded"]
    assert (g["n"], g["agreement"]) == (40, 32 / 40)


# ---------------------------------------------------------------- the viewer's rating mode
def test_rate_mode_keys_store_feedback_used_by_mix_and_stats(tmp_path):
    """`rlaif view RUN --rate` under Textual's pilot: thumbs, ratings, a comment given before the verdict,
    undo, skip; the stored feedback is what the next mix pairs and what labels stats scores."""
    import asyncio

    from test_viewer import by_id, comps_of, make_run

    from rlaif.viewer.queue import Filters, build_queue, open_run_store
    from rlaif.viewer.rate_app import RateApp
    from rlaif.viewer.rating import responses_of

    run = make_run(tmp_path / "run")
    c = by_id(comps_of(run))
    store = open_run_store(run)
    responses = responses_of(build_queue(store, Filters(), "review", 0, 0.6))
    assert [r.prompt_id for r in responses[:4]] == ["p6", "p6", "p2", "p2"]  # the review queue's order
    assert {r.text for r in responses[:2]} == {c["p6"].chosen, c["p6"].rejected}
    p6_first, p6_second, p2_first = (r.text for r in responses[:3])  # (not the AI's chosen first)
    assert all(r.text for r in responses)  # p5's empty answer is not offered
    app = RateApp(store, responses, "rita")

    async def go():
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            for k in ["plus", "minus", "n", *"clear", "enter", "5", "2", "u", "s"]:
                await pilot.press(k)
            await pilot.pause()
            app.snapshot = (app.cursor, str(app.query_one("#status").render()))
            await pilot.press("q")
    asyncio.run(go())
    got = {(f.prompt, f.completion): (f.kind, f.value, f.scale, f.source, f.comment) for f in store.feedback()}
    store.close()
    assert got == {(c["p6"].prompt, p6_first): ("thumbs", 1, 2, "viewer:rita", None),
                   (c["p6"].prompt, p6_second): ("thumbs", 0, 2, "viewer:rita", None),
                   (c["p2"].prompt, p2_first): ("rating", 5, 5, "viewer:rita", "clear")}  # p2's 2 undone
    assert app.snapshot[0] == 4 and "3/" in app.snapshot[1]  # skipped past the undone one; 3 rated
    with Store(run / "store.sqlite") as s:
        fb = s.feedback()
    pairs, _ = feedback_pairs(fb, FeedbackConfig())
    assert [(h.chosen, h.rejected, h.margin) for h in pairs] == [(p6_first, p6_second, 1.0)]
    from rlaif.labels import feedback_stats

    st = feedback_stats(fb, comps_of(run))
    agree = 1.0 if p6_first == c["p6"].chosen else 0.0  # the up on the AI's choice, the down on the other
    assert (st["thumbs"]["agreement"], st["thumbs"]["n"]) == (agree, 2)


def test_rate_mode_order_does_not_tell_the_ais_choice(tmp_path):
    """Rating mode showed each comparison's AI-chosen text first: the order told the rater the AI's verdict,
    which the mode hides so that the ratings stay independent of it. The two texts now come in an order
    that does not depend on which one the AI chose."""
    from dataclasses import replace

    from test_viewer import comps_of, make_run

    from rlaif.viewer.rating import responses_of

    comps = [c for c in comps_of(make_run(tmp_path / "run")) if c.chosen.strip()]
    swapped = [replace(c, chosen=c.rejected, rejected=c.chosen) for c in comps]
    assert [r.text for r in responses_of(comps)] == [r.text for r in responses_of(swapped)]
    assert len(responses_of(comps)) == 2 * len(comps)


def test_rate_flag_needs_a_terminal(tmp_path, capsys):
    from test_viewer import make_run

    from rlaif.cli import main

    assert main(["view", str(make_run(tmp_path / "run")), "--rate"]) == 2
    assert "interactive terminal" in capsys.readouterr().err


# ---------------------------------------------------------------- export and import
@pytest.mark.parametrize("fmt", ["jsonl", "trl", "parquet"])
def test_feedback_export_import_round_trip(fmt, tmp_path, capsys):
    from test_viewer import make_run

    from rlaif.cli import main

    conv = chat.encode(CONV)
    fb = [Feedback(conv, "Green.", "thumbs", 0, 2, "viewer:bo", "bo", "too short"),
          Feedback("q", "four", "rating", 4, 5, "file:f.jsonl:3"),
          Feedback("s", "a", "rank", 2, 3, "file:f.jsonl:4", comment="close call"),
          Feedback("s", "b", "rank", 1, 3, "file:f.jsonl:4"), Feedback("s", "c", "rank", 3, 3, "file:f.jsonl:4")]
    src, dst = make_run(tmp_path / "src"), make_run(tmp_path / "dst")
    with Store(src / "store.sqlite") as s:
        s.add_feedback(fb)
    out = tmp_path / f"export.{fmt}"
    assert main(["labels", "export", str(src), "--source", "all", "--format", fmt, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    if fmt != "jsonl":
        assert "3 single-response feedback" in printed  # 2 records + 1 ranking, left out with the reason
        return
    assert main(["labels", "import", str(out), str(dst), "--human"]) == 2  # AI rows in an `all` export
    assert "an AI label" in capsys.readouterr().err
    assert main(["labels", "export", str(src), "--format", "jsonl", "-o", str(out)]) == 0
    # the feedback records were counted as labels ("wrote 4 human labels")
    assert "wrote 0 human labels and 3 single-response feedback records to" in capsys.readouterr().out
    assert main(["labels", "import", str(out), str(dst), "--human"]) == 0
    assert "and 5 single-response feedback" in capsys.readouterr().out
    with Store(dst / "store.sqlite") as s:
        back = s.feedback()
    key = lambda f: (f.prompt, f.completion, f.kind, f.value, f.scale, f.comment)  # noqa: E731
    # A ranking is one record: its comment comes back on each of its completions.
    assert sorted(map(key, back)) == sorted([key(f) for f in fb[:2]] + [
        ("s", "a", "rank", 2, 3, "close call"), ("s", "b", "rank", 1, 3, "close call"),
        ("s", "c", "rank", 3, 3, "close call")])
    assert all(f.source.startswith(f"import-human:{import_name(out)}:") for f in back)
    assert {f.annotator for f in back if f.kind == "thumbs"} == {"bo"}


def test_rate_mode_reads_responses_only_as_far_as_the_rater_goes(tmp_path):
    """`rlaif view --rate` on a large run: the responses are read from the (paged) queue as the rater moves, so
    opening it and rating a few reads a few; the count shows "+" until the end is read."""
    import asyncio

    from test_viewer import make_run

    from rlaif.viewer.queue import open_run_store
    from rlaif.viewer.rate_app import RateApp
    from rlaif.viewer.rating import Response, Responses

    pulled = []

    def many():
        for i in range(100_000):
            pulled.append(i)
            yield Response(f"p{i}", f"question {i}", None, f"answer {i}")

    rs = Responses(many())
    assert rs.has(2) and len(pulled) == 3 and rs.described() == "3+" and rs.index("nope") is None
    store = open_run_store(make_run(tmp_path / "run"))
    app = RateApp(store, rs, "rita")

    async def go():
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            for k in ["plus", "j", "j", "minus", "k"]:
                await pilot.press(k)
            await pilot.pause()
            app.snapshot = (app.cursor, str(app.query_one("#status").render()))
            await pilot.press("q")
    asyncio.run(go())
    assert app.snapshot[0] == 3 and "2/6+ rated" in app.snapshot[1]
    assert len(pulled) <= 6  # the responses shown, and one ahead
    assert sorted(f.completion for f in store.feedback()) == ["answer 0", "answer 3"]
    store.close()
    small = Responses(iter([Response("p", "q", None, "a")]))
    assert small.has(0) and not small.has(1) and small.described() == "1"


def test_rate_mode_shows_markup_like_names_and_conversations_as_text(tmp_path):
    """The status line parsed the annotator as markup: '[/]' crashed the app (MarkupError), '[b]x' showed 'x'.
    A conversation prompt (a system message) is shown as its turns, not as the JSON it is stored as."""
    import asyncio

    from test_viewer import make_run

    from rlaif.viewer.queue import open_run_store
    from rlaif.viewer.rate_app import RateApp
    from rlaif.viewer.rating import Response

    store = open_run_store(make_run(tmp_path / "run"))
    conv = chat.encode([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "[/INST] q"}])
    app = RateApp(store, [Response("p", conv, None, "a [/]")], "[b]x[/]")

    async def go():
        async with app.run_test(size=(100, 30)) as pilot:
            from rich.console import Console

            console = Console(width=100, record=True, file=io.StringIO())
            console.print(app.query_one("#detail-body").content)
            app.body = console.export_text()
            await pilot.press("plus")
            await pilot.pause()
            app.snapshot = str(app.query_one("#status").render())
            await pilot.press("q")
    asyncio.run(go())
    assert app.snapshot.startswith("1/1 rated") and app.snapshot.endswith("│ [b]x[/]")
    assert "System: Be brief." in app.body and "User: [/INST] q" in app.body and "\"role\"" not in app.body, app.body
    assert [(f.completion, f.source) for f in store.feedback()] == [("a [/]", "viewer:[b]x[/]")]
    store.close()


def test_rate_mode_keys_typed_in_the_comment_box_stay_in_it(tmp_path):
    """↓ / ↑ while typing a comment moved to another response: the comment, meant for the rated one, was held
    for the next response instead (and saved with a verdict on it)."""
    import asyncio

    from test_viewer import make_run

    from rlaif.viewer.queue import open_run_store
    from rlaif.viewer.rate_app import RateApp
    from rlaif.viewer.rating import Response

    store = open_run_store(make_run(tmp_path / "run"))
    app = RateApp(store, [Response("p", "q", None, t) for t in "abc"], "rita")

    async def go():
        async with app.run_test(size=(100, 30)) as pilot:
            for k in ["plus", "k", "n", "x", "down", "pagedown", "y", "enter", "j", "minus"]:
                await pilot.press(k)
            await pilot.pause()
            await pilot.press("q")
    asyncio.run(go())
    assert sorted((f.completion, f.value, f.comment) for f in store.feedback()) == [("a", 1, "xy"), ("b", 0, None)]
    store.close()


def test_rate_mode_keeps_ratings_given_while_another_process_holds_the_store(tmp_path):
    """The rating mode's writes go through the same keeper as the verdicts (rlaif/viewer/writes.py): a rating
    and its undo given while another process holds the write lock are kept, counted, then written in order."""
    import asyncio
    import sqlite3

    from test_viewer import make_run, screen_text

    from rlaif.viewer.queue import open_run_store
    from rlaif.viewer.rate_app import RateApp
    from rlaif.viewer.rating import Response

    run = make_run(tmp_path / "run")
    store = open_run_store(run)
    app = RateApp(store, [Response("p", "q", None, t) for t in "abc"], "rita")
    other = sqlite3.connect(run / "store.sqlite", isolation_level=None)
    seen = {}

    async def go():
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            other.execute("BEGIN IMMEDIATE")
            other.execute("INSERT INTO meta VALUES ('other', 'process')")
            for k in ["plus", "minus", "u", "4"]:  # a up, b down (kept, then dropped), b 4
                await pilot.press(k)
            seen["status"] = str(app.query_one("#status").render())
            seen["busy"] = store.feedback()
            await pilot.press("k")  # back on b, whose 4 is kept
            seen["detail"] = screen_text(app)
            other.execute("COMMIT")
            app.retry_writes()
            await pilot.pause()
            seen["after"] = str(app.query_one("#status").render())
            await pilot.press("q")
    try:
        asyncio.run(go())
        assert sorted((f.completion, f.kind, f.value) for f in store.feedback()) == [("a", "thumbs", 1),
                                                                                    ("b", "rating", 4)]
    finally:
        other.close()
        store.close()
    assert seen["busy"] == [] and "2 not saved yet" in seen["status"]
    assert "your verdict: not rated · a newer one is not saved yet" in " ".join(seen["detail"].split())
    assert "not saved" not in seen["after"] and "2/" in seen["after"]


def test_two_label_files_of_the_same_name_are_refused(tmp_path, capsys, scripted_backend):
    """Labels and feedback are known by file name and line (file:NAME:LINE): two mix.human_labels files named
    r.jsonl in two folders merged their line-1 rankings into one (pairs across rankings no one made) and the
    pairwise label of one replaced the other's on the same line."""
    import conftest

    from rlaif.cli import main

    proj = conftest.make_tiny_project(tmp_path / "proj")
    for d in ("a", "b"):
        (proj / d).mkdir()
        _write(proj / d / "r.jsonl", [{"prompt": "P", "completions": [f"{d}1", f"{d}2"], "ranking": [1, 2]}])
    files = f"mix.human_labels=[{proj / 'a' / 'r.jsonl'}, {proj / 'b' / 'r.jsonl'}]"
    assert main(["run", str(proj / "pipeline.yaml"), "--set", files]) == 2
    err = capsys.readouterr().err.strip()
    assert "mix.human_labels: two files are named 'r.jsonl'" in err and "\n" not in err, err
    assert not (proj / "run").exists()
