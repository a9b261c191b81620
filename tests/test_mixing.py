from __future__ import annotations

import pytest

from rlaif.chat import encode
from rlaif.config import MixConfig
from rlaif.mixing import mix, save_pairs
from rlaif.records import HumanLabel, PreferencePair


def ai(prompt, chosen, rejected, conf=0.9):
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "confidence": conf,
            "prompt_id": prompt, "details": {"gap": 1.0}}


def test_human_overrides_ai_and_counts_disagreement():
    pairs = [ai("p1", "a", "b"), ai("p2", "c", "d")]
    human = [HumanLabel("p1", "b", "a", source="viewer"), HumanLabel("p2", "c", "d", source="viewer")]
    splits, stats = mix(pairs, human, MixConfig(human_eval_fraction=0.0), seed=0)
    assert stats["human_overrides"] == 2 and stats["human_disagreements"] == 1
    train = {(p.prompt, p.chosen, p.source) for p in splits["train"]}
    assert ("p1", "b", "human") in train and ("p1", "a", "ai") not in train
    assert len(splits["train"]) == 2


def test_low_confidence_dropped():
    splits, stats = mix([ai("p1", "a", "b", 0.52), ai("p2", "c", "d", 0.8)], [],
                        MixConfig(min_confidence=0.6, human_eval_fraction=0.0), seed=0)
    assert stats["ai_dropped_low_confidence"] == 1
    assert [p.prompt for p in splits["train"]] == ["p2"]


def test_held_out_humans_never_trained_on():
    human = [HumanLabel(f"q{i}", f"good{i}", f"bad{i}") for i in range(200)]
    # An AI pair on the same comparison as every human label.
    pairs = [ai(f"q{i}", f"bad{i}", f"good{i}") for i in range(200)]
    splits, stats = mix(pairs, human, MixConfig(human_eval_fraction=0.3), seed=1)
    train_keys = {p.key for p in splits["train"]}
    eval_keys = {p.key for p in splits["eval"]}
    assert 30 < len(eval_keys) < 90
    assert not train_keys & eval_keys
    assert stats["ai_dropped_held_out"] == len(eval_keys)
    assert all(p.source == "human" for p in splits["eval"])
    # Stable: the same seed holds out the same labels.
    again, _ = mix(pairs, human, MixConfig(human_eval_fraction=0.3), seed=1)
    assert {p.key for p in again["eval"]} == eval_keys


def test_mix_ratio_and_human_weight():
    human = [HumanLabel(f"q{i}", "g", "b") for i in range(4)]
    pairs = [ai(f"p{i}", "a", "b", 0.6 + i / 100) for i in range(20)]
    splits, stats = mix(pairs, human, MixConfig(human_eval_fraction=0.0, max_ai_per_human=2, human_weight=3.0), 0)
    ais = [p for p in splits["train"] if p.source == "ai"]
    assert len(ais) == 8 and stats["ai_dropped_mix_ratio"] == 12
    assert min(p.confidence for p in ais) >= 0.6 + 12 / 100 - 1e-9  # the most confident kept
    assert all(p.weight == 3.0 for p in splits["train"] if p.source == "human")


def test_ties_are_not_pairs():
    human = [HumanLabel("q", "x", "y", label="tie"), HumanLabel("r", "g", "b")]
    splits, stats = mix([], human, MixConfig(human_eval_fraction=0.0), 0)
    assert stats["human_ties"] == 1 and len(splits["train"]) == 1


def test_no_humans_holds_out_ai_pairs():
    pairs = [ai(f"p{i}", "a", "b") for i in range(50)]
    splits, stats = mix(pairs, [], MixConfig(human_eval_fraction=0.2), 0)
    assert stats["eval_source"] == "ai" and splits["eval"]
    assert not {p.key for p in splits["train"]} & {p.key for p in splits["eval"]}


def test_save_pairs_columns(tmp_path):
    from datasets import load_from_disk

    splits, _ = mix([ai("p", "a", "b")], [HumanLabel("q", "g", "b")], MixConfig(human_eval_fraction=0.0), 0)
    from rlaif.layout import RunLayout

    save_pairs(splits, RunLayout(tmp_path))
    dd = load_from_disk(str(tmp_path / "pairs"))
    assert not (tmp_path / "pairs.partial").exists()
    assert set(dd) == {"train", "eval", "unpaired"}
    assert {"prompt", "chosen", "rejected", "source", "weight"} <= set(dd["train"].column_names)
    assert sorted(dd["train"]["source"]) == ["ai", "human"]


def test_viewer_label_beats_file_label_on_same_comparison():
    """File labels are re-inserted each run (newer rows); the reviewer's verdict still wins."""
    pairs = [ai("p1", "a", "b")]
    human = [HumanLabel("p1", "b", "a", source="viewer:ann"), HumanLabel("p1", "a", "b", source="file:l.jsonl:1")]
    splits, stats = mix(pairs, human, MixConfig(human_eval_fraction=0.0), 0)
    assert [(p.chosen, p.source) for p in splits["train"]] == [("b", "human")]
    assert stats["human_disagreements"] == 1


def test_saved_pairs_are_the_same_files_for_the_same_pairs(tmp_path):
    """The pairs dataset is written in batches through an Arrow file; its output hash (which later stages'
    input hashes include) depends on the pairs only, not on where it was built."""
    from datasets import load_from_disk

    from rlaif.hashing import dir_hash
    from rlaif.layout import RunLayout
    from rlaif.mixing import save_pairs
    from rlaif.records import PreferencePair

    pairs = [PreferencePair(f"q{i}", f"good {i}", "bad", "ai", 1.0, 0.9, f"p{i}", {"gap": i}) for i in range(25_003)]
    hashes = []
    for name in ("a", "b"):
        layout = RunLayout(tmp_path / name)
        save_pairs({"train": pairs, "eval": pairs[:3], "unpaired": []}, layout)
        hashes.append(dir_hash(layout.pairs))
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["pairs"]  # no build files left
    dd = load_from_disk(str(RunLayout(tmp_path / "a").pairs))
    assert hashes[0] == hashes[1]
    assert len(dd["train"]) == 25_003 and dd["train"][25_002]["chosen"] == "good 25002" and len(dd["unpaired"]) == 0


@pytest.mark.parametrize("cfg, humans", [
    (MixConfig(human_eval_fraction=0.3), True),
    (MixConfig(human_eval_fraction=0.0, max_ai_per_human=4, min_confidence=0.55), True),
    (MixConfig(human_eval_fraction=0.2), False),  # no human labels: AI pairs held out instead
], ids=["held-out-humans", "confidence-cap", "ai-held-out"])
def test_the_mix_from_the_store_holds_row_ids_and_gives_the_same_pairs(tmp_path, cfg, humans):
    """The judge stage's pairs are mixed as row ids and read back in chunks in the final order (a million AI
    pairs' texts are never held at once); the pairs, their order and the counts are those of the mix of the
    same pairs held whole."""
    from rlaif.records import Candidate, Prompt
    from rlaif.store import Store

    with Store(tmp_path / "s.sqlite") as s:
        s.put_prompts([Prompt(f"p{i:04d}", f"question {i}", "helpful") for i in range(1300)])
        s.add_candidates([Candidate(f"p{i:04d}-{k}", f"p{i:04d}", k, f"answer {k} to {i}", "pol")
                          for i in range(1300) for k in range(2)], "gen")
        s.put_ai_pairs("jh", [(f"p{i:04d}", f"p{i:04d}-{i % 2}", f"p{i:04d}-{1 - i % 2}", 0.5 + (i % 50) / 100,
                               "unscored" if i % 97 == 0 else "scored", {"gap": i % 7}) for i in range(1300)])
        human = [HumanLabel(f"question {i}", f"answer 0 to {i}", f"answer 1 to {i}") for i in range(0, 400, 3)] \
            if humans else []
        calls = []

        def resolve(rows):
            calls.append(len(rows))
            return s.ai_pairs_by_rows(rows)

        streamed, st1 = mix(s.iter_ai_pairs("jh", gap_only=True), human, cfg, 5, resolve=resolve)
        whole, st2 = mix(list(s.iter_ai_pairs("jh", gap_only=True)), human, cfg, 5)
        assert st1 == st2
        for split in ("train", "eval"):
            assert list(streamed[split]) == list(whole[split])
        assert len(streamed["train"]) > 100 and (len(streamed["eval"]) > 10) == (cfg.human_eval_fraction > 0)
        assert st1["ai_dropped_mix_ratio"] > 0 or cfg.max_ai_per_human is None
        assert calls and max(calls) <= 1000 and sum(calls) == st1["ai_pairs"]
        assert len(streamed["train"]._side) == len(human) - st1["human_ties"]  # AI pairs held as row ids only
        assert streamed["train"][3] == list(whole["train"])[3] and streamed["train"][-1] == list(whole["train"])[-1]


def test_mixed_pairs_index_like_a_list():
    splits, _ = mix([ai(f"q{i}", "a", "b") for i in range(3)], [], MixConfig(human_eval_fraction=0.0), 0)
    t, whole = splits["train"], list(splits["train"])
    assert [t[i] for i in range(-3, 3)] == whole[-3:] + whole
    assert list(t[0:2]) == whole[0:2] and list(t[::-1]) == whole[::-1]
    for bad in (3, -4):
        with pytest.raises(IndexError):
            t[bad]
    with pytest.raises(ValueError):
        t.index(PreferencePair("nope", "x", "y", "ai"))


def test_revision_pairs_are_never_held_out_even_when_ai_pairs_are():
    """With no human eval labels the mix holds out a share of the AI pairs; it held out the critique stage's
    revision pairs at the same rate, though they are documented (and commented) as never held out."""
    pairs = [ai(f"p{i}", "a", "b") for i in range(50)]
    revisions = [{"prompt": f"r{i}", "chosen": "revised", "rejected": "first", "prompt_id": f"r{i}",
                  "principles": ["helpful"], "writer": {"backend": "openai", "model": "w"}} for i in range(50)]
    splits, stats = mix(pairs, [], MixConfig(human_eval_fraction=0.3), 0, revisions=revisions)
    assert stats["eval_source"] == "ai" and splits["eval"] and stats["revision_pairs"] == 50
    assert all(p.source == "ai" for p in splits["eval"])
    assert sum(p.source == "revision" for p in splits["train"]) == 50


def test_held_out_per_prompt_nothing_on_a_held_out_prompt_trains():
    """The held-out unit is a prompt: a per-comparison split trained a prompt's other comparisons (human pairs,
    AI pairs on other responses, imports, revisions) while one of its comparisons measured the reward model."""
    from rlaif.vocab import IMPORT
    human = [HumanLabel(f"q{i}", f"good{i}-{j}", f"bad{i}-{j}", source="viewer") for i in range(100) for j in range(3)]
    imports = [HumanLabel(f"q{i}", f"imp{i}", f"impbad{i}", source=f"{IMPORT}:f.jsonl:{i}") for i in range(100)]
    pairs = [ai(f"q{i}", f"other{i}", f"worse{i}") for i in range(100)]
    revisions = [{"prompt": f"q{i}", "chosen": "revised", "rejected": "first", "prompt_id": f"q{i}"} for i in range(100)]
    splits, stats = mix(pairs, human + imports, MixConfig(human_eval_fraction=0.3), 1, revisions=revisions)
    held = {p.prompt for p in splits["eval"]}
    assert 15 < len(held) < 50
    assert sorted(p.prompt for p in splits["eval"]) == sorted(3 * list(held))  # all three comparisons
    assert not held & {p.prompt for p in splits["train"]}
    assert stats["ai_dropped_held_out"] == stats["human_dropped_held_out"] == len(held)
    assert stats["revisions_dropped_held_out"] == len(held) and stats["revision_pairs"] == 100 - len(held)
    assert len(splits["train"]) == 6 * (100 - len(held))  # per kept prompt: 3 human, 1 import, 1 AI, 1 revision


def test_ai_pairs_held_out_per_prompt_without_human_labels():
    pairs = [ai(f"q{i}", f"a{i}-{j}", f"b{i}-{j}") for i in range(100) for j in range(4)]
    splits, stats = mix(pairs, [], MixConfig(human_eval_fraction=0.3), 0)
    assert stats["eval_source"] == "ai"
    held = {p.prompt for p in splits["eval"]}
    assert 15 < len(held) < 50 and len(splits["eval"]) == 4 * len(held)
    assert not held & {p.prompt for p in splits["train"]}


def test_imported_labels_alone_never_hold_out_their_prompt():
    from rlaif.vocab import IMPORT
    imports = [HumanLabel(f"q{i}", "g", "b", source=f"{IMPORT}:f.jsonl:{i}") for i in range(50)]
    human = [HumanLabel(f"h{i}", "g", "b", source="viewer") for i in range(50)]
    splits, stats = mix([], imports + human, MixConfig(human_eval_fraction=0.3), 0)
    assert splits["eval"] and not any(p.prompt.startswith("q") for p in splits["eval"])
    assert sum(p.prompt.startswith("q") for p in splits["train"]) == 50 and stats["human_dropped_held_out"] == 0


@pytest.mark.parametrize("human_form, ai_form", [
    (lambda q: encode([{"role": "system", "content": "Be kind."}, {"role": "user", "content": q}]),
     lambda q: encode([{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": q}])),
    (lambda q: encode([{"role": "system", "content": "Be kind."}, {"role": "user", "content": q}]), lambda q: q),
    (lambda q: q.replace(" ", "  "), lambda q: q),
    (lambda q: encode([{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."},
                       {"role": "user", "content": q}]),
     lambda q: encode([{"role": "user", "content": "Hi.\n"}, {"role": "assistant", "content": " Hello."},
                       {"role": "user", "content": q + "\n"}])),
], ids=["other-system-prompt", "system-prompt-or-none", "inner-whitespace", "turn-whitespace"])
def test_a_held_out_prompt_trains_in_no_other_form(human_form, ai_form):
    """The held-out unit is the prompt's turns, not its stored string: a human label on a prompt with one system
    prompt (a label file exported from another run) or other whitespace (an HH-text label file against a TRL
    message-list prompts file) held the prompt out while the AI pairs on the same turns trained."""
    human = [HumanLabel(human_form(f"How do I fix bike {i}?"), f"good{i}", f"bad{i}", source="viewer")
             for i in range(100)]
    pairs = [ai(ai_form(f"How do I fix bike {i}?"), f"other{i}", f"worse{i}") for i in range(100)]
    revisions = [{"prompt": ai_form(f"How do I fix bike {i}?"), "chosen": "revised", "rejected": "first"}
                 for i in range(100)]
    splits, stats = mix(pairs, human, MixConfig(human_eval_fraction=0.3), 1, revisions=revisions)
    bike = {p.prompt: p.prompt.split("bike ")[1].split("?")[0] for p in list(splits["train"]) + list(splits["eval"])}
    held = {bike[p.prompt] for p in splits["eval"]}
    assert 15 < len(held) < 50 and not held & {bike[p.prompt] for p in splits["train"]}
    assert stats["ai_dropped_held_out"] == stats["revisions_dropped_held_out"] == len(held)


def test_human_train_pairs_counts_the_human_pairs_that_train_when_ai_pairs_are_held_out():
    """With no human eval pair the AI pairs are held out per prompt, and an imported (train-only) label on a drawn
    prompt goes to the eval split with them: ``human_train_pairs`` still counted it as training."""
    from rlaif.vocab import IMPORT
    imports = [HumanLabel(f"q{i}", "g", "b", source=f"{IMPORT}:f.jsonl:{i}") for i in range(100)]
    pairs = [ai(f"q{i}", "other", "worse") for i in range(100)]
    splits, stats = mix(pairs, imports, MixConfig(human_eval_fraction=0.3), 0)
    assert stats["eval_source"] == "ai" and any(p.source == "human" for p in splits["eval"])
    assert stats["human_train_pairs"] == sum(p.source == "human" for p in splits["train"])
    assert stats["train_pairs"] + stats["eval_pairs"] == 200


def test_nothing_trains_on_a_prompt_the_policy_is_evaluated_on():
    """Human labels (and AI pairs, revisions) on a policy-eval prompt trained the reward model and the policy that
    the policy evaluation then measured on that prompt: they are held out (human) or dropped (AI, revisions)."""
    from rlaif.mixing import prompt_unit
    from rlaif.vocab import IMPORT
    evaluated = [f"e{i}" for i in range(20)]
    human = [HumanLabel(p, "good", "bad", source="viewer") for p in evaluated]
    human += [HumanLabel(f"t{i}", "good", "bad", source="viewer") for i in range(40)]
    imports = [HumanLabel(p, "imp", "impbad", source=f"{IMPORT}:f.jsonl:{i}") for i, p in enumerate(evaluated)]
    pairs = [ai(p, "a", "b") for p in evaluated] + [ai(f"t{i}", "a", "b") for i in range(40)]
    revisions = [{"prompt": p, "chosen": "revised", "rejected": "first", "prompt_id": p} for p in evaluated]
    units = frozenset(prompt_unit(p) for p in evaluated)
    splits, stats = mix(pairs, human + imports, MixConfig(human_eval_fraction=0.0), 0, revisions=revisions,
                        policy_eval=units)
    assert not {p.prompt for p in splits["train"]} & set(evaluated)
    assert sorted(p.prompt for p in splits["eval"]) == sorted(evaluated)  # the human labels measure the RM
    assert stats["ai_dropped_policy_eval"] == 20 and stats["human_dropped_held_out"] == 20
    assert stats["revisions_dropped_held_out"] == 20 and stats["policy_eval_prompts_labelled"] == 20
    assert len(splits["train"]) == 80  # the 40 other prompts: a human pair and an AI pair each


def test_pipeline_mix_trains_nothing_on_the_policy_eval_prompts(tiny_project):
    """The tiny project's labels cover its data.eval_fraction prompts: the mix holds their human pairs out, the
    gate and the fit read the same split, and the mix's input hash names them."""
    from datasets import load_from_disk

    from rlaif.cli import main
    from rlaif.config import load_config
    from rlaif.mixing import prompt_unit
    from rlaif.pipeline import open_run
    from rlaif.stages import get as get_stage

    cfg = str(tiny_project / "pipeline.yaml")
    for stage in ("sft", "generate", "judge", "mix"):
        assert main([stage, cfg]) == 0
    run = open_run(load_config(cfg, []))
    try:
        evaluated = run.policy_eval_units()
        info = run.store.stage("mix")["info"]
        train, held = run.human_split()
        parts = get_stage("mix").hash_parts(run)
    finally:
        run.store.close()
        run.lock.release()
    dd = load_from_disk(str(tiny_project / "run" / "pairs"))
    assert evaluated and info["policy_eval_prompts_labelled"] > 0 and "policy_eval_labelled" in parts
    assert not {prompt_unit(p) for p in dd["train"]["prompt"]} & evaluated
    assert {prompt_unit(h.prompt) for h in held} >= {prompt_unit(p) for p in dd["eval"]["prompt"]} & evaluated
    assert not {prompt_unit(h.prompt) for h in train} & evaluated


def test_an_eval_prompts_file_sharing_training_prompts_keeps_their_ai_pairs_out(tiny_project):
    """eval.prompts naming training prompts that no label touches: their AI pairs are dropped, and the mix's
    input hash follows eval.prompts when it overlaps the training prompts (a changed file re-runs the mix)."""
    import json as _json

    from datasets import load_from_disk

    from rlaif.cli import main
    from rlaif.config import load_config
    from rlaif.mixing import prompt_unit
    from rlaif.pipeline import open_run
    from rlaif.stages import get as get_stage

    labels = tiny_project / "labels.jsonl"  # labels on the benign prompts only: the harmful ones are untouched
    labels.write_text("".join(line + "\n" for line in labels.read_text().splitlines() if "Sure, here" not in line))
    cfg = str(tiny_project / "pipeline.yaml")
    for stage in ("sft", "generate", "judge"):
        assert main([stage, cfg]) == 0
    run = open_run(load_config(cfg, []))
    try:
        labelled = {prompt_unit(h.prompt) for h in run.all_human_labels()}
        train_prompts = [p.text for p in run.store.prompts("train") if prompt_unit(p.text) not in labelled]
        before = get_stage("mix").hash_parts(run).get("policy_eval_labelled")
    finally:
        run.store.close()
        run.lock.release()
    evalf = tiny_project / "eval.jsonl"
    evalf.write_text("".join(_json.dumps({"id": f"e{i}", "text": t}) + "\n" for i, t in enumerate(train_prompts[:2])))
    sets = ["eval.prompts=" + str(evalf)]
    assert main(["mix", cfg, "--set", sets[0]]) == 0
    run = open_run(load_config(cfg, sets))
    try:
        info, after = run.store.stage("mix")["info"], get_stage("mix").hash_parts(run).get("policy_eval_labelled")
    finally:
        run.store.close()
        run.lock.release()
    dd = load_from_disk(str(tiny_project / "run" / "pairs"))
    assert len(train_prompts) >= 2
    assert info["ai_dropped_policy_eval"] > 0 and after is not None and after != before
    assert not {prompt_unit(p) for p in dd["train"]["prompt"]} & {prompt_unit(t) for t in train_prompts[:2]}
