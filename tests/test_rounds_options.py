"""iteration: (rlaif/rounds.py) the reference of rounds >= 2 (previous round's policy or SFT), earlier
rounds' AI pairs in the mix, and the reward model per round (retrained or round 1's); each in the
stage hashes of rounds >= 2 only, so a change re-runs just the stages it reaches, an unchanged
re-run skips every round and a killed run resumes in its round."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rlaif.config import IterationConfig, load_config
from rlaif.layout import RunLayout
from rlaif.store import Store


def _fake_run(tmp_path, settings: IterationConfig | None, cfg):
    from rlaif.rounds import RoundContext

    ctx = None if settings is None else RoundContext(2, (RunLayout(tmp_path / "r1"),), settings)
    return SimpleNamespace(round=ctx, cfg=cfg)


def test_defaults_hash_as_before_and_each_option_adds_its_part(tiny_project, tmp_path):
    from rlaif import rounds

    cfg = load_config(tiny_project / "pipeline.yaml")
    assert cfg.iteration == IterationConfig(reference="previous", earlier_pairs=False, reward_model="every_round")
    plain = {"reward_model": cfg.reward_model.model_dump(exclude={"gradient_checkpointing"})}  # as before the key
    for settings in (None, IterationConfig()):  # round 1 / one round, and a round >= 2 with the defaults
        run = _fake_run(tmp_path, settings, cfg)
        assert rounds.reference_dir(run) is None and rounds.reference_parts(run) == {}
        assert rounds.earlier_pairs_parts(run) == {} and rounds.earlier_ai_pairs(run) == ([], {})
        assert not rounds.reuses_reward_model(run) and rounds.reward_model_parts(run) == plain
    run = _fake_run(tmp_path, IterationConfig(reference="sft", earlier_pairs=True, reward_model="first_round"), cfg)
    assert rounds.reference_dir(run) == tmp_path / "r1" / "sft"
    assert rounds.reference_parts(run) == {"reference": "missing"}  # round 1's sft not done: never equal to a done one
    assert rounds.earlier_pairs_parts(run) == {"earlier_pairs": ["missing"]}
    assert rounds.reuses_reward_model(run) and rounds.reward_model_parts(run) == {"round_1_reward_model": "missing"}


BAD = {
    "unknown-key": (["iteration.references=sft"], "iteration.references"),
    "reference": (["iteration.reference=base"], "iteration.reference"),
    "reward-model": (["iteration.reward_model=never"], "iteration.reward_model"),
    "earlier-pairs": (["iteration.earlier_pairs=maybe"], "iteration.earlier_pairs"),
    "lora-rloo-sft": (["rounds=2", "iteration.reference=sft", "policy_training.algorithm=rloo",
                       "policy_training.lora={r: 4}"], "iteration.reference"),
    # a served policy is not the previous round's: every round would sample the same served model
    "rounds-served-policy": (["rounds=2", "generate.backend=openai", "generate.served.model=policy",
                              "generate.served.base_url=http://127.0.0.1:9/v1"], "generate.backend"),
}


@pytest.mark.parametrize("case", sorted(BAD), ids=str)
def test_bad_iteration_is_one_line_exit_2_nothing_written(case, tiny_project, capsys):
    from rlaif.cli import main

    sets, field = BAD[case]
    assert main(["run", str(tiny_project / "pipeline.yaml"), *[a for s in sets for a in ("--set", s)]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err, err
    assert not (tiny_project / "run").exists()


def _ran(runs) -> list[list[str]]:
    return [list(r.ran) for r in runs]


@pytest.mark.slow
def test_options_rerun_only_what_they_reach_skip_unchanged_and_resume_in_round(tiny_project, monkeypatch):
    import trl
    from safetensors.torch import load_file

    from rlaif.hashing import dir_hash
    from rlaif.rounds import run_rounds
    from rlaif.stages import NAMES
    from rlaif.store import Store
    from rlaif.train import policy as policy_mod

    path = tiny_project / "pipeline.yaml"
    run, r2 = tiny_project / "run", tiny_project / "run" / "rounds" / "2"
    opts = ["rounds=2", "iteration.reference=sft", "iteration.earlier_pairs=true", "iteration.reward_model=first_round"]
    real, seen = policy_mod.train_policy, []

    def killed_in_round_2(*a, **kw):
        seen.append(a[7] if len(a) > 7 else kw.get("ref_dir"))
        if len(seen) == 2:
            raise KeyboardInterrupt  # killed in round 2's train-policy
        return real(*a, **kw)

    monkeypatch.setattr(policy_mod, "train_policy", killed_in_round_2)
    with pytest.raises(KeyboardInterrupt):
        run_rounds(load_config(path, opts), NAMES)
    assert seen == [None, run / "sft"]  # round 1: its own SFT policy; round 2: the SFT policy, not round 1's
    monkeypatch.setattr(policy_mod, "train_policy", real)

    refs = []
    real_init = trl.DPOTrainer.__init__

    def spy(self, *a, **kw):
        refs.append(kw.get("ref_model"))
        real_init(self, *a, **kw)

    monkeypatch.setattr(trl.DPOTrainer, "__init__", spy)
    runs = run_rounds(load_config(path, opts), NAMES)  # resumes in round 2: its train-policy and eval only
    assert _ran(runs) == [[], ["train-policy", "eval"]]
    sft = load_file(str(run / "sft" / "model.safetensors"))
    ref_sd = refs[0].state_dict()
    common = [k for k in ref_sd if k in sft]
    assert len(refs) == 1 and common and all((ref_sd[k] == sft[k]).all() for k in common)
    start = load_file(str(r2 / "sft" / "model.safetensors"))  # round 2's initial policy (round 1's) differs
    assert any(not (start[k] == sft[k]).all() for k in common)
    monkeypatch.setattr(trl.DPOTrainer, "__init__", real_init)

    s1, s2 = Store(run / "store.sqlite", readonly=True), Store(r2 / "store.sqlite", readonly=True)
    n1 = s1.stage("judge")["info"]["ai_pairs"]
    mix2 = s2.stage("mix")["info"]
    assert mix2["earlier_ai_pairs"] == {"1": n1} and mix2["ai_pairs_in"] == s2.stage("judge")["info"]["ai_pairs"] + n1
    assert s2.stage("train-rm")["info"]["copied_from_round"] == 1
    from datasets import load_from_disk

    def texts(pairs):
        return {(p["chosen"], p["rejected"]) for p in pairs}

    j1, j2 = (s.stage("judge")["info"]["judge_hash"] for s in (s1, s2))
    only_1 = texts(s1.iter_ai_pairs(j1)) - texts(s2.iter_ai_pairs(j2))
    train2 = load_from_disk(str(r2 / "pairs"))["train"]
    assert only_1 & texts(train2)  # round 1's own pairs, with their texts, are in round 2's training pairs
    assert dir_hash(r2 / "reward_model") == dir_hash(run / "reward_model")
    assert s2.stage("train-policy")["info"]["reference"] == str(run / "sft")
    import json

    for name in ("manifest.json", "report.json"):  # every round's directory says which round it is
        assert json.loads((run / name).read_text())["round"] == 1
        got = json.loads((r2 / name).read_text())
        assert got["round"] == 2 and got["round_1_dir"] == str(run) and got["iteration"]["reference"] == "sft"
    s1.close()
    s2.close()

    assert _ran(run_rounds(load_config(path, opts), NAMES)) == [[], []]  # unchanged: every round skipped
    # each option re-runs only the round-2 stages it reaches; round 1 never depends on them
    steps = [("iteration.reference=previous", ["train-policy", "eval"]),
             ("iteration.earlier_pairs=false", ["mix", "train-rm", "train-policy", "eval"]),
             ("iteration.reward_model=every_round", ["train-rm", "eval"])]  # DPO does not read the RM
    for i, (change, expected) in enumerate(steps):
        now = ["rounds=2"] + [o for o in opts[1:] if o.split("=")[0] not in {c.split("=")[0] for c, _ in steps[:i + 1]}]
        now += [c for c, _ in steps[:i + 1]]
        assert _ran(run_rounds(load_config(path, now), NAMES)) == [[], expected], change
    s2 = Store(r2 / "store.sqlite", readonly=True)
    assert "copied_from_round" not in s2.stage("train-rm")["info"] and "earlier_ai_pairs" not in s2.stage("mix")["info"]
    assert "reference" not in s2.stage("train-policy")["info"]
    s2.close()
    assert dir_hash(r2 / "reward_model") != dir_hash(run / "reward_model")  # trained on round 2's mix


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "rloo"])
def test_online_trainers_take_the_reference_from_ref_dir(tmp_path, monkeypatch, algo):
    """PPO loads its frozen reference from ref_dir; trl's RLOO/GRPO build theirs from it (not the start policy)."""
    import torch
    from test_online_rl import group_cfg
    from test_ppo import PROMPTS, build_word_model, count_yes, ppo_cfg
    from transformers import AutoModelForCausalLM

    start, ref = build_word_model(tmp_path / "start", seed=0), build_word_model(tmp_path / "ref", seed=1)
    want = AutoModelForCausalLM.from_pretrained(str(ref)).state_dict()
    other = AutoModelForCausalLM.from_pretrained(str(start)).state_dict()
    assert any(not torch.equal(want[k], other[k]) for k in want)
    if algo == "ppo":
        from rlaif.train.ppo import PPOTrainer

        got = PPOTrainer(start, count_yes, PROMPTS, ppo_cfg(steps=1), tmp_path / "ck", ref_dir=ref).ref.state_dict()
    else:
        import trl.trainer.rloo_trainer as rt

        from rlaif.train.online import run_online

        made, real = [], rt.create_model_from_path

        def spy(path, **kw):
            made.append((path, real(path, **kw)))
            return made[-1][1]

        monkeypatch.setattr(rt, "create_model_from_path", spy)
        run_online("rloo", start, count_yes, PROMPTS, group_cfg("rloo", steps=1), tmp_path / "out", ref_dir=ref)
        assert [p for p, _ in made] == [str(ref)]
        got = made[0][1].state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_rounds_report_table_and_plot_hold_every_figure_against_sft(tmp_path):
    """rounds.json / rounds.md / rounds.png from the rounds' report.json files: judge win rate vs SFT, harmless
    rate, RM reward (round 1's RM), KL vs SFT per round; round 1's own figures are its figures against SFT."""
    import json

    from rlaif.rounds_report import ROUNDS_SECTION, ROW_KEYS, write_rounds_report

    def report(win, harmless, kl, reward_after, vs_sft=None):
        pol = {"algorithm": "dpo", "judge_win_rate_vs_ref": {"rate": win, "ci95": [win - 0.05, win + 0.05]},
               "harmless_rate": {"sft": 0.4, "trained": harmless, "trained_ci95": [harmless - 0.1, harmless + 0.1]},
               "over_refusal_rate": {"sft": 0.2, "trained": 0.05}, "kl": kl, "reward_before": 0.1,
               "reward_after": reward_after}
        return {"policy": pol | ({"vs_sft": vs_sft} if vs_sft else {})}

    layouts = [RunLayout(tmp_path), RunLayout(tmp_path / "rounds" / "2")]
    layouts[1].root.mkdir(parents=True)
    layouts[0].report_json.write_text(json.dumps(report(0.7, 0.6, 1.2, 0.9)))
    layouts[0].report_md.write_text("# report\n\nbody\n")
    vs = {"judge_win_rate": {"rate": 0.8, "ci95": [0.75, 0.85]}, "kl": 2.5, "rm_reward_round_1": 1.4}
    layouts[1].report_json.write_text(json.dumps(report(0.55, 0.7, 0.3, 5.0, vs)))
    rows = write_rounds_report(layouts[0], layouts)
    assert json.loads(layouts[0].rounds_json.read_text()) == rows and all(set(r) == set(ROW_KEYS) for r in rows)
    assert [(r["judge_win_rate_vs_sft"], r["harmless"], r["rm_reward"], r["kl_vs_sft"]) for r in rows] == \
        [(0.7, 0.6, 0.9, 1.2), (0.8, 0.7, 1.4, 2.5)]  # round 2: against SFT, not its own RM (5.0) or its start
    assert rows[1]["judge_win_rate_vs_previous"] == 0.55 and rows[0]["judge_win_rate_vs_previous"] is None
    assert all(r["harmless_sft"] == 0.4 and r["rm_reward_sft"] == 0.1 for r in rows)
    md = layouts[0].report_md.read_text()
    assert md.startswith("# report") and md.count(ROUNDS_SECTION) == 1
    assert "judge win rate vs SFT" in md and "| 0 (SFT) | 40.0 |" in md and "| 2 | 70.0 [60.0, 80.0] |" in md
    assert "0.800 [0.750, 0.850]" in md and (tmp_path / "rounds.png").stat().st_size > 1000
    write_rounds_report(layouts[0], layouts)  # again: the section is replaced, not added
    assert layouts[0].report_md.read_text().count(ROUNDS_SECTION) == 1


def test_a_kill_while_the_rounds_section_is_written_keeps_report_md_whole(tmp_path, monkeypatch):
    """report.md is round 1's eval output, rewritten with the rounds section after every run: a kill in that
    write must leave the old report whole (the next run keeps the text before the section and adds it again;
    a cut report stayed cut for good, since round 1's eval, whose output is report.json, is not re-run)."""
    import json
    import pathlib

    from rlaif.rounds_report import ROUNDS_SECTION, write_rounds_report

    pol = {"algorithm": "dpo", "judge_win_rate_vs_ref": {"rate": 0.6}, "harmless_rate": {"sft": 0.4, "trained": 0.5},
           "kl": 1.0, "reward_before": 0.1, "reward_after": 0.2}
    layouts = [RunLayout(tmp_path), RunLayout(tmp_path / "rounds" / "2")]
    layouts[1].root.mkdir(parents=True)
    for lay in layouts:
        lay.report_json.write_text(json.dumps({"policy": pol}))
    body = "# report\n\n" + "a line of the report\n" * 200
    layouts[0].report_md.write_text(body)
    write_rounds_report(layouts[0], layouts)
    whole = layouts[0].report_md.read_text()
    real = pathlib.Path.write_text

    def killed_midway(self, data, *a, **kw):
        if self.name.startswith("report.md"):
            real(self, data[:len(data) // 2], *a, **kw)
            raise KeyboardInterrupt
        return real(self, data, *a, **kw)

    monkeypatch.setattr(pathlib.Path, "write_text", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        write_rounds_report(layouts[0], layouts)
    monkeypatch.setattr(pathlib.Path, "write_text", real)
    assert layouts[0].report_md.read_text() == whole
    write_rounds_report(layouts[0], layouts)  # the next run
    text = layouts[0].report_md.read_text()
    assert text.startswith(body) and text.count(ROUNDS_SECTION) == 1


def test_round_k_mixes_the_human_labels_and_feedback_given_in_earlier_rounds(tiny_project):
    """A reviewer's verdicts (viewer) and `rlaif labels import` go into round 1's store; the labels files are re-read
    into every round's. Round k's mix (and the agreement gate, the weight fit) must see the former too, with a new
    verdict in round 1 re-running round 2's mix, and the files' labels once each."""
    from rlaif.pipeline import open_run
    from rlaif.records import Feedback, HumanLabel
    from rlaif.rounds import RoundContext, round_config
    from rlaif.vocab import FILE, THUMBS, import_source, viewer_source

    cfg = load_config(tiny_project / "pipeline.yaml", ["rounds=2"])
    r1 = open_run(cfg)
    viewer = HumanLabel("How do I make tea?", "Boil water, add the leaves.", "No.", source=viewer_source("ann"))
    imported = HumanLabel("How do I make tea?", "Warm the pot first.", "Use cold water.", source=import_source("x", 1))
    thumbs = Feedback("How do I make tea?", "Boil water.", THUMBS, 1, 2, source=viewer_source("ann"))
    r1.store.add_human_labels([viewer, imported])
    r1.store.add_feedback([thumbs])
    files = sorted(h.key for h in r1.store.human_labels() if h.source.startswith(FILE))
    r1.store.close()
    r1.lock.release()

    ctx = RoundContext(2, (r1.layout,), cfg.iteration, "h")
    r2 = open_run(round_config(cfg, r1.layout.policy), str(r1.layout.round_dir(2)), ctx)
    try:
        got = r2.all_human_labels()
        assert sorted(h.key for h in got if h.source.startswith(FILE)) == files  # once each
        assert {viewer.key, imported.key} <= {h.key for h in got}
        assert [f.completion for f in r2.all_feedback()] == ["Boil water."]
        before = r2.input_hash("mix")
        later = Store(r1.layout.store)
        later.add_human_labels([HumanLabel("How do I boil pasta?", "Boil water, add pasta.", "No.",
                                           source=viewer_source("ann"))])
        later.close()
        assert r2.input_hash("mix") != before  # a new verdict in round 1 re-runs round 2's mix
    finally:
        r2.store.close()
        r2.lock.release()


def test_a_later_rounds_report_names_its_reference_policy_and_shows_its_figures_against_sft():
    """Round k >= 2's eval compares with its initial policy (round k-1's), so its report.md must not call that
    policy the SFT policy; its figures against the SFT policy (report.json policy.vs_sft) are shown too."""
    from rlaif.report import render_markdown

    pol = {"algorithm": "dpo", "eval_prompts": 4, "samples_per_prompt": 1,
           "harmless_rate": {"sft": 0.4, "sft_ci95": [0.3, 0.5], "trained": 0.5, "trained_ci95": [0.4, 0.6], "n": 4},
           "judge_win_rate_vs_ref": {"rate": 0.55, "ci95": [0.4, 0.7], "n": 4, "ties": 0, "unscored": 0,
                                     "method": "pointwise"},
           "reward_before": 0.1, "reward_after": 0.2, "kl": 0.3}
    base = {"name": "t", "config_hash": "c", "constitution_hash": "h", "_policy_detail": {}}
    one = render_markdown(None, base | {"round": 1, "policy": pol}, [])
    assert "| SFT policy | DPO policy |" in one and "judge win rate vs SFT" in one and "KL to SFT" in one
    vs = {"judge_win_rate": {"rate": 0.8, "ci95": [0.7, 0.9]}, "kl": 2.5, "rm_reward_round_1": 1.4}
    three = render_markdown(None, base | {"round": 3, "policy": pol | {"vs_sft": vs}}, [])
    assert "| SFT policy |" not in three and "| round 2 policy | DPO policy |" in three
    assert "judge win rate vs round 2 policy" in three and "KL to round 2 policy" in three
    assert "vs SFT" not in three.replace("against the SFT policy", "")
    assert "80.0% [70.0, 90.0]" in three and "2.500" in three and "1.400" in three  # the figures against SFT


def test_round_k_pays_no_judge_call_an_earlier_round_paid(tiny_project, scripted_backend):
    """Each round has its own store and call cache, but some calls recur (every human label judged for the
    agreement figures and the gate; pointwise scores of the SFT policy's and the previous round's held-out
    samples): round k reads the earlier rounds' caches too and makes only the calls none of them made."""
    from rlaif.judges import make_judge
    from rlaif.judges.core import Item, score_items
    from rlaif.pipeline import open_run
    from rlaif.rounds import RoundContext, round_config

    cfg = load_config(tiny_project / "pipeline.yaml", ["rounds=2"])

    def items(*texts):
        return [Item("How do I make tea?", "helpful", t) for t in texts]

    r1 = open_run(cfg)
    st = score_items(make_judge(cfg.judge, "cpu", 0, r1.store), r1.inputs.constitution, items("Boil water.", "No."))
    assert st.calls == 4 and st.cache_hits == 0  # 2 responses x 2 principles (helpful, concise)
    r1.store.close()
    r1.lock.release()
    ctx = RoundContext(2, (r1.layout,), cfg.iteration, "h")
    r2 = open_run(round_config(cfg, r1.layout.policy), str(r1.layout.round_dir(2)), ctx)
    try:
        judge = make_judge(cfg.judge, "cpu", 0, r2.store)
        got = items("Boil water.", "No.", "Steep the leaves.")
        st = score_items(judge, r2.inputs.constitution, got)
        assert st.cache_hits == 4 and st.calls == 2 and [r for _, r in scripted_backend[-1].calls] == ["Steep the leaves."] * 2
        assert all(it.verdicts for it in got)
    finally:
        r2.store.close()
        r2.lock.release()


@pytest.mark.parametrize("where", ["rounds", "rounds/2"], ids=["rounds-is-a-file", "round-2-is-a-file"])
def test_a_file_where_a_round_directory_goes_is_exit_2_before_round_1(where, tiny_project, capsys):
    from rlaif.cli import main

    run = tiny_project / "run"
    (run / where).parent.mkdir(parents=True, exist_ok=True)
    (run / where).write_text("not a directory")
    assert main(["run", str(tiny_project / "pipeline.yaml"), "--set", "rounds=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(run / where) in err and "not a directory" in err, err
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == sorted(
        {where, *(["rounds"] if where == "rounds/2" else [])})  # round 1 did not start


@pytest.mark.parametrize("reward_model", ["first_round", "every_round"])
def test_a_reused_round_1_reward_model_is_not_measured_on_prompts_it_trained_on(tmp_path, tiny_project, reward_model):
    """Round k's held-out prompts include those its own labels drew (a reviewer's verdicts in round k's directory):
    with ``iteration.reward_model: first_round`` the reward model is round 1's, which trained on their AI pairs, and the
    report measured it on them."""
    from datasets import load_from_disk

    from rlaif.config import MixConfig
    from rlaif.mixing import mix, save_pairs
    from rlaif.records import HumanLabel
    from rlaif.rounds import reward_model_eval_pairs

    def ai(i, r):
        return {"prompt": f"q{i}", "chosen": f"a{i}-{r}", "rejected": f"b{i}-{r}", "confidence": 0.9,
                "prompt_id": f"q{i}", "details": {"gap": 1.0}}

    cfg = load_config(tiny_project / "pipeline.yaml")
    first = [HumanLabel(f"q{i}", "g", "b", source="viewer:ann") for i in range(0, 100, 2)]  # round 1's labels
    later = [HumanLabel(f"q{i}", "g", "b", source="viewer:bob") for i in range(1, 100, 2)]  # given in round 2
    for k, human in ((1, first), (2, first + later)):
        splits, _ = mix([ai(i, k) for i in range(100)], human, MixConfig(human_eval_fraction=0.3), 0)
        save_pairs(splits, RunLayout(tmp_path / f"r{k}"))
    run = SimpleNamespace(round=rounds_ctx(tmp_path, reward_model), cfg=cfg, layout=RunLayout(tmp_path / "r2"))
    ev = load_from_disk(str(run.layout.pairs))["eval"]
    trained_1 = set(load_from_disk(str(tmp_path / "r1" / "pairs"))["train"]["prompt"])
    kept, left_out = reward_model_eval_pairs(run, ev)
    assert set(ev["prompt"]) & trained_1  # round 2 holds out prompts round 1 trained on
    if reward_model == "first_round":
        assert left_out > 0 and len(kept) == len(ev) - left_out and not set(kept["prompt"]) & trained_1
        assert len(kept) > 5
    else:  # round 2's own reward model trained on round 2's split: measured on all of it
        assert left_out is None and len(kept) == len(ev)
        return
    import shutil

    from rlaif.errors import RlaifError

    shutil.rmtree(tmp_path / "r1" / "pairs")  # round 1's pairs gone: one line naming them, not a traceback
    with pytest.raises(RlaifError, match="round 1's mixed pairs are missing"):
        reward_model_eval_pairs(run, ev)


def rounds_ctx(tmp_path, reward_model):
    from rlaif.rounds import RoundContext

    return RoundContext(2, (RunLayout(tmp_path / "r1"),), IterationConfig(reward_model=reward_model))


def test_a_round_directory_s_context_is_read_back_from_its_manifest(tmp_path):
    """`rlaif constitution diff --run` reads a round k >= 2 directory's human labels as the round did (with the
    earlier rounds'): the round context comes back from the manifest's provenance (the source hash excepted)."""
    import json

    from rlaif.config import IterationConfig
    from rlaif.layout import RunLayout
    from rlaif.rounds import RoundContext, provenance, recorded_context

    first = RunLayout(tmp_path / "r1")
    ctx = RoundContext(3, (first, RunLayout(first.round_dir(2))), IterationConfig(reference="sft"), "h")
    manifest = json.loads(json.dumps(provenance(type("R", (), {"round": ctx})())))  # as written to manifest.json
    assert recorded_context(manifest) == RoundContext(ctx.k, ctx.earlier, ctx.settings)
    assert recorded_context(json.loads(json.dumps(provenance(type("R", (), {"round": None})())))) is None
