"""`rlaif constitution diff`: hand-made constitution pairs, and a run's re-judge calls and label changes."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import CONSTITUTION

from rlaif.cli import main
from rlaif.constitution import Constitution
from rlaif.constitution_diff import diff_constitutions


def _c(edit=None) -> dict:
    c = copy.deepcopy(CONSTITUTION)
    if edit:
        edit(c)
    return c


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _p(c: dict, pid: str) -> dict:
    return next(p for p in c["principles"] if p["id"] == pid)


EDITS = {
    "text": (lambda c: _p(c, "helpful").update(text="Prefer the response that is correct."), "helpful", ("text",)),
    "weight": (lambda c: _p(c, "concise").update(weight=2.5), "concise", ("weight",)),
    "examples": (lambda c: _p(c, "helpful")["examples"]["worse"].append("No."), "helpful", ("examples",)),
    "checks": (lambda c: _p(c, "concise")["checks"][0].update(limit=30), "concise", ("checks",)),
    "applies_to": (lambda c: _p(c, "refuse-harm").update(applies_to=None), "refuse-harm", ("applies_to",)),
    "text-and-weight": (lambda c: _p(c, "helpful").update(text="Be clear.", weight=3.0), "helpful",
                        ("text", "weight")),
}


@pytest.mark.parametrize("case", sorted(EDITS), ids=str)
def test_changed_fields_named(case):
    edit, pid, fields = EDITS[case]
    old, new = Constitution.model_validate(_c()), Constitution.model_validate(_c(edit))
    d = diff_constitutions(old, new)
    changed = d.of("changed")
    assert [c.id for c in changed] == [pid] and changed[0].fields == fields
    assert changed[0].old_hash != changed[0].new_hash and changed[0].rejudged
    assert {c.id for c in d.of("unchanged")} == {p["id"] for p in CONSTITUTION["principles"]} - {pid}
    assert not d.identical


def test_added_removed_renamed_and_identical():
    def edit(c):
        c["principles"][0]["id"] = "no-harm"  # same content, new id: renamed
        c["principles"].pop(2)  # concise removed
        c["principles"].append({"id": "honest", "text": "Prefer the honest response."})
    d = diff_constitutions(Constitution.model_validate(_c()), Constitution.model_validate(_c(edit)))
    assert [(c.id, c.renamed_from) for c in d.of("renamed")] == [("no-harm", "refuse-harm")]
    assert [c.id for c in d.of("removed")] == ["concise"] and not d.of("removed")[0].rejudged
    assert [c.id for c in d.of("added")] == ["honest"]
    assert [c.id for c in d.of("unchanged")] == ["helpful"]
    same = diff_constitutions(Constitution.model_validate(_c()), Constitution.model_validate(_c()))
    assert same.identical and all(c.status == "unchanged" for c in same.principles)


def test_reorder_is_named(tmp_path, capsys):
    """Reordered principles change the hash (and weighted draws); the diff said only 'unchanged'."""
    old = _write(tmp_path / "old.yaml", _c())
    new = _write(tmp_path / "new.yaml", _c(lambda c: c["principles"].reverse()))
    assert main(["constitution", "diff", str(old), str(new), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ids = [p["id"] for p in CONSTITUTION["principles"]]
    assert not out["identical"] and out["header"] == {"order": [ids, ids[::-1]]}
    assert out["counts"]["unchanged"] == len(ids)
    assert main(["constitution", "diff", str(old), str(new)]) == 0
    assert f"order: {', '.join(ids)} → {', '.join(ids[::-1])}" in capsys.readouterr().out
    # A removal or addition alone is not a reorder.
    d = diff_constitutions(Constitution.model_validate(_c()),
                           Constitution.model_validate(_c(lambda c: c["principles"].pop(1))))
    assert "order" not in d.header


def test_cli_json_and_rich(tmp_path, capsys):
    old = _write(tmp_path / "old.yaml", _c())
    new = _write(tmp_path / "new.yaml", _c(lambda c: (_p(c, "concise").update(weight=2.5), c.update(version="2"))))
    assert main(["constitution", "diff", str(old), str(new), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"] == {"added": 0, "removed": 0, "changed": 1, "renamed": 0, "unchanged": 2}
    assert out["header"] == {"version": ["1", "2"]}
    assert out["principles"][2]["old"] == {"weight": 0.5} and out["principles"][2]["new"] == {"weight": 2.5}
    assert main(["constitution", "diff", str(old), str(new)]) == 0
    text = capsys.readouterr().out
    assert "concise" in text and "changed" in text and "0.5 → 2.5" in text


BAD = {
    "missing-file": (lambda d: [str(d / "nope.yaml"), str(d / "ok.yaml")], "nope.yaml"),
    "bad-yaml": (lambda d: [str(d / "ok.yaml"), str(_w(d / "bad.yaml", "name: [unclosed"))], "bad.yaml"),
    "bad-field": (lambda d: [str(d / "ok.yaml"), str(_w(d / "w.yaml", yaml.safe_dump(_c(
        lambda c: _p(c, "helpful").update(weight=-1)))))], "w.yaml"),
    "run-not-a-dir": (lambda d: [str(d / "ok.yaml"), str(d / "ok.yaml"), "--run", str(d / "ok.yaml")], "ok.yaml"),
    "run-without-store": (lambda d: [str(d / "ok.yaml"), str(d / "ok.yaml"), "--run", str(d)], "store.sqlite"),
}


def _w(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", sorted(BAD), ids=str)
def test_bad_input_exit_2_one_line(case, tmp_path, capsys):
    _write(tmp_path / "ok.yaml", _c())
    make_args, names = BAD[case]
    args = make_args(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["constitution", "diff", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and names in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# ------------------------------------------------------------------ with a run directory
@pytest.fixture(scope="module")
def judged_project(tmp_path_factory):
    """A tiny project whose sft, generate and judge stages ran (scripted judge)."""
    import conftest

    with conftest.scripted_backend_registered():
        proj = conftest.make_tiny_project(tmp_path_factory.mktemp("diff") / "proj")
        for stage in ("sft", "generate", "judge"):
            assert main([stage, str(proj / "pipeline.yaml")]) == 0
        yield proj


def _swap_helpful_examples(c):
    ex = _p(c, "helpful")["examples"]
    ex["better"], ex["worse"] = ex["worse"], ex["better"]


@pytest.mark.slow
def test_run_rejudge_calls_then_label_changes(judged_project, tmp_path, capsys, scripted_backend):
    proj = tmp_path / "proj"
    shutil.copytree(judged_project, proj)
    old = _write(tmp_path / "old.yaml", _c())
    new = _write(tmp_path / "new.yaml", _c(_swap_helpful_examples))
    run = str(proj / "run")

    assert main(["constitution", "diff", str(old), str(new), "--run", run, "--json"]) == 0
    before = json.loads(capsys.readouterr().out)["run"]
    per = before["per_principle"]
    assert per["helpful"]["calls"] > 0 and per["helpful"]["calls"] == per["helpful"]["judged_items"]
    assert per["refuse-harm"]["calls"] == per["concise"]["calls"] == 0  # unchanged: all in the call cache
    assert before["rejudge_calls"] == per["helpful"]["calls"] < before["calls_without_cache"]
    assert not before["labels"]["available"] and "rlaif judge" in before["labels"]["reason"]
    assert before["rejudge_cost_usd"] is None  # a local judge: no prices

    # The re-judge pays exactly the planned calls; then the diff compares the two label sets.
    shutil.copy(new, proj / "constitution.yaml")
    assert main(["judge", str(proj / "pipeline.yaml")]) == 0
    from rlaif.store import Store

    with Store(proj / "run" / "store.sqlite", create=False, readonly=True) as s:
        assert s.stage("judge")["info"]["calls"] == before["rejudge_calls"]
    capsys.readouterr()
    assert main(["constitution", "diff", str(old), str(new), "--run", run, "--json"]) == 0
    after = json.loads(capsys.readouterr().out)["run"]
    lab, per = after["labels"], after["per_principle"]
    assert lab["available"] and after["rejudge_calls"] == 0
    assert lab["flipped"] + lab["appeared"] + lab["disappeared"] > 0
    assert per["helpful"]["flipped"] > 0
    # Unchanged principles score the same candidates the same: none of their verdicts flips.
    assert per["refuse-harm"]["flipped"] == per["concise"]["flipped"] == 0
    assert main(["constitution", "diff", str(old), str(new), "--run", run]) == 0
    out = capsys.readouterr().out
    assert "flipped" in out and "calls not in the run's cache" in out


@pytest.mark.parametrize("backend", ["embedding", "openai"], ids=str)
def test_planned_judge_has_the_real_cache_keys(backend, tmp_path):
    """The plan counts a call as cached exactly when the real judge would find it: same identity and keys."""
    from rlaif.config import JudgeConfig
    from rlaif.constitution import Principle
    from rlaif.judges import BACKENDS, plan_judge
    from rlaif.judges.base import cache_key
    from rlaif.judges.llm import Call

    cfg = JudgeConfig(backend=backend, constitution=str(_write(tmp_path / "c.yaml", _c())),
                      base_url="http://127.0.0.1:9/v1", price_prompt_per_mtok=1.0)
    planned = plan_judge(cfg, seed=3)
    p = Principle(id="x", text="Be kind.")
    if backend == "embedding":
        from rlaif.judges.embedding import EmbeddingJudge

        assert (planned.inner.backend, planned.inner.model, planned.inner.template_hash) == \
            (EmbeddingJudge.backend, "minilm", EmbeddingJudge.template_hash)
        assert cache_key(planned.inner, p, "q", "r") == cache_key(planned, p, "q", "r")
        return
    real = BACKENDS[backend].factory(cfg, "cpu", 3)  # an OpenAI client: nothing is sent
    call = Call([{"role": "user", "content": "hello"}], 1, True)
    assert (planned.backend, planned.model, planned.template_hash) == (real.backend, real.model, real.template_hash)
    assert planned._key(call, p) == real._key(call, p)
    out = planned.run_calls([(call, p)])
    assert out[0].error and planned.report()["calls"] == 1 and planned.completer.cost_usd() > 0


@pytest.mark.slow
def test_run_with_an_llm_judge_plans_the_exact_calls_and_cost(tmp_path, scripted_backend, capsys):
    """Pairwise (both orders) through the fake OpenAI server: the plan sends nothing, predicts the calls the
    re-judge then makes, and prices them."""
    import conftest
    from test_llm_pipeline import llm_args, safe_judge

    from rlaif.testing.fake_openai import FakeOpenAI

    proj = conftest.make_tiny_project(tmp_path / "proj")
    cfg = str(proj / "pipeline.yaml")
    for stage in ("sft", "generate"):
        assert main([stage, cfg]) == 0
    old = _write(tmp_path / "old.yaml", _c())
    new = _write(tmp_path / "new.yaml", _c(lambda c: _p(c, "concise").update(text="Prefer the brief response.")))
    with FakeOpenAI(responder=safe_judge()) as server:
        args = llm_args(server, "--set", "judge.price_prompt_per_mtok=2.0", "--set", "judge.price_completion_per_mtok=8.0")
        assert main(["judge", cfg, *args]) == 0
        sent = len(server.requests)
        capsys.readouterr()
        assert main(["constitution", "diff", str(old), str(new), "--run", str(proj / "run"), "--json"]) == 0
        plan = json.loads(capsys.readouterr().out)["run"]
        assert len(server.requests) == sent  # the plan sends nothing
        per = plan["per_principle"]
        assert plan["judge"]["method"] == "pairwise" and per["concise"]["calls"] == 2 * per["concise"]["judged_items"]
        assert plan["rejudge_calls"] == per["concise"]["calls"] > 0
        assert per["helpful"]["calls"] == per["refuse-harm"]["calls"] == 0
        assert plan["rejudge_cost_usd"] == pytest.approx(per["concise"]["cost_usd"]) and plan["rejudge_cost_usd"] > 0
        shutil.copy(new, proj / "constitution.yaml")
        assert main(["judge", cfg, *args]) == 0
        assert len(server.requests) - sent == plan["rejudge_calls"]


@pytest.mark.slow
def test_run_with_fitted_weights_counts_the_fit_calls_too(tmp_path, scripted_backend, capsys):
    """judge.weights: fitted also judges the human pairs it fits on: the plan counts those calls as well."""
    import conftest

    proj = conftest.make_tiny_project(tmp_path / "proj")
    cfg = str(proj / "pipeline.yaml")
    sets = ["--set", "judge.weights=fitted", "--set", "judge.fit.min_labels=4"]
    for stage in ("sft", "generate", "judge"):
        assert main([stage, cfg, *sets]) == 0
    old = _write(tmp_path / "old.yaml", _c())
    new = _write(tmp_path / "new.yaml", _c(_swap_helpful_examples))
    capsys.readouterr()
    assert main(["constitution", "diff", str(old), str(new), "--run", str(proj / "run"), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["run"]
    shutil.copy(new, proj / "constitution.yaml")
    assert main(["judge", cfg, *sets]) == 0
    from rlaif.store import Store

    with Store(proj / "run" / "store.sqlite", create=False, readonly=True) as s:
        info = s.stage("judge")["info"]
    assert info["fitted_weights"] and info["calls"] == plan["rejudge_calls"] > 0


@pytest.mark.slow
def test_fitted_rejudge_plans_the_rows_the_judge_stage_fits_on(judged_project, tmp_path, scripted_backend,
                                                               monkeypatch):
    """The tiny project's human labels cover its policy-eval prompts, which the mix holds out (with
    mix.human_eval_fraction 0.1 the random draw alone would not): the judge stage's fit reads that split
    (Run.human_split), and the re-judge plan judges exactly the rows it fits on."""
    from rlaif import fit_weights
    from rlaif.mixing import human_split
    from rlaif.rejudge import _fit_rows, _recorded_run
    from rlaif.viewer.queue import open_run_store

    proj = tmp_path / "proj"
    shutil.copytree(judged_project, proj)
    fitted: list[dict] = []
    real_fit, real_gather, active = fit_weights.fit_for_run, fit_weights.gather_evidence, []

    def fit_for_run(run, judge):
        active.append(True)
        try:
            return real_fit(run, judge)
        finally:
            active.clear()

    def gather_evidence(judge, constitution, rows, *a, **kw):
        if active:
            fitted.extend(rows)
        return real_gather(judge, constitution, rows, *a, **kw)

    monkeypatch.setattr(fit_weights, "fit_for_run", fit_for_run)
    monkeypatch.setattr(fit_weights, "gather_evidence", gather_evidence)
    assert main(["judge", str(proj / "pipeline.yaml"), "--set", "judge.weights=fitted",
                 "--set", "judge.fit.min_labels=4", "--set", "mix.human_eval_fraction=0.1"]) == 0
    monkeypatch.setattr(fit_weights, "gather_evidence", real_gather)
    with open_run_store(proj / "run", readonly=True) as store:
        run, jcfg = _recorded_run(proj / "run", store, str(proj / "constitution.yaml"))
        assert jcfg.weights == "fitted" and fitted
        assert _fit_rows(run) == fitted
        # the project does exercise the policy-eval prompts: the split without them gives other rows
        train, held = human_split(store.human_labels(), store.feedback(), run.cfg.mix, run.cfg.seed)
        assert fit_weights.orient(train)[0] + fit_weights.orient(held)[0] != fitted


BAD_MANIFEST = {
    "not-json": (lambda cfg: "{", "unreadable run manifest"),
    "no-config": (lambda cfg: {}, "unreadable run manifest"),
    "bad-config": (lambda cfg: {"config": cfg | {"judge": cfg["judge"] | {"batch_size": -1}}}, "config.judge.batch_size"),
    "unknown-key-in-a-section-the-plan-reads": (lambda cfg: {"config": cfg | {"mix": cfg["mix"] | {"gone": 1}}},
                                                "config.mix.gone"),
    "bad-field-the-plan-reads": (lambda cfg: {"config": cfg | {"eval": cfg["eval"] | {"max_prompts": 0}}},
                                 "config.eval.max_prompts"),
    "deep-json": (lambda cfg: '{"config": ' + "[" * 5000 + "]" * 5000 + "}", "nested deeper"),
    "round-2-without-round-1": (lambda cfg: {"config": cfg, "round": 2}, "unreadable round"),
    "bad-iteration": (lambda cfg: {"config": cfg, "round": 2, "round_1_dir": "/x", "iteration": {"bogus": 1}},
                      "unreadable round"),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFEST), ids=str)
def test_bad_run_manifest_is_one_line_exit_2(case, tiny_project, tmp_path, capsys):
    from rlaif.config import load_config
    from rlaif.store import Store

    run = tmp_path / "run"
    run.mkdir()
    Store(run / "store.sqlite").close()
    make, msg = BAD_MANIFEST[case]
    got = make(load_config(tiny_project / "pipeline.yaml", []).model_dump(mode="json"))
    (run / "manifest.json").write_text(got if isinstance(got, str) else json.dumps(got))
    old = _write(tmp_path / "old.yaml", _c())
    assert main(["constitution", "diff", str(old), str(old), "--run", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "manifest.json" in err and msg in err and "re-run a stage" in err, err


OLDER_MANIFEST = {  # what an older (or other) rlaif recorded in sections the plan does not read
    "removed-key-in-policy-training": lambda cfg: cfg | {"policy_training": cfg["policy_training"] | {"gone": 1}},
    "removed-key-in-policy": lambda cfg: cfg | {"policy": cfg["policy"] | {"old_knob": "x"}},
    "removed-section": lambda cfg: cfg | {"distill": {"enabled": False}},
    "removed-key-in-eval": lambda cfg: cfg | {"eval": cfg["eval"] | {"old_metric": True}},
    "removed-key-in-data": lambda cfg: cfg | {"data": cfg["data"] | {"shuffle": True}},
    "section-before-it-existed": lambda cfg: {k: v for k, v in cfg.items() if k not in ("critique", "iteration")},
}


@pytest.mark.parametrize("case", sorted(OLDER_MANIFEST), ids=str)
def test_a_manifest_with_keys_the_plan_does_not_read_still_plans(case, tiny_project, tmp_path):
    """`constitution diff --run` validated only the judge and mix sections of the recorded config; since it reads
    the run through Run it validated the whole config, so a run recorded by an rlaif whose config had a key this
    one no longer takes (in policy, policy_training...) was refused (exit 2) though the plan never reads it."""
    from rlaif.config import load_config
    from rlaif.rejudge import _recorded_run
    from rlaif.store import Store

    run = tmp_path / "run"
    run.mkdir()
    cfg = load_config(tiny_project / "pipeline.yaml", []).model_dump(mode="json")
    (run / "manifest.json").write_text(json.dumps({"config": OLDER_MANIFEST[case](copy.deepcopy(cfg))}))
    with Store(run / "store.sqlite") as store:
        got, jcfg = _recorded_run(run, store, "new.yaml")
    assert got.cfg.model_dump(mode="json")["mix"] == cfg["mix"] and got.cfg.seed == cfg["seed"]
    assert (got.cfg.eval.prompts, got.cfg.eval.max_prompts) == (cfg["eval"]["prompts"], cfg["eval"]["max_prompts"])
    assert got.cfg.data.system_prompt == cfg["data"]["system_prompt"]
    assert jcfg.model_dump(mode="json") == cfg["judge"] | {"constitution": "new.yaml"}


def test_label_changes_count_pairs_and_principle_verdicts(tmp_path):
    """Hand-made label sets: a pair flipped (either order counts as the same pair), one appeared, one gone;
    per principle, verdicts flipped / appeared / gone on the pairs in both sets; the newest set is used."""
    from rlaif.records import Candidate, Prompt
    from rlaif.rejudge import label_changes
    from rlaif.store import Store

    def d(c_hash, **ps):  # principle id -> P(chosen better) or None
        return {"method": "pointwise", "constitution_hash": c_hash,
                "principles": {k: {"p_chosen": v, "status": "scored" if v is not None else "unscored"}
                               for k, v in ps.items()}}

    with Store(tmp_path / "s.sqlite") as s:
        s.put_prompts([Prompt(p, f"prompt {p}") for p in ("p1", "p2", "p3", "p4")])
        s.add_candidates([Candidate(f"{p}{k}", p, i, f"text {p}{k}", "pol") for p in ("p1", "p2", "p3", "p4")
                          for i, k in enumerate("ab")], "gen")
        s.put_ai_pairs("stale", [("p1", "p1b", "p1a", 0.9, "scored", d("OLD"))])
        s.put_judge_set("stale", "OLD", "gen")
        s.put_ai_pairs("j_old", [
            ("p1", "p1a", "p1b", 0.8, "scored", d("OLD", x=0.8, y=0.6)),   # flips: x flips, y stays, z appears
            ("p2", "p2a", "p2b", 0.7, "scored", d("OLD", x=0.7, y=0.4)),   # same pair: y gone
            ("p3", "p3a", "p3b", 0.7, "scored", d("OLD", x=0.7)),          # disappears
            ("p4", "p4a", "p4b", 0.5, "unscored", d("OLD")),               # unscored: not a label
        ])
        s.put_judge_set("j_old", "OLD", "gen")
        s.put_ai_pairs("j_new", [
            ("p1", "p1b", "p1a", 0.8, "scored", d("NEW", x=0.9, y=0.3, z=0.6)),
            ("p2", "p2a", "p2b", 0.7, "scored", d("NEW", x=0.6, y=None)),
            ("p4", "p4a", "p4b", 0.6, "scored", d("NEW", x=0.6)),          # appears
        ])
        s.put_judge_set("j_new", "NEW", "gen")
        out = label_changes(s, "OLD", "NEW", "gen")
        assert (out["old_judge_hash"], out["new_judge_hash"]) == ("j_old", "j_new")
        assert (out["pairs_old"], out["pairs_new"], out["pairs_in_both"]) == (3, 3, 2)
        assert (out["flipped"], out["appeared"], out["disappeared"]) == (1, 1, 1)
        per = out["per_principle"]
        assert per["x"] == {"flipped": 1, "appeared": 0, "disappeared": 0, "flipped_with_pair": 1}
        assert per["y"] == {"flipped": 0, "appeared": 0, "disappeared": 1, "flipped_with_pair": 0}
        assert per["z"] == {"flipped": 0, "appeared": 1, "disappeared": 0, "flipped_with_pair": 0}
        assert not label_changes(s, "OLD", "NEVER", "gen")["available"]


def test_markup_in_the_files_is_shown_as_written(tmp_path, capsys):
    """rich read '[/]' in a principle's text as markup: `show` and `diff` raised MarkupError."""
    def edit(c):
        c["description"] = "rules [/] v1"
        _p(c, "helpful").update(text="Prefer [bold]clear[/bold] answers [/red].", tags=["[/x]"])
    old = _write(tmp_path / "old.yaml", _c(edit))
    new = _write(tmp_path / "new.yaml", _c(lambda c: (edit(c), _p(c, "helpful").update(text="Prefer [/] answers."))))
    assert main(["constitution", "show", str(old)]) == 0
    assert "Prefer [bold]clear[/bold] answers [/red]." in capsys.readouterr().out
    assert main(["constitution", "diff", str(old), str(new)]) == 0
    assert "helpful.text: Prefer [bold]clear[/bold] answers [/red]. → Prefer [/] answers." in capsys.readouterr().out


def test_renames_found_in_linear_work(monkeypatch):
    """Every added principle was compared with every removed one (15 s for 2,000 replaced principles);
    renames are now looked up by content: the fields of each principle are read a bounded number of times."""
    import rlaif.constitution_diff as cd

    n = 300
    old = Constitution.model_validate({"name": "c", "principles": [{"id": f"p{i}", "text": f"Rule {i}."}
                                                                   for i in range(n)] + [{"id": "same", "text": "X."},
                                                                                         {"id": "same2", "text": "X."}]})
    new = Constitution.model_validate({"name": "c", "principles": [{"id": f"q{i}", "text": f"New rule {i}."}
                                                                   for i in range(n)] + [{"id": "twin", "text": "X."},
                                                                                         {"id": "twin2", "text": "X."}]})
    reads = []
    real = cd._fields
    monkeypatch.setattr(cd, "_fields", lambda p: reads.append(p.id) or real(p))
    d = cd.diff_constitutions(old, new)
    assert len(reads) <= 3 * (n + 2)
    assert [(c.id, c.renamed_from) for c in d.of("renamed")] == [("twin", "same"), ("twin2", "same2")]
    assert len(d.of("added")) == len(d.of("removed")) == n


class _Sets:
    """A store holding one judged AI pair set per constitution hash."""

    def __init__(self, old, new):
        self.sets = {"jo": old, "jn": new}

    def judge_sets(self, constitution_hash, gen_hash):
        return ["jo" if constitution_hash == "o" else "jn"]

    def ai_pairs(self, judge_hash):
        return self.sets[judge_hash]


def _pair(i, chosen, rejected, principles):
    return {"prompt_id": f"q{i}", "chosen_id": chosen, "rejected_id": rejected, "status": "scored",
            "details": {"method": "pointwise", "principles": {p: {"p_chosen": v} for p, v in principles.items()}}}


def test_label_changes_per_principle_parse_each_pair_once(monkeypatch):
    """Each pair's details were parsed once per principle (quadratic in principles: 12 s for 20,000 pairs of
    6 principles, 148 s with 30); once per pair now, with the same counts."""
    from rlaif.judges import details
    from rlaif.rejudge import label_changes

    same = [_pair(i, "x", "y", {"p1": 0.9, "p2": 0.2, "p3": 0.6}) for i in range(1, 50)]
    old = [_pair(0, "a", "b", {"p1": 0.8, "p2": 0.3, "p3": 0.5}), *same]
    new = [_pair(0, "b", "a", {"p1": 0.7, "p3": 0.6, "p4": 0.9}), *same]
    parsed = []
    real = details.PairDetails.from_dict
    monkeypatch.setattr(details.PairDetails, "from_dict", classmethod(lambda cls, d: parsed.append(1) or real(d)))
    r = label_changes(_Sets(old, new), "o", "n", "g")
    assert len(parsed) <= 2 * 50
    assert r["flipped"] == 1 and r["pairs_in_both"] == 50
    # Toward a (OLD's choice): p1 +1 -> -1 flipped; p2 gone; p3 tie -> -1 (a tie is no flip); p4 appeared.
    assert r["per_principle"]["p1"] == {"flipped": 1, "appeared": 0, "disappeared": 0, "flipped_with_pair": 1}
    assert r["per_principle"]["p2"]["disappeared"] == 1 and r["per_principle"]["p4"]["appeared"] == 1
    assert r["per_principle"]["p3"] == {"flipped": 0, "appeared": 0, "disappeared": 0, "flipped_with_pair": 0}
